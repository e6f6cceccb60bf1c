"""`vidtempo bench data`: clips/s of the Ray Data pipeline against a torch DataLoader doing the
same sample → decode → augment (TIN's train pipeline, 8 frames at 224²) over the same shards,
with the same number of CPUs, for both storage kinds; plus the pure decode cost per clip.

Variants, each timed over `epochs` passes of the train split, start-up included (after one
warm-up round):
  dataloader      torch DataLoader, `cpus` persistent worker processes, batch 4 (MMAction2's way)
  ray-default     read_parquet → map_batches(function) with Ray Data's defaults
  ray-vidtempo    vidtempo.data.pipeline.build: one pipeline streaming all epochs, one task
                  per Parquet row group (read fused with decode), no per-operator CPU reservation
  ray-vidtempo-s3 the same, the shards in a bucket of a local S3 server (`--s3`: moto's
                  standalone server on 127.0.0.1, reached through AWS_ENDPOINT_URL), timed in
                  the same rounds as the local copy: `vs local` is the cost of object storage
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.data.convert import Options
from vidtempo.data.prepare import prepare_synthetic, prepare_videos
from vidtempo.data.sampling import sample_indices
from vidtempo.data.schema import read_manifest, shard_paths
from vidtempo.machine import cpu_name

BATCH = 4


class ShardDataset:
    """Map-style dataset over shard rows (what a torch DataLoader indexes); each worker opens
    the Parquet files itself."""

    def __init__(self, data_dir: Path, transform):
        self.paths = shard_paths(data_dir, read_manifest(data_dir))
        self.index = []  # (file, row group, row)
        for f, path in enumerate(self.paths):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                self.index += [(f, g, r) for r in range(meta.row_group(g).num_rows)]
        self.transform = transform
        self._files: dict[int, pq.ParquetFile] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        f, g, r = self.index[i]
        if f not in self._files:
            self._files[f] = pq.ParquetFile(self.paths[f])
        row = self._files[f].read_row_group(g).slice(r, 1).to_pylist()[0]
        x, label = self.transform.one(row)
        return x, label


def _dataloader_pass(data_dir, cfg, storage, cpus, epochs) -> int:
    import torch

    from vidtempo.data.transform import VideoTransform

    ds = ShardDataset(data_dir, VideoTransform(cfg.data.train, cfg.data, storage))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=cpus,
                                         persistent_workers=True)  # fmt: skip
    return sum(len(y) for _ in range(epochs) for _, y in loader)


def _ray_default_pass(data_dir, cfg, storage, epochs) -> int:
    import ray

    from vidtempo.data.transform import VideoTransform

    transform = VideoTransform(cfg.data.train, cfg.data, storage)
    ds = ray.data.read_parquet(shard_paths(data_dir, read_manifest(data_dir))).map_batches(
        transform
    )
    return sum(len(b["label"]) for _ in range(epochs)
               for b in ds.iter_batches(batch_size=BATCH, batch_format="numpy"))  # fmt: skip


def _ray_vidtempo_pass(data_dir, cfg, cpus, epochs) -> int:
    from vidtempo.data import pipeline

    # one pipeline streams every epoch, as a training worker consumes it
    ds = pipeline.build(data_dir, cfg, "train", epochs=range(epochs), data_cpus=cpus)
    return sum(len(b["label"]) for b in ds.iter_batches(batch_size=BATCH, batch_format="numpy"))


def _decode_cost(data_dir, cfg, storage, n=32) -> tuple[float, float]:
    """Seconds per clip: decoding the 8 sampled frames alone, and the whole transform."""
    from vidtempo.data.decode import decode_jpegs, decode_video
    from vidtempo.data.transform import VideoTransform, row_rng

    table = pq.read_table(shard_paths(data_dir, read_manifest(data_dir))[0]).to_pylist()[:n]
    transform = VideoTransform(cfg.data.train, cfg.data, storage)
    t0 = time.perf_counter()
    for row in table:
        inds = sample_indices(
            row["num_frames"], cfg.data.train.sampler, row_rng(0, 0, row["video_id"])
        )
        if storage == "frames":
            decode_jpegs(row["frames"], inds.reshape(-1))
        else:
            decode_video(row["video"], inds.reshape(-1))
    t1 = time.perf_counter()
    for row in table:
        transform.one(row)
    t2 = time.perf_counter()
    return (t1 - t0) / len(table), (t2 - t1) / len(table)


def _local_ray(cpus: int) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def _on_s3(workdir: Path, dirs: dict[str, Path]) -> tuple[object, dict[str, str]]:
    """A local S3 server holding a copy of each shard folder; this process and the Ray
    workers it starts reach it through the environment, as a cluster reaches S3."""
    import os

    from vidtempo.data.prepare import upload
    from vidtempo.tooling.servers import S3Server

    server = S3Server(workdir)
    os.environ.update(server.env)
    bucket = server.make_bucket("vidtempo-bench")
    return server, {k: upload(d, f"{bucket}/{k}") for k, d in dirs.items()}


def _measure(dirs, remote, server, cfg, cpus, rounds, epochs) -> list[dict]:
    """Every variant over each storage kind, round-robin; one row per variant and kind."""
    results = []
    for storage, data_dir in dirs.items():
        variants = {
            "dataloader": lambda d=data_dir, s=storage: _dataloader_pass(d, cfg, s, cpus, epochs),
            "ray-default": lambda d=data_dir, s=storage: _ray_default_pass(d, cfg, s, epochs),
            "ray-vidtempo": lambda d=data_dir: _ray_vidtempo_pass(d, cfg, cpus, epochs),
        }
        if remote:
            variants["ray-vidtempo-s3"] = lambda d=remote[storage]: _ray_vidtempo_pass(d, cfg, cpus, epochs)
        times: dict[str, list[float]] = {k: [] for k in variants}
        served: list[float] = []  # CPU seconds the S3 server used, per timed S3 pass
        clips = {}
        for r in range(rounds + 1):  # round 0 warms up (imports, actor start, page cache)
            for name, fn in variants.items():
                cpu0 = server.cpu_seconds() if name == "ray-vidtempo-s3" else 0.0
                t0 = time.perf_counter()
                clips[name] = fn()
                if r:
                    times[name].append(time.perf_counter() - t0)
                    if name == "ray-vidtempo-s3":
                        served.append(server.cpu_seconds() - cpu0)
        decode, whole = _decode_cost(data_dir, cfg, storage)
        rates = {name: clips[name] / float(np.median(times[name])) for name in variants}
        for name, rate in rates.items():
            results.append({"storage": storage, "variant": name, "clips": clips[name],
                            "clips_per_s": rate, "vs_dataloader": rate / rates["dataloader"],
                            "vs_local": rate / rates["ray-vidtempo"]})  # fmt: skip
        if served:  # on these same CPUs, the S3 server's share of them during the S3 passes
            results[-1]["server_cpu_frac"] = float(np.median(served) / (cpus * np.median(times["ray-vidtempo-s3"])))
        results.append({"storage": storage, "variant": "decode only (1 CPU)", "ms_per_clip": decode * 1e3,
                        "transform_ms_per_clip": whole * 1e3})  # fmt: skip
    return results


def run(workdir: str | Path, per_class: int = 32, size: int = 128, cpus: int = 2, rounds: int = 2,
        epochs: int = 3, s3: bool = False) -> dict:  # fmt: skip
    import torch

    workdir = Path(workdir)
    if not (workdir / "video" / "train" / "manifest.json").exists():
        prepare_synthetic(workdir / "video", {"train": per_class, "val": 1}, size=size,
                          workers=cpus, storage_kind="video")  # fmt: skip
    if not (workdir / "frames" / "manifest.json").exists():
        opts = Options(out=workdir / "frames", dataset="synthetic", split="train", storage="frames",
                       workers=cpus, classes=read_manifest(workdir / "video" / "train")["classes"])  # fmt: skip
        prepare_videos(
            workdir / "video" / "raw" / "train_list.txt", workdir / "video" / "raw" / "videos", opts
        )
    dirs = {"video": workdir / "video" / "train", "frames": workdir / "frames"}
    classes = len(read_manifest(dirs["video"])["classes"])  # the synthetic set's (12 since v4)
    cfg = C.override(C.load("tin_r50_1x1x8_40e_sthv1_rgb"), {"model.num_classes": classes})
    torch.set_num_threads(1)  # the loaders' own CPUs do the work, as in training
    server, remote = _on_s3(workdir, dirs) if s3 else (None, {})
    try:
        _local_ray(cpus)  # after the S3 endpoint is in the environment: the workers inherit it
        results = _measure(dirs, remote, server, cfg, cpus, rounds, epochs)
    finally:
        if server is not None:
            server.stop()
    return {"benchmark": "data pipeline clips/s", "device": cpu_name(), "cpus": cpus, "batch": BATCH,
            "size": size, "videos": len(ShardDataset(dirs["video"], None)), "rounds": rounds, "epochs": epochs,
            "rows": results}  # fmt: skip


def table(result: dict) -> str:
    lines = [
        f"TIN train pipeline (8 frames, MultiScaleCrop → 224²), {result['epochs']} epochs of "
        f"{result['videos']} synthetic {result['size']}² videos, {result['cpus']} CPUs, batch "
        f"{result['batch']}, {result['device']}",
        "",
        "| storage | variant | clips/s | vs DataLoader | vs ray-vidtempo (local disk) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "clips_per_s" in r:
            lines.append(
                f"| {r['storage']} | {r['variant']} | {r['clips_per_s']:.1f} | "
                f"{r['vs_dataloader']:.2f}x | {r['vs_local']:.2f}x |"
            )
    for r in result["rows"]:
        if "server_cpu_frac" in r:
            lines.append(f"\n{r['storage']}: the S3 server (on the same CPUs) used "
                         f"{r['server_cpu_frac']:.0%} of them during the S3 passes")  # fmt: skip
    lines += [
        "",
        "| storage | decode 8 frames, ms/clip | whole transform, ms/clip (1 CPU) |",
        "|---|---:|---:|",
    ]
    for r in result["rows"]:
        if "ms_per_clip" in r:
            lines.append(
                f"| {r['storage']} | {r['ms_per_clip']:.1f} | {r['transform_ms_per_clip']:.1f} |"
            )
    return "\n".join(lines)


HELP = "Ray Data pipeline vs a torch DataLoader, clips/s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="bench/data", help="where the benchmark dataset is made")
    p.add_argument("--per-class", type=int, default=32, help="synthetic train videos per class")
    p.add_argument("--size", type=int, default=128, help="synthetic frame size")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="passes over the data per timing")
    p.add_argument("--s3", action="store_true", help="also stream the shards from a bucket of a "
                   "local S3 server (moto), timed beside the local copy")  # fmt: skip
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.workdir, args.per_class, args.size, args.cpus, args.rounds, args.epochs,
                 args.s3)  # fmt: skip
    return emit(result, table(result), args.json)
