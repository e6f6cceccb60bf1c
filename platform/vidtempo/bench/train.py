"""`vidtempo bench train`: clips/s of a full training step — normalise, forward, loss, backward,
gradient clip, SGD step with the recipe's parameter groups — for TSN, TSM, TIN, TANet and TPN at
T×size² with synthetic uint8 input, as in the per-worker loop (bf16 autocast and channels_last on
a GPU). Ratios are to TSN measured in the same run."""

from __future__ import annotations

import argparse

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.bench.models import CANDIDATES
from vidtempo.bench.timing import compare
from vidtempo.machine import cpu_name


def _step(cfg, device, clips, size, frames, bf16):
    import numpy as np
    import torch

    from vidtempo import models as M
    from vidtempo.train.optim import build_optimizer
    from vidtempo.train.step import channels_last, norm_tensors, normalise, train_step

    model = M.build(cfg).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        channels_last(model)
    opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
    mean, std = norm_tensors(cfg, device)
    rng = np.random.default_rng(0)
    if cfg.data.train.format == "NCTHW":
        shape = (clips, 1, 3, frames, size, size)
    else:
        shape = (clips, frames, 3, size, size)
    inputs = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)).to(device)  # on the GPU
    labels = torch.randint(0, cfg.model.num_classes, (clips,), device=device)
    ok = torch.ones(clips, dtype=torch.bool, device=device)

    def run():
        x = normalise(inputs, mean, std, device, channels_last=cuda)
        train_step(model, opt, x, labels, ok, cfg.optim.grad_clip, model.parameters(),
                   bf16=cuda and bf16)  # fmt: skip
        if cuda:
            torch.cuda.synchronize()

    return run


def run(device: str | None = None, size: int = 224, frames: int = 8, clips: int | None = None,
        repeats: int = 3, only=None, bf16: bool = True) -> dict:  # fmt: skip
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clips = clips or (16 if dev.type == "cuda" else 2)
    torch.manual_seed(0)
    fns = {}
    for label, name, overrides in CANDIDATES:
        if only and label not in only:
            continue
        cfg = C.override(C.load(name), {**overrides, "model.num_segments": frames,
                                        "model.pretrained": "none"})  # fmt: skip
        if cfg.data.train.format == "NCTHW":
            cfg = C.override(cfg, {"data.train.sampler.clip_len": frames})
        fns[label] = _step(cfg, dev, clips, size, frames, bf16)
    secs = compare(fns, repeats=repeats, warmup=1)
    base = secs.get("TSN")
    peak = {}
    if dev.type == "cuda":  # each model's own step, alone: the most memory it holds at once
        for label, fn in fns.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            fn()
            peak[label] = torch.cuda.max_memory_allocated(dev) / 2**30
    rows = [{"model": k, "clips_per_s": clips / v, "step_s": v,
             "vs_TSN": (clips / v) / (clips / base) if base else None,
             "peak_GiB": peak.get(k)}  # fmt: skip
            for k, v in secs.items()]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"benchmark": "train step", "device": name, "device_type": dev.type,
            "threads": torch.get_num_threads(), "bf16": bool(bf16 and dev.type == "cuda"),
            "size": size, "frames": frames, "clips": clips, "repeats": repeats,
            "rows": rows}  # fmt: skip


def table(r: dict) -> str:
    precision = "bf16 autocast, channels_last" if r["bf16"] else "fp32"
    lines = [
        f"full training step (SGD groups, clip) at {r['frames']}x{r['size']}², {r['clips']} clips "
        f"per step, {r['device']} ({r['device_type']}, {precision}; {r['threads']} CPU threads), "
        f"median of {r['repeats']}",
        "",
        "| model | clips/s | s / step | clips/s vs TSN | peak GiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        vs = f"{row['vs_TSN']:.3f}x" if row["vs_TSN"] else "-"
        peak = f"{row['peak_GiB']:.1f}" if row.get("peak_GiB") is not None else "-"
        lines.append(f"| {row['model']} | {row['clips_per_s']:.2f} | {row['step_s']:.3f} | {vs} "
                     f"| {peak} |")  # fmt: skip
    return "\n".join(lines)


HELP = "clips/s of a full training step (SGD, clip) per model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--clips", type=int, default=None, help="clips per step (cpu 2, cuda 16)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="+", default=None, help="a subset, e.g. --only TSN TIN")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 on the GPU")
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.device, args.size, args.frames, args.clips, args.repeats, args.only,
                 args.bf16)  # fmt: skip
    return emit(result, table(result), args.json)
