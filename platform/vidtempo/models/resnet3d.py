"""SlowOnly ResNet-50 (3D), as TPN's K400 backbone uses it (MMAction2's resnet3d_slowonly.py).

Parameter names follow torchvision's 2D ResNet (conv1, bn1, layerX.Y.conv1 …) so inflated
ImageNet weights map key for key: a 2D kernel is repeated along time and divided by kernel_t.
"""

from __future__ import annotations

import torch
from torch import nn

from vidtempo.models.resnet import STAGES, run_stages


class Bottleneck3d(nn.Module):
    def __init__(
        self, inplanes: int, planes: int, spatial_stride: int, inflate: bool, downsample=None
    ):
        super().__init__()
        kt = 3 if inflate else 1  # 3x1x1 inflation of conv1
        self.conv1 = nn.Conv3d(inplanes, planes, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                               padding=(0, 1, 1), bias=False)  # fmt: skip
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):  # (N, C, T, H, W)
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet3dSlowOnly(nn.Module):
    stage_channels = (256, 512, 1024, 2048)  # each stage's output channels (Bottleneck × 4)

    def __init__(
        self,
        depth: int = 50,
        inflate: tuple[int, ...] = (0, 0, 1, 1),
        out_indices: tuple[int, ...] = (2, 3),
        zero_init_residual: bool = True,
    ):
        super().__init__()
        self.out_indices = out_indices
        self.conv1 = nn.Conv3d(3, 64, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(STAGES[depth], (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                downsample = None
                if b == 0:
                    downsample = nn.Sequential(
                        nn.Conv3d(inplanes, planes * 4, 1, stride=(1, stride, stride), bias=False),
                        nn.BatchNorm3d(planes * 4),
                    )
                layers.append(
                    Bottleneck3d(
                        inplanes, planes, stride if b == 0 else 1, bool(inflate[i]), downsample
                    )
                )
                inplanes = planes * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        # from-scratch init (pretrained=None): Kaiming convs, BN 1/0, last BN of each block 0
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x):  # (N, 3, T, H, W)
        return run_stages(self, x)


def load_inflated_weights(backbone: ResNet3dSlowOnly, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision 2D ResNet-50 state dict into the 3D backbone, inflating each conv."""
    own = backbone.state_dict()
    sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise KeyError(f"cannot inflate: missing {missing[:8]}, unexpected {unexpected[:8]}")
    inflated = {}
    for k, v in sd.items():
        target = own[k]
        if v.dim() == 4 and target.dim() == 5:
            kt = target.shape[2]
            v = v.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt
        if v.shape != target.shape:
            raise ValueError(f"shape mismatch for {k}: {tuple(v.shape)} vs {tuple(target.shape)}")
        inflated[k] = v
    backbone.load_state_dict(inflated, strict=True)
