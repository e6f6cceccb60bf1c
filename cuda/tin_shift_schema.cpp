// Operator schemas of the vidtempo library and the shared argument checks. The kernels register
// their implementations in tin_shift_cpu.cpp, tin_sample_cpu.cpp and tin_shift_cuda.cu;
// tin_sample's autograd in tin_sample_autograd.cpp; tin_shift's autograd and the fake-tensor
// kernels are registered from Python (vidtempo/ops/native.py).
#include <Python.h>
#include <torch/library.h>

#include "tin_shift.h"

namespace vidtempo {

void check_tin_shift_args(const at::Tensor& input, const at::Tensor& shift, const char* op) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D [N, T, C, HW], got shape ",
                    input.sizes(), "; reshape a [N*T, C, H, W] activation with .view(N, T, C, H*W)");
  TORCH_CHECK_VALUE(shift.dim() == 2, op, ": shift must be 2-D [N, G], got shape ", shift.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op,
                   ": input must be float32, float64, float16 or bfloat16, got ",
                   input.scalar_type());
  TORCH_CHECK_TYPE(at::isIntegralType(shift.scalar_type(), /*includeBool=*/false), op,
                   ": shift must be an integer tensor (int32 or int64), got ", shift.scalar_type(),
                   "; round fractional offsets first, e.g. offset.floor().int()");
  TORCH_CHECK_VALUE(shift.device() == input.device(), op, ": shift is on ", shift.device(),
                    " but input is on ", input.device(), "; move it with shift.to(input.device)");
  TORCH_CHECK_VALUE(shift.size(0) == input.size(0), op, ": shift has ", shift.size(0),
                    " rows but input has N = ", input.size(0), " (one row of G shifts per sample)");
  const int64_t C = input.size(2), G = shift.size(1);
  TORCH_CHECK_VALUE(G > 0 && C % G == 0, op, ": the channel count C = ", C,
                    " must be a positive multiple of the number of groups G = ", G,
                    " (shift.size(1))");
}

}  // namespace vidtempo

TORCH_LIBRARY(vidtempo, m) {
  m.def("tin_shift(Tensor input, Tensor shift) -> Tensor");
  m.def("tin_shift_backward(Tensor grad_output, Tensor shift) -> Tensor");
  // TIN's linear sampler fused (tin_sample_cpu.cpp): a CPU kernel only; CUDA runs the composite
  m.def("tin_sample(Tensor input, Tensor offset, Tensor weight) -> Tensor");
  m.def("tin_sample_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor weight) "
        "-> (Tensor, Tensor, Tensor)");
}

// `import vidtempo._C` loads this library and so runs the registrations above; the module
// itself defines nothing.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
