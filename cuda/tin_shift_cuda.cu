// CUDA kernel: one thread per VEC consecutive output elements along HW. Adjacent threads touch
// adjacent addresses (coalesced), every output element is written exactly once and every input
// element read at most once -- unlike mmcv's launch, which repeats each (n, c, p) T times
// (tin_shift_cuda_kernel.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "tin_shift.h"

namespace vidtempo {
namespace {

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename scalar_t, int VEC>
__global__ void shift_kernel(const scalar_t* __restrict__ in, const int* __restrict__ shift,
                             scalar_t* __restrict__ out, int64_t num_vecs, int T, int64_t C,
                             int64_t HW, int G, int sign) {
  using V = Vec<scalar_t, VEC>;
  const int64_t group_size = C / G;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i * VEC;        // first element of this vector
    const int64_t row = e / HW;       // (n * T + t) * C + c
    const int64_t p = e - row * HW;
    const int64_t c = row % C;
    const int64_t nt = row / C;
    const int t = static_cast<int>(nt % T);
    const int64_t n = nt / T;
    int s = shift[n * G + c / group_size];
    s = s < -T ? -T : (s > T ? T : s);
    const int src = t - sign * s;
    V val;
    if (src >= 0 && src < T) {
      val = *reinterpret_cast<const V*>(in + ((n * T + src) * C + c) * HW + p);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) val.v[k] = scalar_t(0);
    }
    *reinterpret_cast<V*>(out + e) = val;
  }
}

template <typename scalar_t, int VEC>
void launch(const at::Tensor& x, const at::Tensor& s32, at::Tensor& out, int sign) {
  const int64_t T = x.size(1), C = x.size(2), HW = x.size(3), G = s32.size(1);
  const int64_t num_vecs = x.numel() / VEC;
  constexpr int threads = 256;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.get_device()));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 32;  // grid-stride beyond that
  const int64_t blocks = std::min<int64_t>((num_vecs + threads - 1) / threads, max_blocks);
  shift_kernel<scalar_t, VEC><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), s32.const_data_ptr<int>(), out.mutable_data_ptr<scalar_t>(),
      num_vecs, static_cast<int>(T), C, HW, static_cast<int>(G), sign);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor shift_cuda(const at::Tensor& input, const at::Tensor& shift, int sign, const char* op) {
  check_tin_shift_args(input, shift, op);
  TORCH_CHECK_VALUE(input.size(1) < (1 << 30), op, ": T is too large");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  // Shifts are clamped to [-T, T] in int64 before the narrowing to int32 the kernel reads.
  const int64_t T = x.size(1);
  const at::Tensor s32 = shift.to(at::kLong).clamp(-T, T).to(at::kInt).contiguous();
  at::Tensor out = at::empty_like(x);
  if (out.numel() == 0) return out;
  const int64_t HW = x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "tin_shift_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);  // 16-byte loads and stores
    const bool aligned = HW % kVec == 0 &&
                         reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(out.const_data_ptr()) % 16 == 0;
    if (aligned) {
      launch<scalar_t, kVec>(x, s32, out, sign);
    } else {
      launch<scalar_t, 1>(x, s32, out, sign);
    }
  });
  return out;
}

at::Tensor tin_shift_cuda(const at::Tensor& input, const at::Tensor& shift) {
  return shift_cuda(input, shift, +1, "tin_shift");
}

at::Tensor tin_shift_backward_cuda(const at::Tensor& grad_output, const at::Tensor& shift) {
  return shift_cuda(grad_output, shift, -1, "tin_shift_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(vidtempo, CUDA, m) {
  m.impl("tin_shift", &tin_shift_cuda);
  m.impl("tin_shift_backward", &tin_shift_backward_cuda);
}

}  // namespace vidtempo
