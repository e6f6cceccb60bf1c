"""`vidtempo bench models`: training-step cost (forward + backward) per clip of TSN, TSM, TIN,
TANet and TPN at T frames of size², as ratios to TSN measured in the same run."""

from __future__ import annotations

import argparse

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.bench.timing import compare
from vidtempo.machine import cpu_name

# (label, zoo config, overrides): TSN and TSM are the baselines TIN is built on
CANDIDATES = [
    ("TSN", "tin_r50_1x1x8_40e_sthv1_rgb", {"model.arch": "tsn"}),
    ("TSM", "tin_r50_1x1x8_40e_sthv1_rgb", {"model.arch": "tsm", "model.shift_div": 8}),
    ("TIN", "tin_r50_1x1x8_40e_sthv1_rgb", {}),
    ("TANet", "tanet_r50_1x1x8_50e_sthv1_rgb", {}),
    ("TPN-TSM", "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb", {}),
    ("TPN-SlowOnly", "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb", {}),
]


def _step(model, x, labels):
    """The training step without the optimiser: forward, loss, backward."""
    import torch

    from vidtempo.train.step import train_step

    ok = torch.ones(len(labels), dtype=torch.bool)
    return lambda: train_step(model, None, x, labels, ok, None, None)


def run(size: int = 112, frames: int = 8, clips: int = 2, repeats: int = 5, only=None) -> dict:
    import torch

    from vidtempo import models as M

    torch.manual_seed(0)
    fns, macs = {}, {}
    for label, name, overrides in CANDIDATES:
        if only and label not in only:
            continue
        cfg = C.override(C.load(name), {**overrides, "model.num_segments": frames})
        model = M.build(cfg).train()
        if M.family(cfg.model.arch) == "tpn_slowonly":
            x = torch.randn(clips, 1, 3, frames, size, size)
        else:
            x = torch.randn(clips, frames, 3, size, size)
        labels = torch.randint(0, cfg.model.num_classes, (clips,))
        fns[label] = _step(model, x, labels)
        macs[label] = M.measure(cfg, size)[1]
    secs = compare(fns, repeats=repeats, warmup=1)
    base = secs.get("TSN")
    rows = [
        {
            "model": k,
            "ms_per_clip": v / clips * 1e3,
            "vs_TSN": v / base if base else None,
            "gmacs_per_clip_fwd": macs[k] / 1e9,
        }
        for k, v in secs.items()
    ]
    out = {"benchmark": "train step fwd+bwd per clip", "device": cpu_name(),
           "threads": torch.get_num_threads(), "size": size, "frames": frames, "clips": clips,
           "repeats": repeats, "rows": rows}  # fmt: skip
    if "TIN" in secs and "TSM" in secs:
        out["tin_overhead_over_tsm"] = secs["TIN"] / secs["TSM"] - 1
    return out


def table(result: dict) -> str:
    lines = [
        f"train step (fwd+bwd, SGD-free) per clip, {result['frames']}x{result['size']}², batch "
        f"{result['clips']} clips, {result['device']} ({result['threads']} threads), median of "
        f"{result['repeats']}",
        "",
        "| model | ms / clip | vs TSN | GMACs / clip (fwd) |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        vs = f"{r['vs_TSN']:.3f}x" if r["vs_TSN"] else "-"
        lines.append(
            f"| {r['model']} | {r['ms_per_clip']:.0f} | {vs} | {r['gmacs_per_clip_fwd']:.2f} |"
        )
    if "tin_overhead_over_tsm" in result:
        lines.append(f"\nTIN overhead over TSM: {100 * result['tin_overhead_over_tsm']:+.1f}%")
    return "\n".join(lines)


HELP = "train-step cost per clip of TSN/TSM/TIN/TANet/TPN vs TSN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=2, help="clips per batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", default=None, help="a subset, e.g. --only TSN TSM TIN")
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.size, args.frames, args.clips, args.repeats, args.only)
    return emit(result, table(result), args.json)
