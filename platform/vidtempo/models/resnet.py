"""ResNet (2D) with a temporal slot in every Bottleneck, using torchvision's parameter names.

A torchvision `resnet50()` state dict loads into `ResNet` key for key; the temporal modules add
keys of their own under `layerX.Y.temporal.*`. What goes in the slot is decided at construction
by a factory (TSN: nothing, TSM: a shift, TIN: an interlace, TANet: a TAM) — nothing is patched
afterwards. Where it acts (MMAction2's resnet_tin.py, tanet.py):
  "input": on the block input, before conv1, in the residual branch only (TSM 'blockres', TIN)
  "after_conv1": after conv1 → BN → ReLU, before conv2 (TANet's TA-Block)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# (in_channels of conv1, planes, block index in the network) -> module or None
TemporalFactory = Callable[[int, int, int], nn.Module | None]

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STEMS = ("imagenet", "small")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        temporal: nn.Module | None = None,
        temporal_position: str = "input",
    ):
        super().__init__()
        if temporal_position not in ("input", "after_conv1"):
            raise ValueError(
                f"temporal_position must be 'input' or 'after_conv1', got {temporal_position!r}"
            )
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, bias=False
        )  # 'pytorch' style
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.temporal = temporal
        self.temporal_position = temporal_position

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N*T, C, H, W)
        identity = x if self.downsample is None else self.downsample(x)
        y = x
        if self.temporal is not None and self.temporal_position == "input":
            y = self.temporal(y)  # the identity path keeps the un-shifted input
        y = self.relu(self.bn1(self.conv1(y)))
        if self.temporal is not None and self.temporal_position == "after_conv1":
            y = self.temporal(y)
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes, planes, stride=1, downsample=None, temporal=None, temporal_position="input"
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.temporal = temporal
        self.temporal_position = temporal_position

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = x
        if self.temporal is not None and self.temporal_position == "input":
            y = self.temporal(y)
        y = self.relu(self.bn1(self.conv1(y)))
        if self.temporal is not None and self.temporal_position == "after_conv1":
            y = self.temporal(y)
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


def run_stages(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Stem, then layer1..layer4 of a torchvision-named ResNet (2D or 3D); the outputs of the
    stages in net.out_indices."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    outs = []
    for i in range(4):
        x = getattr(net, f"layer{i + 1}")(x)
        if i in net.out_indices:
            outs.append(x)
    return tuple(outs)


class ResNet(nn.Module):
    """ResNet backbone without the fc. Returns the outputs of the stages in `out_indices`
    (0 = layer1 … 3 = layer4); a single index returns a tensor, several a tuple."""

    def __init__(
        self,
        depth: int = 50,
        temporal: TemporalFactory | None = None,
        temporal_position: str = "input",
        out_indices: tuple[int, ...] = (3,),
        width: int = 64,
        stem: str = "imagenet",
    ):
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGES)}, got {depth}")
        if stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {sorted(STEMS)}, got {stem!r}")
        block = Bottleneck if depth >= 50 else BasicBlock
        self.depth = depth
        self.out_indices = out_indices
        if stem == "imagenet":  # 7x7/2 conv + 3x3/2 max pool: features at 1/4 of the input
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:  # "small": 3x3/1 conv, no pool (CIFAR ResNets): features at the input's size
            self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes, index = width, 0
        stage_planes = (width, 2 * width, 4 * width, 8 * width)
        # each stage's output channels (res2 … res5): what a neck on this trunk is fed
        self.stage_channels = tuple(p * block.expansion for p in stage_planes)
        for i, (blocks, planes) in enumerate(zip(STAGES[depth], stage_planes)):
            layers = []
            for b in range(blocks):
                stride = 2 if (b == 0 and i > 0) else 1
                downsample = None
                if b == 0 and (stride != 1 or inplanes != planes * block.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                slot = temporal(inplanes, planes, index) if temporal is not None else None
                layers.append(block(inplanes, planes, stride, downsample, slot, temporal_position))
                inplanes = planes * block.expansion
                index += 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor):  # (N*T, 3, H, W)
        outs = run_stages(self, x)
        return outs[0] if len(outs) == 1 else outs

    def temporal_modules(self) -> list[nn.Module]:
        return [
            m.temporal
            for m in self.modules()
            if isinstance(m, Bottleneck | BasicBlock) and m.temporal is not None
        ]


def load_torchvision_weights(backbone: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a torchvision ResNet state dict (the `fc.*` keys are ignored). Every torchvision key
    must match a backbone parameter or buffer; the backbone keys it does not cover must all be
    temporal-module keys. Returns those (freshly initialised) keys."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd and ".temporal." not in k)
    if unexpected or missing:
        raise KeyError(
            "the state dict does not fit this ResNet: "
            + (f"unexpected keys {unexpected[:8]}" if unexpected else "")
            + (" ; " if unexpected and missing else "")
            + (f"missing keys {missing[:8]}" if missing else "")
        )
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise ValueError(
                f"shape mismatch for {k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
            )
    result = backbone.load_state_dict(sd, strict=False)
    return sorted(result.missing_keys)
