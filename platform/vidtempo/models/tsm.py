"""TSM: shift 1/shift_div of the channels one frame back and 1/shift_div one frame forward."""

from __future__ import annotations

import torch
from torch import nn


class TemporalShift(nn.Module):
    def __init__(self, num_segments: int, shift_div: int = 8):
        super().__init__()
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        nt, c, h, w = x.shape
        t = self.num_segments
        x = x.view(nt // t, t, c, h, w)
        fold = c // self.shift_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]  # fold 1: frame t takes frame t+1
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # fold 2: frame t takes t-1
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return out.view(nt, c, h, w)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}"
