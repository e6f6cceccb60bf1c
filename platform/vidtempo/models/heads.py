"""Classification heads and test-time view averaging (MMAction2's tsm_head.py, tpn_head.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TSMHead(nn.Module):
    """Per frame: global average pool → dropout → fc; then the mean over the T segments."""

    def __init__(
        self, in_channels: int, num_classes: int, num_segments: int, dropout: float, init_std: float
    ):
        super().__init__()
        self.num_segments = num_segments
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc.weight, 0, init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*V*T, C, h, w)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        scores = self.fc(self.dropout(x))  # (N*V*T, K)
        return scores.view(-1, self.num_segments, scores.shape[-1]).mean(dim=1)  # (N*V, K)


class TPNHead(nn.Module):
    """Global 3D average pool → dropout → fc. With fcn_test, in eval mode, the fc is applied as
    a 1x1x1 convolution at every (t, h, w) position before the pooling (the same linear map)."""

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float, init_std: float, fcn_test: bool
    ):
        super().__init__()
        self.fcn_test = fcn_test
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc.weight, 0, init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*V, C, t, h, w)
        if self.fcn_test and not self.training:
            weight = self.fc.weight[:, :, None, None, None]
            return F.conv3d(x, weight, self.fc.bias).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(F.adaptive_avg_pool3d(x, 1).flatten(1)))


def average_views(scores: torch.Tensor, num_views: int, mode: str) -> torch.Tensor:
    """(N*V, K) scores of V views per video → (N, K): softmax then mean ('prob'), mean of the
    scores ('score'), or the per-view scores unchanged as (N, V, K) ('none')."""
    scores = scores.view(-1, num_views, scores.shape[-1])
    if mode == "prob":
        return F.softmax(scores, dim=2).mean(dim=1)
    if mode == "score":
        return scores.mean(dim=1)
    if mode == "none":
        return scores
    raise ValueError(f"average_clips must be 'prob', 'score' or 'none', got {mode!r}")
