// tin_sample's autograd: one C++ node whose backward is tin_sample_backward.
//
// Registered from Python (torch.library.register_autograd), the node cost ~70 us a call in
// its forward wrapper and as much again in its backward (`torch.profiler` of the demo's TIN
// step: ~1.1 ms of ~37 ms for the 8 blocks), more than the kernel itself at the demo's sizes.
// Here it is a torch::autograd::Function at the Autograd key, as torchvision registers its ops.
// The backward has no derivative of its own (no double backward), as before. Fake-tensor
// kernels of both ops stay in Python (vidtempo/ops/native.py).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace vidtempo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor sample(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("vidtempo::tin_sample", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(input, offset, weight);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_backward(const at::Tensor& grad,
                                                               const at::Tensor& input,
                                                               const at::Tensor& offset,
                                                               const at::Tensor& weight) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("vidtempo::tin_sample_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad, input, offset, weight);
}

class TinSample : public torch::autograd::Function<TinSample> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& offset,
                            const at::Tensor& weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({input, offset, weight});
    return sample(input, offset, weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_input, grad_offset, grad_weight] =
        sample_backward(grads[0], saved[0], saved[1], saved[2]);
    return {grad_input, grad_offset, grad_weight};
  }
};

at::Tensor tin_sample_autograd(const at::Tensor& input, const at::Tensor& offset,
                               const at::Tensor& weight) {
  return TinSample::apply(input, offset, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(vidtempo, Autograd, m) { m.impl("tin_sample", &tin_sample_autograd); }

}  // namespace vidtempo
