// tin_sample: TIN's linear sampler in one CPU kernel, forward and backward.
//
//   out[n, t, c, p] = w[n, t, g] * ((1 - l) * in[n, t - k, c, p] + l * in[n, t - k - 1, c, p])
//   k = floor(offset[n, g]), l = offset[n, g] - k, g = c / (C / G), in[n, u, ...] = 0 outside [0, T)
//
// It is the composite of vidtempo.models.tin.linear_sampler (two integer tin_shifts, their linear
// interpolation and the per-frame gate) as one call: at the demo's sizes (a few thousand values
// per block) the composite's dozen operator calls and their autograd nodes cost more than its
// arithmetic. The gradients are those of the composite with k held constant (it is a floor):
//   d in[n, t-k]   += w (1 - l) d out        d in[n, t-k-1] += w l d out
//   d w[n, t, g]    = sum_{c in g, p} d out * ((1 - l) in[t-k] + l in[t-k-1])
//   d offset[n, g]  = sum_{t, c in g, p} d out * w * (in[t-k-1] - in[t-k])
// Sums are accumulated in double. Samples are independent: the kernel is parallel over n.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "tin_shift.h"

namespace vidtempo {
namespace {

struct Shape {
  int64_t N, T, C, HW, G;
};

Shape check_sample_args(const at::Tensor& input, const at::Tensor& offset,
                        const at::Tensor& weight, const char* op) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-D [N, T, C, HW], got shape ",
                    input.sizes());
  TORCH_CHECK_VALUE(offset.dim() == 2, op, ": offset must be 2-D [N, G], got shape ",
                    offset.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 3, op, ": weight must be 3-D [N, T, G], got shape ",
                    weight.sizes());
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
                   ": input must be float32 or float64 on the CPU, got ", input.scalar_type());
  TORCH_CHECK_TYPE(offset.scalar_type() == input.scalar_type() &&
                       weight.scalar_type() == input.scalar_type(),
                   op, ": offset and weight must have the input's dtype ", input.scalar_type(),
                   ", got ", offset.scalar_type(), " and ", weight.scalar_type());
  const Shape s{input.size(0), input.size(1), input.size(2), input.size(3), offset.size(1)};
  TORCH_CHECK_VALUE(offset.size(0) == s.N && weight.size(0) == s.N && weight.size(1) == s.T &&
                        weight.size(2) == s.G,
                    op, ": offset must be [N, G] and weight [N, T, G] for input [N, T, C, HW] = ",
                    input.sizes(), ", got ", offset.sizes(), " and ", weight.sizes());
  TORCH_CHECK_VALUE(s.G > 0 && s.C % s.G == 0, op, ": the channel count C = ", s.C,
                    " must be a positive multiple of the number of groups G = ", s.G);
  return s;
}

// floor(offset) as an integer shift, clamped like tin_shift's (|k| > T + 1 reads only zeros)
inline int64_t floor_shift(double off, int64_t T) {
  const double k = std::floor(off);
  return k < -(T + 1) ? -(T + 1) : (k > T + 1 ? T + 1 : static_cast<int64_t>(k));
}

// What frame t of sample n, group g reads: rows u0 = t - k and u1 = t - k - 1 (when inside
// the clip) with the factors a = w (1 - l) and b = w l
template <typename scalar_t>
struct Taps {
  int64_t u0, u1;
  bool in0, in1;
  double w, l;
  scalar_t a, b;
};

template <typename scalar_t>
inline Taps<scalar_t> taps(const scalar_t* offset, const scalar_t* weight, int64_t n, int64_t g,
                           int64_t t, const Shape& s) {
  const double off = offset[n * s.G + g];
  const int64_t k = floor_shift(off, s.T);
  const double l = off - std::floor(off), w = weight[(n * s.T + t) * s.G + g];
  const int64_t u0 = t - k, u1 = t - k - 1;
  return {u0, u1, u0 >= 0 && u0 < s.T, u1 >= 0 && u1 < s.T, w, l,
          static_cast<scalar_t>(w * (1 - l)), static_cast<scalar_t>(w * l)};
}

template <typename scalar_t>
void sample_forward(const scalar_t* in, const scalar_t* offset, const scalar_t* weight,
                    scalar_t* out, const Shape& s) {
  const int64_t gs = s.C / s.G;
  at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t g = 0; g < s.G; ++g) {
        for (int64_t t = 0; t < s.T; ++t) {
          const Taps<scalar_t> r = taps(offset, weight, n, g, t, s);
          for (int64_t c = g * gs; c < (g + 1) * gs; ++c) {
            scalar_t* dst = out + ((n * s.T + t) * s.C + c) * s.HW;
            const scalar_t* x0 = r.in0 ? in + ((n * s.T + r.u0) * s.C + c) * s.HW : nullptr;
            const scalar_t* x1 = r.in1 ? in + ((n * s.T + r.u1) * s.C + c) * s.HW : nullptr;
            for (int64_t p = 0; p < s.HW; ++p) {
              dst[p] = (x0 ? r.a * x0[p] : scalar_t(0)) + (x1 ? r.b * x1[p] : scalar_t(0));
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void sample_backward(const scalar_t* grad, const scalar_t* in, const scalar_t* offset,
                     const scalar_t* weight, scalar_t* grad_in, scalar_t* grad_offset,
                     scalar_t* grad_weight, const Shape& s) {
  const int64_t gs = s.C / s.G;
  at::parallel_for(0, s.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t g = 0; g < s.G; ++g) {
        double d_off = 0;
        for (int64_t t = 0; t < s.T; ++t) {
          const Taps<scalar_t> r = taps(offset, weight, n, g, t, s);
          double sum0 = 0, sum1 = 0;  // sum of d out * in[t-k] and of d out * in[t-k-1]
          for (int64_t c = g * gs; c < (g + 1) * gs; ++c) {
            const scalar_t* go = grad + ((n * s.T + t) * s.C + c) * s.HW;
            if (r.in0) {
              const int64_t row = ((n * s.T + r.u0) * s.C + c) * s.HW;
              for (int64_t p = 0; p < s.HW; ++p) {
                grad_in[row + p] += r.a * go[p];
                sum0 += static_cast<double>(go[p]) * in[row + p];
              }
            }
            if (r.in1) {
              const int64_t row = ((n * s.T + r.u1) * s.C + c) * s.HW;
              for (int64_t p = 0; p < s.HW; ++p) {
                grad_in[row + p] += r.b * go[p];
                sum1 += static_cast<double>(go[p]) * in[row + p];
              }
            }
          }
          grad_weight[(n * s.T + t) * s.G + g] = static_cast<scalar_t>((1 - r.l) * sum0 + r.l * sum1);
          d_off += r.w * (sum1 - sum0);
        }
        grad_offset[n * s.G + g] = static_cast<scalar_t>(d_off);
      }
    }
  });
}

at::Tensor tin_sample_cpu(const at::Tensor& input, const at::Tensor& offset,
                          const at::Tensor& weight) {
  const Shape s = check_sample_args(input, offset, weight, "tin_sample");
  const at::Tensor x = input.contiguous(), o = offset.contiguous(), w = weight.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tin_sample_cpu", [&] {
    sample_forward<scalar_t>(x.const_data_ptr<scalar_t>(), o.const_data_ptr<scalar_t>(),
                             w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tin_sample_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const at::Tensor& weight) {
  const Shape s = check_sample_args(input, offset, weight, "tin_sample_backward");
  TORCH_CHECK_VALUE(grad_output.sizes() == input.sizes(),
                    "tin_sample_backward: grad_output must have the input's shape ",
                    input.sizes(), ", got ", grad_output.sizes());
  const at::Tensor go = grad_output.contiguous().to(input.scalar_type());
  const at::Tensor x = input.contiguous(), o = offset.contiguous(), w = weight.contiguous();
  at::Tensor grad_in = at::zeros_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::empty_like(o, at::MemoryFormat::Contiguous);
  at::Tensor grad_weight = at::empty_like(w, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return {grad_in, grad_offset.zero_(), grad_weight.zero_()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tin_sample_backward_cpu", [&] {
    sample_backward<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              o.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                              grad_in.mutable_data_ptr<scalar_t>(),
                              grad_offset.mutable_data_ptr<scalar_t>(),
                              grad_weight.mutable_data_ptr<scalar_t>(), s);
  });
  return {grad_in, grad_offset, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(vidtempo, CPU, m) {
  m.impl("tin_sample", &tin_sample_cpu);
  m.impl("tin_sample_backward", &tin_sample_backward_cpu);
}

}  // namespace vidtempo
