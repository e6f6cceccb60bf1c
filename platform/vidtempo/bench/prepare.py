"""`vidtempo bench prepare`: videos/s of `vidtempo prepare` on this machine's process pool and as
Ray tasks (`--ray`, one task per shard) over the same inputs and CPUs, timed in one run, and
what that per-video cost means for converting Kinetics-400 and Something-Something V1 on N
decode nodes.

Inputs made here, shaped like the datasets (the cost of a conversion is decoding every frame
once, to validate it):
  kinetics-like   mp4 (H.264, lossy), 250 frames (10 s at 25 fps) at 256², kept as video bytes
  sthv1-like      rawframe folders, 36 JPEG frames at 176×100 (sthv1's median length and size)
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

from vidtempo.bench import emit
from vidtempo.data import convert_worker, prepare, synthetic
from vidtempo.data.convert import Options
from vidtempo.machine import cpu_name
from vidtempo.report.plan import KNOWN_SIZES

SHAPES = {"kinetics-like": (250, 256, 256), "sthv1-like": (36, 100, 176)}  # frames, h, w
DATASETS = {"kinetics-like": "kinetics400", "sthv1-like": "sthv1"}
NODE_CORES = 32  # cluster.yaml's cpu-decode node: c6i.8xlarge


def _clip(i: int, frames: int, h: int, w: int) -> np.ndarray:
    video = synthetic.render(i % len(synthetic.CLASSES), np.random.default_rng(i), frames, max(h, w))
    return np.ascontiguousarray(video[:, :h, :w])


def make_inputs(root: Path, n: int) -> dict[str, tuple[Path, Path]]:
    """(list file, root) of each kind; made once."""
    from PIL import Image

    out = {}
    for kind, (frames, h, w) in SHAPES.items():
        folder = root / kind
        listing = root / f"{kind}.txt"
        out[kind] = (listing, folder)
        if listing.exists() and len(listing.read_text().splitlines()) == n:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            video = _clip(i, frames, h, w)
            if kind == "sthv1-like":
                (folder / f"{i:05d}").mkdir(exist_ok=True)
                for t, arr in enumerate(video):
                    buf = io.BytesIO()
                    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
                    (folder / f"{i:05d}" / f"img_{t + 1:05d}.jpg").write_bytes(buf.getvalue())
                lines.append(f"{i:05d} {frames} {i % len(synthetic.CLASSES)}")
            else:
                (folder / f"{i:05d}.mp4").write_bytes(convert_worker._encode(list(video), (h, w), 25, None))
                lines.append(f"{i:05d}.mp4 {i % len(synthetic.CLASSES)}")
        listing.write_text("\n".join(lines) + "\n")
    return out


def _convert(kind: str, listing: Path, root: Path, out: Path, cpus: int, per_shard: int,
             ray: bool) -> float:  # fmt: skip
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    opts = Options(out=out, dataset=kind, split="train", workers=cpus, videos_per_shard=per_shard,
                   progress=False, classes=list(synthetic.CLASSES))  # fmt: skip
    address = "" if ray else None
    t0 = time.perf_counter()
    if kind == "sthv1-like":
        m = prepare.prepare_rawframes(listing, root, opts, ray_address=address)
    else:
        m = prepare.prepare_videos(listing, root, opts, ray_address=address)
    seconds = time.perf_counter() - t0
    assert m["num_quarantined"] == 0, m
    return seconds


def run(workdir: str | Path, videos: int = 32, cpus: int = 2, per_shard: int = 8,
        rounds: int = 2) -> dict:  # fmt: skip
    import ray

    workdir = Path(workdir)
    inputs = make_inputs(workdir / "inputs", videos)
    if not ray.is_initialized():
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    for kind, (listing, root) in inputs.items():
        times: dict[str, list[float]] = {"local pool": [], "ray tasks": []}
        for r in range(rounds + 1):  # round 0 warms up (imports, Ray workers, page cache)
            for variant in times:
                s = _convert(kind, listing, root, workdir / "out" / kind, cpus, per_shard,
                             variant == "ray tasks")  # fmt: skip
                if r:
                    times[variant].append(s)
        local = videos / float(np.median(times["local pool"]))
        for variant, ts in times.items():
            rate = videos / float(np.median(ts))
            train, val, _ = KNOWN_SIZES[DATASETS[kind]]
            core_s = cpus / rate  # core-seconds per video
            rows.append({"kind": kind, "variant": variant, "videos_per_s": rate,
                         "vs_local": rate / local, "core_s_per_video": core_s,
                         "dataset": DATASETS[kind], "dataset_videos": train + val,
                         "minutes_on_nodes": {str(n): (train + val) * core_s / (n * NODE_CORES) / 60
                                              for n in (1, 4, 8)}})  # fmt: skip
    return {"benchmark": "prepare videos/s", "device": cpu_name(), "cpus": cpus,
            "videos": videos, "per_shard": per_shard, "rounds": rounds, "shapes": SHAPES,
            "node_cores": NODE_CORES, "rows": rows}  # fmt: skip


def table(result: dict) -> str:
    lines = [
        f"`vidtempo prepare` of {result['videos']} inputs per kind, {result['per_shard']} per "
        f"shard, {result['cpus']} CPUs, median of {result['rounds']} rounds, {result['device']}",
        "",
        "| inputs | variant | videos/s | vs local pool | core-s per video |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['variant']} | {r['videos_per_s']:.2f} | "
                     f"{r['vs_local']:.2f}x | {r['core_s_per_video']:.3f} |")  # fmt: skip
    lines += ["", f"At the `ray tasks` cost per video, on N decode nodes of {result['node_cores']} "
              "cores (cluster.yaml's cpu-decode):", "",
              "| dataset | videos (train + val) | 1 node | 4 nodes | 8 nodes |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["rows"]:
        if r["variant"] == "ray tasks":
            m = r["minutes_on_nodes"]
            lines.append(f"| {r['dataset']} | {r['dataset_videos']:,} | {m['1']:.1f} min | "
                         f"{m['4']:.1f} min | {m['8']:.1f} min |")  # fmt: skip
    return "\n".join(lines)


HELP = ("videos/s of `prepare`: local process pool vs Ray tasks, and the K400 / sthv1 "
        "conversion on N decode nodes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="bench/prepare", help="where the inputs are made")
    p.add_argument("--videos", type=int, default=32, help="inputs of each kind")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--per-shard", type=int, default=8, help="videos per shard (per Ray task)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.workdir, args.videos, args.cpus, args.per_shard, args.rounds)
    return emit(result, table(result), args.json)
