"""TIN: Temporal Interlacing (MMAction2's resnet_tin.py), built on vidtempo.ops.tin_shift.

At the demo's sizes (8 clips × 8 frames, 1-8² features, 4-32 interlaced channels) a TIN block
costs what its operator calls cost, not their arithmetic; the block is written to make few calls
(`vidtempo bench models`, BENCHMARKS.md "The demo's time"): the two nets share one unfolded view
of the descriptors and each is one matrix product instead of a oneDNN Conv1d, the two integer
shifts of the linear sampler are one tin_shift call over the data seen twice, and the sampler's
scalars (1 - λ, λ, the gates) are folded together before they meet the features; on the CPU
the whole sampler (both shifts, the interpolation, the gates, and its backward) is one native
kernel, vidtempo::tin_sample. The parameters, and what the block computes, are MMAction2's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidtempo.ops import fused_sampler, tin_shift

OFFSET_BIAS = 0.5108  # sigmoid(0.5108) = 0.625, so offsets start at 4 * (0.625 - 0.5) = 0.5
OFFSET_INIT = 0.5


def temporal_columns(s: torch.Tensor) -> torch.Tensor:
    """(B, T, F) frame descriptors → (B, T, F*3): for each frame, every channel's values at
    t-1, t and t+1 (zeros outside the clip) — a kernel-3, padding-1 Conv1d over time is then
    one matrix product with its weight (out, F, 3) read as (out, F*3)."""
    b, t, f = s.shape
    return F.pad(s, (0, 0, 1, 1)).unfold(1, 3, 1).reshape(b, t, f * 3)


def _conv(cols: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """`conv` (kernel 3, padding 1) applied to the descriptors behind `cols`: (B, T, out)."""
    return F.linear(cols, conv.weight.reshape(conv.out_channels, -1), conv.bias)


class OffsetNet(nn.Module):
    """(B, T, F*3) temporal columns → (B, groups) fractional offsets in (-2, 2)."""

    def __init__(self, channels: int, num_segments: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(num_segments, num_segments)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(num_segments, groups)
        nn.init.constant_(self.fc2.bias, OFFSET_BIAS)

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        z = _conv(cols, self.conv).flatten(1)  # (B, T)
        z = self.fc2(self.relu(self.fc1(z)))  # (B, groups)
        return 4 * (torch.sigmoid(z) - 0.5)


class WeightNet(nn.Module):
    """(B, T, F*3) temporal columns → (B, T, groups) weights in (0, 2), starting near 1."""

    def __init__(self, channels: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(channels, groups, 3, padding=1)
        nn.init.constant_(self.conv.bias, 0.0)

    def forward(self, cols: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(_conv(cols, self.conv))


def linear_sampler(data: torch.Tensor, offset: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Shift each of G channel groups of data (B, T, F, H, W) by a fractional offset (B, G),
    interpolating linearly between the floor and floor + 1 integer shifts; `weight` (B, T, G),
    if given, scales each frame's groups after the shift. On the CPU this is one native call
    and one autograd node (vidtempo::tin_sample); elsewhere `composite_linear_sampler`."""
    if not fused_sampler(data):
        return composite_linear_sampler(data, offset, weight)
    b, t, f, h, w = data.shape
    if weight is None:
        weight = offset.new_ones(b, t, offset.shape[1])
    flat = data.reshape(b, t, f, h * w)
    out = torch.ops.vidtempo.tin_sample(flat, offset.to(data.dtype), weight.to(data.dtype))
    return out.view(b, t, f, h, w)


def composite_linear_sampler(data: torch.Tensor, offset: torch.Tensor,
                             weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`linear_sampler` from tin_shift and elementwise ops (CUDA, half precision, the reference
    backend): the specification the fused kernel is tested against."""
    b, t, f, h, w = data.shape
    g = offset.shape[1]
    k0 = offset.detach().floor().int()  # (B, G)
    lam = offset - k0.to(offset.dtype)  # (B, G) in [0, 1): gradients reach the offsets here
    flat = data.reshape(b, t, f, h * w)
    # both integer shifts in one call: the data twice over, the groups shifted by k0 | k0 + 1
    both = tin_shift(torch.cat([flat, flat], dim=2), torch.cat([k0, k0 + 1], dim=1))
    coef = torch.stack([1 - lam, lam], dim=1)[:, None]  # (B, 1, 2, G): d0's and d1's share
    if weight is not None:
        coef = coef * weight[:, :, None]  # (B, T, 2, G)
    out = (both.view(b, t, 2, g, f // g, h * w) * coef[..., None, None]).sum(2)
    return out.view(b, t, f, h, w)


class TemporalInterlace(nn.Module):
    """Interlace the first C/shift_div channels of (N*T, C, H, W); the rest pass through."""

    def __init__(self, in_channels: int, num_segments: int = 8, shift_div: int = 4):
        super().__init__()
        self.num_segments = num_segments
        self.fold = in_channels // shift_div
        if self.fold == 0 or self.fold % 4:
            raise ValueError(
                f"TIN needs in_channels / shift_div divisible by 4, got {in_channels} / {shift_div}"
            )
        self.offset_net = OffsetNet(self.fold, num_segments)
        self.weight_net = WeightNet(self.fold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        nt, c, h, w = x.shape
        t, f = self.num_segments, self.fold
        xd = x[:, :f].reshape(nt // t, t, f, h, w)
        # the offsets and gates in fp32 under any autocast: in bf16 an offset near 1 moves by
        # 1/128 of a frame per rounding, and the offsets are what TIN learns
        with torch.autocast(x.device.type, enabled=False):
            cols = temporal_columns(xd.float().mean(dim=(3, 4)))  # (B, T, 3F)
            o = self.offset_net(cols)  # (B, 2)
            weight = self.weight_net(cols)  # (B, T, 2)
        # the 4 groups shift by (+o1, +o2, -o1, -o2), weighted by gates (w1, w2, w1, w2)
        y = linear_sampler(xd, torch.cat([o, -o], dim=1), weight.repeat(1, 1, 2))
        return torch.cat([y.reshape(nt, f, h, w), x[:, f:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold={self.fold}"
