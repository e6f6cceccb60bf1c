"""`vidtempo bench decode RECIPE`: how many decode CPUs a GPU worker of RECIPE needs — the
recipe's own train pipeline (sample → decode → augment, `VideoTransform.one`) timed on one CPU over
inputs shaped like its dataset as distributed, against what one GPU's training step consumes.

Inputs made here (the same shapes as `bench prepare`):
  sthv1-like      36 JPEG frames at 176×100 (Something-Something V1's median length and size),
                  packed as they are (`frames` shards)
  kinetics-like   an H.264 mp4 of 250 frames at 256² (`video` shards), for the Kinetics recipes

The GPU's rate is `--gpu-clips-per-s` when a GPU measured it (`make gpu-check`); without one it
is NVIDIA's published single-GPU ResNet-50 v1.5 training throughput at 224² on an A100 80GB
(DeepLearningExamples, PyTorch ConvNets README, pytorch-21.03 container: 938 img/s TF32, 2470
img/s mixed precision) divided by the clip's frames — PUBLISHED, not measured here: a 2D R50 on
T frames is T images, and TIN's and TSM's shifts add a few percent (BENCHMARKS.md §2).
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.machine import cpu_name

PUBLISHED = {  # images/s of one A100 80GB, ResNet-50 v1.5 training (NVIDIA DeepLearningExamples)
    "A100 TF32 (fp32 recipe)": 938.0,
    "A100 mixed precision": 2470.0,
}
# CPUs over GPUs less the worker's own: what `--gpu` gives each worker (preflight.settle)
NODES = {"p4d.24xlarge (8 × A100)": 96 / 8 - 1, "p5.48xlarge (8 × H100)": 192 / 8 - 1}


def make_rows(kind: str, n: int) -> tuple[list[dict], str]:
    """`n` shard rows shaped like the dataset, and the storage kind."""
    from PIL import Image

    from vidtempo.bench.prepare import SHAPES, _clip
    from vidtempo.data import convert_worker

    frames, h, w = SHAPES[kind]
    rows = []
    for i in range(n):
        video = _clip(i, frames, h, w)
        row = {"video_id": f"{i:05d}", "num_frames": frames, "label": 0}
        if kind == "sthv1-like":
            jpegs = []
            for arr in video:
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG", quality=90)
                jpegs.append(buf.getvalue())
            row["frames"] = jpegs
        else:
            row["video"] = convert_worker._encode(list(video), (h, w), 25, None)
        rows.append(row)
    return rows, "frames" if kind == "sthv1-like" else "video"


def run(recipe: str, videos: int = 16, rounds: int = 3, gpu_clips_per_s: float | None = None,
        gpu_source: str = "") -> dict:  # fmt: skip
    import torch

    from vidtempo.data.transform import VideoTransform

    torch.set_num_threads(1)  # one CPU, as one decode task has
    cfg = C.load(recipe)
    kind = "kinetics-like" if "kinetics" in cfg.name else "sthv1-like"
    rows, storage = make_rows(kind, videos)
    transform = VideoTransform(cfg.data.train, cfg.data, storage, seed=0)
    for row in rows[:2]:  # warm-up: imports, decoder set-up
        transform.one(row)
    per_round = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for row in rows:
            transform.one(row, epoch=r + 1)
        per_round.append((time.perf_counter() - t0) / len(rows))
    ms = 1000 * float(np.median(per_round))
    frames = transform.frames_per_clip
    if gpu_clips_per_s:
        gpus = {gpu_source or "measured (--gpu-clips-per-s)": gpu_clips_per_s}
    else:
        gpus = {f"{k}, PUBLISHED": v / frames for k, v in PUBLISHED.items()}
    rows_out = [{"gpu": k, "clips_per_s": v, "cpus_needed": v * ms / 1000,
                 **{node: cpus * 1000 / ms / v for node, cpus in NODES.items()}}
                for k, v in gpus.items()]  # fmt: skip
    return {"benchmark": "decode CPUs per GPU", "recipe": cfg.name, "inputs": kind,
            "storage": storage, "frames_per_clip": frames, "videos": videos, "rounds": rounds,
            "device": cpu_name(), "ms_per_clip": ms, "clips_per_s_per_cpu": 1000 / ms,
            "rows": rows_out}  # fmt: skip


def table(r: dict) -> str:
    lines = [f"{r['recipe']}: its train pipeline on {r['inputs']} inputs ({r['storage']}, "
             f"{r['frames_per_clip']} frames a clip), one CPU ({r['device']}): "
             f"{r['ms_per_clip']:.1f} ms a clip = {r['clips_per_s_per_cpu']:.0f} clips/s per CPU",
             "",
             "| GPU's step | clips/s | decode CPUs it needs | " + " | ".join(
                 f"{n}: --gpu default's share" for n in NODES) + " |",
             "|---|---:|---:|" + "---:|" * len(NODES)]  # fmt: skip
    for x in r["rows"]:
        lines.append(f"| {x['gpu']} | {x['clips_per_s']:.0f} | {x['cpus_needed']:.1f} | "
                     + " | ".join(f"{x[n]:.2f}×" for n in NODES) + " |")  # fmt: skip
    lines.append("")
    lines.append("(share: the decode rate the --gpu default gives a worker over what its GPU "
                 "consumes; below 1× the GPU waits for data)")
    return "\n".join(lines)


HELP = "decode CPUs a GPU worker of a recipe needs: its train pipeline per CPU vs a GPU's step"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default="tin_r50_1x1x8_40e_sthv1_rgb",
                   help="zoo config (default: TIN-R50 on Something-Something V1)")
    p.add_argument("--videos", type=int, default=16, help="inputs made (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="timed passes (the median is shown)")
    p.add_argument("--gpu-clips-per-s", type=float, default=None, help="a GPU's measured "
                   "training clips/s (gpu-check); default: NVIDIA's published A100 rate")  # fmt: skip
    p.add_argument("--gpu-source", default="", help="what measured --gpu-clips-per-s")
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.recipe, args.videos, args.rounds, args.gpu_clips_per_s, args.gpu_source)
    return emit(result, table(result), args.json)
