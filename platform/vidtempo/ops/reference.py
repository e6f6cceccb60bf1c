"""tin_shift in plain PyTorch: the specification, the CPU fallback and the oracle of the tests.

    out[n, t, c, p] = x[n, t - s, c, p]  if 0 <= t - s < T, else 0,   s = shift[n, c // (C // G)]

x is [N, T, C, HW], shift is [N, G] integers. Positive shifts move content later in time. The
backward is the true adjoint, grad_x[n, u, c] = grad_out[n, u + s, c] (the same map with -s);
autograd derives it here through `gather`. The shift gets no gradient.
"""

from __future__ import annotations

import torch


def tin_shift_reference(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    n, t, c, hw = x.shape
    g = shift.shape[1]
    s = shift.to(device=x.device, dtype=torch.long).clamp(-t, t)  # |s| >= T: all zeros
    s = s.repeat_interleave(c // g, dim=1)  # (N, C): the shift of each channel's group
    src = torch.arange(t, device=x.device).view(1, t, 1) - s.view(n, 1, c)  # (N, T, C)
    valid = (src >= 0) & (src < t)
    index = src.clamp(0, t - 1).unsqueeze(-1).expand(n, t, c, hw)
    out = torch.gather(x, 1, index)  # (N, T, C, HW): out[n, t, c] = x[n, src, c]
    return torch.where(valid.unsqueeze(-1), out, torch.zeros((), dtype=x.dtype, device=x.device))


def tin_shift_backward_reference(grad_out: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The adjoint: shifting back by -s."""
    return tin_shift_reference(grad_out, -shift.to(torch.long))
