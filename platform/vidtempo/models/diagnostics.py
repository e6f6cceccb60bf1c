"""What the temporal modules did: TIN's offsets and gates, TAM's temporal kernels, TPN's levels.

    probe = TemporalProbe(model)       # forward hooks on the modules' own sub-networks
    probe.start()                      # ... training steps ...
    metrics = probe.stop()             # {"tin/offset_abs/layer1": ..., "tam/asymmetry/layer3": ...}

The hooks only read outputs the model computes anyway (TIN's OffsetNet and WeightNet, TAM's
global branch), so the model's maths is untouched and a model without TIN or TAM gets no hooks.
Statistics are summed on the device (no synchronisation per step) and averaged per stage:

- `tin/offset_abs/<stage>`: mean |offset| of the stage's blocks, over videos and both offset
  groups. Every block starts near 0.5 (OffsetNet's bias, resnet_tin.py); a value that moved
  away from 0.5 is TIN learning how far to shift.
- `tin/gate_std/<stage>`: the spread (standard deviation over videos, frames and groups) of the
  WeightNet gates, which start near 1 everywhere; a spread above 0 means TIN weighs frames
  unequally.
- `tam/asymmetry/<stage>`: mean |k[0] − k[K−1]| of TAM's per-video, per-channel temporal kernels
  (softmax, K = 3 taps). A symmetric kernel treats the past and the future alike and cannot
  tell a motion from its reverse; 0 = symmetric, 1 = all weight on one side.
- `tpn/aux_loss`, `tpn/aux_top1`: TPN's auxiliary head on res4 (training steps only): its
  cross-entropy (before the loss weight) and its accuracy on the training clips.
- `tpn/level_rms/<td|bu><i>`: the root-mean-square of level i's features as they enter TPN's
  top-down and bottom-up level fusions (after the temporal modulation): how much each level of
  the pyramid puts into the fusion.

With `start(collect=True)` the probe also keeps every video's offsets per TIN block, for
`offset_histograms`.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from vidtempo.models.tam import TAM
from vidtempo.models.tin import OFFSET_INIT, TemporalInterlace
from vidtempo.models.tpn import TPN

_STAGE = re.compile(r"layer\d+")


def stage_of(name: str) -> str:
    """'backbone.layer3.1.temporal' → 'layer3' (module names follow torchvision's ResNet)."""
    found = _STAGE.search(name)
    return found.group(0) if found else name


class TemporalProbe:
    def __init__(self, model: nn.Module):
        self.tin_blocks: list[str] = []
        self.tam_blocks: list[str] = []
        self._handles = []
        self._active = False
        self._collect = False
        for name, mod in model.named_modules():
            name = name.removeprefix("module.")  # DDP
            if isinstance(mod, TemporalInterlace):
                self.tin_blocks.append(name)
                self._handles += [
                    mod.offset_net.register_forward_hook(self._hook(name, "offset")),
                    mod.weight_net.register_forward_hook(self._hook(name, "gate")),
                ]
            elif isinstance(mod, TAM):
                self.tam_blocks.append(name)
                self._handles.append(
                    mod.global_branch.register_forward_hook(self._hook(name, "kernel"))
                )
            elif isinstance(mod, TPN):
                self._watch_tpn(mod)
        self._reset()

    def _watch_tpn(self, neck: TPN) -> None:
        labels: list[torch.Tensor] = []  # the aux head's labels, read by its fc's hook

        def aux_in(module, inputs):
            labels[:] = [inputs[1]]

        def aux_out(module, inputs, output):
            self._add("tpn", "aux_loss", output.detach().float().reshape(1) / module.loss_weight)

        def aux_fc(module, inputs, output):
            if labels:
                self._add("tpn", "aux_correct", (output.detach().argmax(1) == labels[0]).float())

        def levels(which: str):
            def hook(module, inputs):
                for i, x in enumerate(inputs[0]):
                    rms = x.detach().float().pow(2).mean(dim=tuple(range(1, x.dim()))).sqrt()
                    self._add("tpn", f"level:{which}{i}", rms)

            return hook

        if neck.aux_head is not None:
            self._handles += [neck.aux_head.register_forward_pre_hook(aux_in),
                              neck.aux_head.register_forward_hook(aux_out),
                              neck.aux_head.fc.register_forward_hook(aux_fc)]  # fmt: skip
        self._handles += [neck.level_fusion_td.register_forward_pre_hook(levels("td")),
                          neck.level_fusion_bu.register_forward_pre_hook(levels("bu"))]  # fmt: skip

    def _add(self, block: str, kind: str, v: torch.Tensor) -> None:
        """Add the values `v` to the running sums of (block, kind), while started."""
        if not self._active:
            return
        acc = self.sums.get((block, kind))
        stats = [v.sum(), (v * v).sum(), float(v.numel())]  # the count needs no device
        self.sums[block, kind] = stats if acc is None else [a + s for a, s in zip(acc, stats)]

    def __bool__(self) -> bool:
        return bool(self._handles)

    def _reset(self) -> None:
        # (block, kind) → [sum, sum of squares] as device tensors, and the count
        self.sums: dict[tuple[str, str], list] = {}
        self.offsets: dict[str, list[torch.Tensor]] = defaultdict(list)

    def _hook(self, block: str, kind: str):
        def hook(module, inputs, output):
            if not self._active:
                return
            v = output.detach().float()
            if kind == "offset":  # (B, 2) in (-2, 2)
                if self._collect:
                    self.offsets[block].append(v.cpu())
                v = v.abs()
            elif kind == "kernel":  # (B*C, K) softmax taps
                v = (v[:, 0] - v[:, -1]).abs()
            self._add(block, kind, v)

        return hook

    def start(self, collect: bool = False) -> None:
        self._reset()
        self._active, self._collect = True, collect

    def stop(self) -> dict[str, float]:
        """Per-stage statistics of the forward passes since start()."""
        self._active = False
        per_stage: dict[tuple[str, str], list[float]] = {}
        for (block, kind), (s, s2, n) in self.sums.items():
            key = (stage_of(block), kind)
            total = per_stage.setdefault(key, [0.0, 0.0, 0.0])
            for i, v in enumerate((s, s2, n)):
                total[i] += float(v)
        out = {}
        for (stage, kind), (s, s2, n) in sorted(per_stage.items()):
            if n == 0:
                continue
            mean = s / n
            if kind == "offset":
                out[f"tin/offset_abs/{stage}"] = mean
            elif kind == "gate":
                out[f"tin/gate_std/{stage}"] = max(s2 / n - mean * mean, 0.0) ** 0.5
            elif kind == "kernel":
                out[f"tam/asymmetry/{stage}"] = mean
            elif kind == "aux_loss":
                out["tpn/aux_loss"] = mean
            elif kind == "aux_correct":
                out["tpn/aux_top1"] = 100 * mean
            else:  # level:td0, …
                out[f"tpn/level_rms/{kind.split(':', 1)[1]}"] = mean
        return out

    def collected_offsets(self) -> dict[str, torch.Tensor]:
        """Block → (videos, 2) offsets seen since start(collect=True)."""
        return {b: torch.cat(v) for b, v in self.offsets.items() if v}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def offsets_moved(metrics: dict[str, float], tolerance: float = 0.1) -> tuple[bool, str]:
    """Did TIN's offsets leave their initial ±0.5? From `tin/offset_abs/<stage>` metrics: the
    stage that moved most, e.g. (True, "layer3 0.50→1.21")."""
    stages = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith("tin/offset_abs/")}
    if not stages:
        return False, ""
    stage, value = max(stages.items(), key=lambda kv: abs(kv[1] - OFFSET_INIT))
    return abs(value - OFFSET_INIT) > tolerance, f"{stage} {OFFSET_INIT:.2f}→{value:.2f}"


def offset_histograms(offsets: dict[str, torch.Tensor], title: str = ""):
    """A matplotlib figure: one histogram per TIN block of its per-video offsets (both groups;
    the other two groups are their negatives), with the initial +0.5 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(offsets)
    cols = min(4, len(blocks))
    rows = (len(blocks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    bins = torch.linspace(-2, 2, 41).tolist()
    for ax, block in zip(axes.flat, blocks):
        o = offsets[block].numpy()
        for g in range(o.shape[1]):
            ax.hist(o[:, g], bins=bins, alpha=0.6, label=f"group {g}")
        ax.axvline(OFFSET_INIT, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(block.removeprefix("backbone.").removesuffix(".temporal"), fontsize=9)
        ax.set_xlim(-2, 2)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(blocks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "TIN offsets per block (frames; dashed: the initial 0.5)", fontsize=10)
    fig.tight_layout()
    return fig
