"""TAM: the Temporal Adaptive Module of TANet (MMAction2's mmaction/models/common/tam.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TAM(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_segments: int,
        alpha: int = 2,
        adaptive_kernel_size: int = 3,
        beta: int = 4,
        conv1d_kernel_size: int = 3,
    ):
        super().__init__()
        if num_segments < 3:
            raise ValueError(f"TAM needs at least 3 frames, got num_segments={num_segments}")
        t, k = num_segments, adaptive_kernel_size
        self.num_segments = num_segments
        self.kernel_size = k
        # global branch: a video- and channel-specific temporal kernel of K taps
        self.global_branch = nn.Sequential(
            nn.Linear(t, t * alpha, bias=False),
            nn.BatchNorm1d(t * alpha),
            nn.ReLU(inplace=True),
            nn.Linear(t * alpha, k, bias=False),
            nn.Softmax(dim=-1),
        )
        # local branch: a per (channel, t) excitation in (0, 1)
        self.local_branch = nn.Sequential(
            nn.Conv1d(in_channels, in_channels // beta, conv1d_kernel_size,
                      padding=conv1d_kernel_size // 2, bias=False),
            nn.BatchNorm1d(in_channels // beta),
            nn.ReLU(inplace=True),
            nn.Conv1d(in_channels // beta, in_channels, 1, bias=False),
            nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        nt, c, h, w = x.shape
        t = self.num_segments
        b = nt // t
        x = x.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        theta = x.mean(dim=(3, 4))  # (B, C, T)
        kernel = self.global_branch(theta.reshape(b * c, t)).view(b * c, 1, self.kernel_size, 1)
        excite = self.local_branch(theta).view(b, c, t, 1, 1)
        z = (x * excite).reshape(1, b * c, t, h * w)
        # Y[t] = sum_k kernel[k] * Z[t + k - 1], zeros outside [0, T) (cross-correlation)
        y = F.conv2d(z, kernel, padding=(1, 0), groups=b * c)
        return y.view(b, c, t, h, w).permute(0, 2, 1, 3, 4).reshape(nt, c, h, w)
