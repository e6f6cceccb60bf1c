"""Model builders, one per architecture name, in a flat registry (`model.arch` in a config).

    model = vidtempo.models.build(config)                       # random / recipe init
    model = vidtempo.models.build(config, imagenet="resnet50.pth")  # + torchvision weights

ImageNet weights are a torchvision ResNet-50 state dict: a file, a URI, or torchvision's
published weights by name (models/imagenet.py), read on the node that builds the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vidtempo.config import Config, ConfigError, ModelConfig
from vidtempo.models.checkpoint import load_pretrained
from vidtempo.models.heads import TPNHead, TSMHead
from vidtempo.models.imagenet import load as imagenet_state
from vidtempo.models.recognizer import Recognizer2D, Recognizer3D
from vidtempo.models.resnet import ResNet, load_torchvision_weights
from vidtempo.models.resnet3d import ResNet3dSlowOnly, load_inflated_weights
from vidtempo.models.tam import TAM
from vidtempo.models.tin import TemporalInterlace
from vidtempo.models.tpn import TPN
from vidtempo.models.tsm import TemporalShift


def _tsm_head(m: ModelConfig, backbone: ResNet) -> TSMHead:
    return TSMHead(backbone.out_channels, m.num_classes, m.num_segments, m.dropout, m.init_std)


def _resnet(m: ModelConfig, **kwargs) -> ResNet:
    return ResNet(m.depth, width=m.width, stem=m.stem, **kwargs)


def build_tsn(m: ModelConfig) -> nn.Module:
    """TSN: a plain 2D ResNet, frames averaged by the head."""
    backbone = _resnet(m)
    return Recognizer2D(backbone, _tsm_head(m, backbone), m.num_segments, m.average_clips)


def build_tsm(m: ModelConfig) -> nn.Module:
    """TSM: a temporal shift of C/shift_div channels each way on every block's residual input."""
    backbone = _resnet(m, temporal=lambda cin, planes, i: TemporalShift(m.num_segments, m.shift_div))
    return Recognizer2D(backbone, _tsm_head(m, backbone), m.num_segments, m.average_clips)


def build_tin(m: ModelConfig) -> nn.Module:
    """TIN: a learned temporal interlace of C/shift_div channels on every block's residual input."""
    backbone = _resnet(
        m, temporal=lambda cin, planes, i: TemporalInterlace(cin, m.num_segments, m.shift_div)
    )
    return Recognizer2D(backbone, _tsm_head(m, backbone), m.num_segments, m.average_clips)


def build_tanet(m: ModelConfig) -> nn.Module:
    """TANet: a TAM after conv1 of every Bottleneck."""
    backbone = _resnet(
        m, temporal=lambda cin, planes, i: TAM(planes, m.num_segments),
        temporal_position="after_conv1",
    )  # fmt: skip
    return Recognizer2D(backbone, _tsm_head(m, backbone), m.num_segments, m.average_clips)


def _tpn_parts(m: ModelConfig, stage_channels: tuple[int, ...]) -> tuple[TPN, TPNHead]:
    """The neck on res4 and res5 of a trunk with these stage widths (ResNet-50: 1024, 2048),
    as wide as the trunk unless model.tpn_channels / tpn_fusion_channels say otherwise."""
    neck = TPN(tuple(stage_channels[2:4]), m.tpn_channels, m.num_segments, m.num_classes,
               m.aux_loss_weight, m.tpn_fusion_channels)  # fmt: skip
    head = TPNHead(neck.out_channels, m.num_classes, m.dropout, m.init_std, m.fcn_test)
    return neck, head


def build_tpn_tsm(m: ModelConfig) -> nn.Module:
    """TPN on a TSM ResNet-50 (res4 and res5 reshaped to NCTHW)."""
    backbone = _resnet(
        m, temporal=lambda cin, planes, i: TemporalShift(m.num_segments, m.shift_div),
        out_indices=(2, 3),
    )  # fmt: skip
    neck, head = _tpn_parts(m, backbone.stage_channels)
    return Recognizer2D(backbone, head, m.num_segments, m.average_clips, neck=neck)


def build_tpn_slowonly(m: ModelConfig) -> nn.Module:
    """TPN on SlowOnly-R50 (3D; res4 and res5 inflated 3x1x1)."""
    # the neck first, then the trunk: the order a seeded initialisation has always drawn them in
    neck, head = _tpn_parts(m, ResNet3dSlowOnly.stage_channels)
    return Recognizer3D(ResNet3dSlowOnly(m.depth), head, m.average_clips, neck=neck)


# One builder per family; model.depth / width / stem pick its trunk (ResNet-50 by default).
BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "tsn": build_tsn,
    "tsm": build_tsm,
    "tin": build_tin,
    "tanet": build_tanet,
    "tpn_tsm": build_tpn_tsm,
    "tpn_slowonly": build_tpn_slowonly,
}
# The zoo configs' names (each a ResNet-50 recipe): the same builders.
ALIASES = {f"{name}_r50": name for name in BUILDERS}


# the families whose model.shift_div changes the model: TSM's shift, TIN's interlace, TPN-TSM
SHIFTING = ("tsm", "tin", "tpn_tsm")


def shifted_channels(config: Config | ModelConfig) -> list[int]:
    """The channel counts the temporal shift (or interlace) acts on in this model, read from
    the model built on the meta device (no memory, no weights): its blocks' widths."""
    m = config.model if isinstance(config, Config) else config
    with torch.device("meta"):
        model = BUILDERS[family(m.arch)](m)
    out = set()
    for mod in model.modules():
        if isinstance(getattr(mod, "temporal", None), TemporalShift | TemporalInterlace):
            conv = mod.conv1
            out.add(conv.in_channels if mod.temporal_position == "input" else conv.out_channels)
    return sorted(out)


def check(config: Config) -> None:
    """Every model-shape rule of a recipe, before a run or a sweep starts, on the meta device
    (no memory, no weights): the arch is known, model.shift_div divides every channel count the
    model shifts (read from its blocks, whatever its width and depth), and the model builds —
    each builder's own rules (TIN's four offset groups, TAM's three frames, ResNet's depths and
    stems) — each failure a ConfigError that names the setting to change."""
    m = config.model
    name = family(m.arch)
    if name in SHIFTING:
        channels = shifted_channels(dataclasses.replace(m, shift_div=1))
        bad = [c for c in channels if c % m.shift_div]
        if bad:
            raise ConfigError(
                f"model.shift_div={m.shift_div} does not divide the channel counts {bad} that "
                f"{m.arch} (depth {m.depth}, width {m.width}) shifts: choose a divisor of all of "
                f"{channels} (4, 8 and 16 are the usual ones)"
            )
    try:
        with torch.device("meta"):
            BUILDERS[name](m)
    except ValueError as exc:
        what = f"model.shift_div={m.shift_div}" if name in SHIFTING else f"model.arch={m.arch}"
        raise ConfigError(f"{what}: {exc}") from None


def family(arch: str) -> str:
    """The builder name of `model.arch` (a zoo config's `tin_r50` is `tin`)."""
    name = ALIASES.get(arch, arch)
    if name not in BUILDERS:
        raise ConfigError(f"model.arch '{arch}' is not one of {sorted(BUILDERS)} "
                          f"(or the zoo configs' names: {sorted(ALIASES)})")  # fmt: skip
    return name


def build(config: Config | ModelConfig, imagenet: str | Path | None = None) -> nn.Module:
    """The model a config names; with `imagenet`, its backbone starts from those weights."""
    m = config.model if isinstance(config, Config) else config
    model = BUILDERS[family(m.arch)](m)
    if imagenet is not None:
        state = imagenet_state(imagenet)  # read on this node: a file, a URI or a torchvision name
        if isinstance(model.backbone, ResNet3dSlowOnly):
            load_inflated_weights(model.backbone, state)
        else:
            load_torchvision_weights(model.backbone, state)
    return model


__all__ = ["ALIASES", "BUILDERS", "SHIFTING", "build", "check", "shifted_channels", "family", "count_parameters", "load_pretrained", "measure"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(config: Config, size: int = 224) -> tuple[int, int]:
    """(parameters, multiply-adds of one test view at size²) of the model a config builds.

    Counted with torch.utils.flop_counter on fake tensors (nothing is computed); the zoo's
    "FLOPs" are multiply-add counts, so the counter's FLOPs are halved.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    m = config.model
    with FakeTensorMode():
        model = build(config).eval()
        params = count_parameters(model)
        if isinstance(model, Recognizer3D):
            x = torch.empty(1, 1, 3, m.num_segments, size, size)
        else:
            x = torch.empty(1, m.num_segments, 3, size, size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    return params, counter.get_total_flops() // 2
