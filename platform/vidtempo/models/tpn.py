"""TPN: the Temporal Pyramid Network neck with its auxiliary head
(MMAction2's mmaction/models/necks/tpn.py).

Inputs are res4 and res5 in NCTHW. Every Conv3d here is bias-free; CBR = Conv3d → BN3d → ReLU.
The widths follow the trunk: on a ResNet-50 (res4 1,024, res5 2,048 channels) the temporal
modulation is 1,024 wide and the fusions 2,048, as in the zoo; a narrower trunk gets a neck
narrowed alike (res5 / 2 and res5), unless `out_channels` / `fusion_channels` say otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin, cout, kernel, stride=1, padding=0, groups=1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class AuxHead(nn.Module):
    """Training-only classifier on res4: CBR (1,3,3)/(1,2,2) → global pool → dropout → fc."""

    def __init__(self, in_channels: int, num_classes: int, loss_weight: float = 0.5):
        super().__init__()
        self.conv = cbr(in_channels, in_channels * 2, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(in_channels * 2, num_classes)
        self.loss_weight = loss_weight
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool3d(self.conv(x), 1).flatten(1)
        return self.loss_weight * F.cross_entropy(self.fc(self.dropout(x)), labels)


def groups_for(*channels: int) -> int:
    """32 groups (the zoo's) where the widths allow, else the most that divide them all."""
    return math.gcd(32, *channels)


class LevelFusion(nn.Module):
    """Per level a grouped 1x1x1 CBR (1024 → 1024), concatenated, then a 1x1x1 CBR to 2048."""

    def __init__(self, channels=(1024, 1024), mid=(1024, 1024), out_channels=2048):
        super().__init__()
        self.ops = nn.ModuleList(cbr(c, m, 1, groups=groups_for(c, m)) for c, m in zip(channels, mid))
        self.fusion = cbr(sum(mid), out_channels, 1)

    def forward(self, xs):
        return self.fusion(torch.cat([op(x) for op, x in zip(self.ops, xs)], dim=1))


class TPN(nn.Module):
    def __init__(
        self,
        in_channels: tuple[int, int] = (1024, 2048),
        out_channels: int | None = None,
        num_segments: int = 8,
        num_classes: int = 400,
        aux_loss_weight: float = 0.5,
        fusion_channels: int | None = None,
    ):
        super().__init__()
        top = in_channels[-1]
        out_channels = out_channels or top // 2  # the temporal modulation's width
        fusion = fusion_channels or top  # the level fusions' and the neck's output width
        self.out_channels = fusion
        # spatial modulation: every level to `top` channels at the res5 size (log2 CBRs each)
        self.spatial = nn.ModuleList()
        for c in in_channels:
            steps, layers = 0, []
            while c * 2**steps < top:
                layers.append(
                    cbr(c * 2**steps, c * 2 ** (steps + 1), (1, 3, 3), (1, 2, 2), (0, 1, 1))
                )
                steps += 1
            self.spatial.append(nn.Sequential(*layers) if layers else nn.Identity())
        # temporal modulation: grouped temporal conv to out_channels, then max-pool T -> 1
        groups = groups_for(top, out_channels)
        self.temporal = nn.ModuleList(
            nn.Conv3d(top, out_channels, (3, 1, 1), padding=(1, 0, 0), groups=groups, bias=False)
            for _ in in_channels
        )
        self.temporal_pool = num_segments
        self.downsample = nn.Conv3d(
            out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=False
        )
        widths = (out_channels, out_channels)
        self.level_fusion_td = LevelFusion(widths, widths, fusion)
        self.level_fusion_bu = LevelFusion(widths, widths, fusion)
        self.pyramid_fusion = cbr(fusion * 2, fusion, 1)
        self.aux_head = (
            AuxHead(in_channels[0], num_classes, aux_loss_weight) if aux_loss_weight else None
        )
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats, labels: torch.Tensor | None = None):
        """feats: (res4, res5) as (N, C, T, h, w). Returns (N, fusion, 1, h, w) and the aux loss
        (None outside training or without labels)."""
        aux = None
        if self.aux_head is not None and self.training and labels is not None:
            aux = self.aux_head(feats[0], labels)
        m = [
            F.max_pool3d(t(s(x)), (self.temporal_pool, 1, 1), ceil_mode=True)
            for x, s, t in zip(feats, self.spatial, self.temporal)
        ]  # each (N, 1024, 1, h, w)
        td = [m[0] + m[1], m[1]]  # top-down: the upsample is the identity here
        p_td = self.level_fusion_td(td)
        bu = [td[0], td[1] + self.downsample(td[0])]  # bottom-up, cascading from top-down
        p_bu = self.level_fusion_bu(bu)
        return self.pyramid_fusion(torch.cat([p_td, p_bu], dim=1)), aux
