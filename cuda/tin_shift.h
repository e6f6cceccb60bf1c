// tin_shift: shift channel groups of a [N, T, C, HW] tensor along time by integer amounts.
//
//   out[n, t, c, p] = in[n, t - s, c, p]  if 0 <= t - s < T, else 0,   s = shift[n, c / (C / G)]
//
// The backward of this linear map is the same map with -s (its true adjoint):
//   grad_in[n, u, c, p] = grad_out[n, u + s, c, p].
// So every kernel takes a `sign`: +1 for the forward op, -1 for vidtempo::tin_shift_backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace vidtempo {

// Validates the arguments of either op (rank, dtypes, devices, N and G) with messages that say
// what to do; raises ValueError / TypeError in Python through TORCH_CHECK_VALUE / _TYPE.
void check_tin_shift_args(const at::Tensor& input, const at::Tensor& shift, const char* op);

// Shifts larger than T in magnitude behave like +-T (all zeros); clamping keeps t - s in range
// of int64 whatever the caller passes.
inline int64_t clamp_shift(int64_t s, int64_t T) { return s < -T ? -T : (s > T ? T : s); }

}  // namespace vidtempo
