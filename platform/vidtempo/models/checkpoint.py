"""Import MMAction2 (0.x and 1.x) TIN / TANet / TSM / TPN checkpoints onto vidtempo models.

MMAction2 wraps every conv in an mmcv ConvModule (`convK.conv`, `convK.bn`), wraps TIN's block
conv1 as (`net1` = the interlace, `net2` = the conv) and TSM's as `net`, wraps TANet blocks as
(`block`, `tam.G`, `tam.L`) and names the classifier `cls_head.fc_cls`
(MMAction2's resnet.py, resnet_tin.py).
The mapping below is a list of rewrites applied in order to every key; the import is strict:
every checkpoint key must land on a model key and every model key must be filled.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

_B = r"(backbone\.layer\d+\.\d+)"
_N = r"neck\."
REWRITES: list[tuple[str, str]] = [
    (r"^module\.", ""),  # saved from DDP
    # TANet: a TA-Block holds the Bottleneck as `block` and the TAM as `tam` (G, L branches)
    (_B + r"\.block\.", r"\1."),
    (_B + r"\.tam\.G\.", r"\1.temporal.global_branch."),
    (_B + r"\.tam\.L\.", r"\1.temporal.local_branch."),
    # TIN: conv1.conv = Sequential(net1 = TemporalInterlace, net2 = the conv)
    (_B + r"\.conv1\.conv\.net1\.", r"\1.temporal."),
    # TSM / TIN: the wrapped conv
    (_B + r"\.conv1\.conv\.net2?\.weight$", r"\1.conv1.weight"),
    # ConvModule → plain conv + BN, torchvision names
    (_B + r"\.conv(\d)\.conv\.", r"\1.conv\2."),
    (_B + r"\.conv(\d)\.bn\.", r"\1.bn\2."),
    (_B + r"\.downsample\.conv\.", r"\1.downsample.0."),
    (_B + r"\.downsample\.bn\.", r"\1.downsample.1."),
    (r"^backbone\.conv1\.conv\.", "backbone.conv1."),
    (r"^backbone\.conv1\.bn\.", "backbone.bn1."),
    # heads
    (r"^cls_head\.fc_cls\.", "head.fc."),
    # TPN neck
    (
        _N + r"spatial_modulation\.spatial_modulation\.(\d+)\.(\d+)\.conv\.",
        r"neck.spatial.\1.\2.0.",
    ),
    (_N + r"spatial_modulation\.spatial_modulation\.(\d+)\.(\d+)\.bn\.", r"neck.spatial.\1.\2.1."),
    (_N + r"temporal_modulation_ops\.(\d+)\.conv\.conv\.", r"neck.temporal.\1."),
    (_N + r"downsample_ops\.0\.conv\.conv\.", r"neck.downsample."),
    (_N + r"level_fusion_1\.", "neck.level_fusion_td."),
    (_N + r"level_fusion_2\.", "neck.level_fusion_bu."),
    (r"(neck\.level_fusion_\w\w)\.downsamples\.(\d+)\.conv\.conv\.", r"\1.ops.\2.0."),
    (r"(neck\.level_fusion_\w\w)\.downsamples\.(\d+)\.conv\.bn\.", r"\1.ops.\2.1."),
    (r"(neck\.level_fusion_\w\w)\.fusion_conv\.conv\.", r"\1.fusion.0."),
    (r"(neck\.level_fusion_\w\w)\.fusion_conv\.bn\.", r"\1.fusion.1."),
    (_N + r"pyramid_fusion\.conv\.", "neck.pyramid_fusion.0."),
    (_N + r"pyramid_fusion\.bn\.", "neck.pyramid_fusion.1."),
    (_N + r"aux_head\.conv\.conv\.", "neck.aux_head.conv.0."),
    (_N + r"aux_head\.conv\.bn\.", "neck.aux_head.conv.1."),
]
_COMPILED = [(re.compile(p), r) for p, r in REWRITES]


class CheckpointMismatch(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def map_key(key: str) -> str:
    for pattern, repl in _COMPILED:
        key = pattern.sub(repl, key)
    return key


def mmaction2_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an MMAction2 .pth file (its `state_dict`, or the file itself)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def convert_mmaction2(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an MMAction2 state dict for `model`; raise CheckpointMismatch naming every
    unmapped, missing or mis-shaped key."""
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        new = map_key(key)
        if new in own:
            out[new] = value
        else:
            unmapped.append(f"{key} (as {new})" if new != key else key)
    missing = sorted(k for k in own if k not in out)
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in out.items()
        if v.shape != own[k].shape
    ]
    if unmapped or missing or shapes:
        parts = []
        if unmapped:
            parts.append(
                f"{len(unmapped)} checkpoint keys have no place in the model: "
                + ", ".join(unmapped[:10])
            )
        if missing:
            parts.append(
                f"{len(missing)} model keys are not in the checkpoint: " + ", ".join(missing[:10])
            )
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:10]))
        raise CheckpointMismatch(
            "the checkpoint does not fit this model (is it the right config?) — "
            + " | ".join(parts)
        )
    return out


def import_mmaction2(src: str | Path, dst: str | Path, model: nn.Module, config_name: str) -> int:
    """Convert `src` for `model`, load it strictly and save it as a vidtempo checkpoint that
    `torch.load(dst, weights_only=True)` reads. Returns the number of tensors."""
    converted = convert_mmaction2(mmaction2_state_dict(src), model)
    model.load_state_dict(converted, strict=True)
    torch.save({"state_dict": converted, "config": config_name, "source": str(src)}, dst)
    return len(converted)


def load_pretrained(model: nn.Module, path: str | Path) -> str:
    """Non-strict `load_from`: every checkpoint tensor whose (renamed) key and shape match a
    model tensor is loaded; returns a report of what was and was not loaded.

    MMAction2 and vidtempo checkpoints both work. A TSM checkpoint on a TIN model fills the block
    conv1 weights too: TSM's `conv1.conv.net.weight` and TIN's `conv1.conv.net2.weight` both map
    to `conv1.weight` here, whereas MMAction2's own non-strict load leaves those 16 weights at
    their ImageNet values (read from its code, not run)."""
    obj = torch.load(path, map_location="cpu", weights_only=False)
    state = obj
    if isinstance(obj, dict):
        state = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    own = model.state_dict()
    take, unused, shaped = {}, [], []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        new = map_key(key)
        if new not in own:
            unused.append(key)
        elif own[new].shape != value.shape:
            shaped.append(f"{new} {tuple(value.shape)}→{tuple(own[new].shape)}")
        else:
            take[new] = value
    model.load_state_dict(take, strict=False)
    missing = sorted(k for k in own if k not in take)
    parts = [f"loaded {len(take)}/{len(own)} model tensors"]
    if missing:
        parts.append(f"kept their init ({len(missing)}): {', '.join(missing[:8])}"
                     + (" …" if len(missing) > 8 else ""))  # fmt: skip
    if shaped:
        parts.append(f"shape differs, not loaded ({len(shaped)}): {', '.join(shaped[:4])}")
    if unused:
        parts.append(f"checkpoint tensors unused ({len(unused)}): {', '.join(unused[:4])}")
    return "; ".join(parts)
