"""TIN: Temporal Interlacing (models.md §1.2–§1.5), built on vidtempo.ops.tin_shift."""

from __future__ import annotations

import torch
from torch import nn

from vidtempo.ops import tin_shift

OFFSET_BIAS = 0.5108  # sigmoid(0.5108) = 0.625, so offsets start at 4 * (0.625 - 0.5) = 0.5
OFFSET_INIT = 0.5


class OffsetNet(nn.Module):
    """(B, F, T) descriptors → (B, groups) fractional offsets in (-2, 2)."""

    def __init__(self, channels: int, num_segments: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(num_segments, num_segments)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(num_segments, groups)
        nn.init.constant_(self.fc2.bias, OFFSET_BIAS)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        z = self.conv(s).flatten(1)  # (B, T)
        z = self.fc2(self.relu(self.fc1(z)))  # (B, groups)
        return 4 * (torch.sigmoid(z) - 0.5)


class WeightNet(nn.Module):
    """(B, F, T) descriptors → (B, T, groups) weights in (0, 2), starting near 1."""

    def __init__(self, channels: int, groups: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(channels, groups, 3, padding=1)
        nn.init.constant_(self.conv.bias, 0.0)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(self.conv(s)).permute(0, 2, 1)


def linear_sampler(data: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Shift each of 4 channel groups of data (B, T, F, H, W) by a fractional offset (B, 4),
    interpolating linearly between the floor and floor + 1 integer shifts."""
    b, t, f, h, w = data.shape
    k0 = offset.detach().floor().int()  # (B, 4)
    lam = offset - k0.to(offset.dtype)  # (B, 4) in [0, 1): gradients reach the offsets here
    flat = data.reshape(b, t, f, h * w)
    d0 = tin_shift(flat, k0)
    d1 = tin_shift(flat, k0 + 1)
    lam = lam.repeat_interleave(f // offset.shape[1], dim=1).view(b, 1, f, 1)
    return ((1 - lam) * d0 + lam * d1).view(b, t, f, h, w)


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
        s = xd.mean(dim=(3, 4)).permute(0, 2, 1)  # (B, F, T)
        o = self.offset_net(s)  # (B, 2)
        weight = self.weight_net(s)  # (B, T, 2)
        shifted = linear_sampler(xd, torch.cat([o, -o], dim=1))  # (B, T, F, H, W)
        weight = weight[:, :, [0, 1, 0, 1]].repeat_interleave(f // 4, dim=2)  # (B, T, F)
        y = shifted * weight[..., None, None]
        return torch.cat([y.reshape(nt, f, h, w), x[:, f:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold={self.fold}"
