// CPU kernel: each output row out[n, t, c, :] is a copy of one input row or zeros.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "tin_shift.h"

namespace vidtempo {
namespace {

template <typename scalar_t>
void shift_rows(const scalar_t* in, const int64_t* shift, scalar_t* out, int64_t N, int64_t T,
                int64_t C, int64_t HW, int64_t G) {
  const int64_t group_size = C / G;
  const size_t row_bytes = static_cast<size_t>(HW) * sizeof(scalar_t);
  // Parallel over the N*C (sample, channel) pairs. Inside a chunk the loops run t-major so that
  // consecutive rows of one time step are read and written in memory order.
  constexpr int64_t kGrainElements = 32768;  // ATen's usual grain: ~32k elements per task
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, T * HW));
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end;) {
      const int64_t n = idx / C;
      const int64_t c0 = idx % C;
      const int64_t c1 = std::min<int64_t>(C, c0 + (end - idx));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t src = t - shift[n * G + c / group_size];
          scalar_t* dst = out + ((n * T + t) * C + c) * HW;
          if (src >= 0 && src < T) {
            std::memcpy(dst, in + ((n * T + src) * C + c) * HW, row_bytes);
          } else {
            std::memset(dst, 0, row_bytes);  // all-zero bits are +0.0 in every float format
          }
        }
      }
      idx += c1 - c0;
    }
  });
}

at::Tensor shift_cpu(const at::Tensor& input, const at::Tensor& shift, int64_t sign,
                     const char* op) {
  check_tin_shift_args(input, shift, op);
  const at::Tensor x = input.contiguous();
  const int64_t N = x.size(0), T = x.size(1), C = x.size(2), HW = x.size(3), G = shift.size(1);
  // [N, G] shifts as int64 on the host, clamped to [-T, T] and signed for the adjoint.
  const at::Tensor s64 = shift.to(at::kLong).contiguous();
  std::vector<int64_t> s(s64.data_ptr<int64_t>(), s64.data_ptr<int64_t>() + N * G);
  for (auto& v : s) v = sign * clamp_shift(v, T);
  at::Tensor out = at::empty_like(x);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "tin_shift_cpu", [&] {
    shift_rows<scalar_t>(x.const_data_ptr<scalar_t>(), s.data(), out.mutable_data_ptr<scalar_t>(),
                         N, T, C, HW, G);
  });
  return out;
}

at::Tensor tin_shift_cpu(const at::Tensor& input, const at::Tensor& shift) {
  return shift_cpu(input, shift, +1, "tin_shift");
}

at::Tensor tin_shift_backward_cpu(const at::Tensor& grad_output, const at::Tensor& shift) {
  return shift_cpu(grad_output, shift, -1, "tin_shift_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(vidtempo, CPU, m) {
  m.impl("tin_shift", &tin_shift_cpu);
  m.impl("tin_shift_backward", &tin_shift_backward_cpu);
}

}  // namespace vidtempo
