"""`vidtempo bench plan`: what planning a run's data costs at the zoo's scale, before and after
each rank made only its own units — the start-up time and memory of one rank's dataset plan
(each worker, at every worker-group start) and of the driver's check of the run (steps per epoch).

The input is a synthetic manifest at Kinetics-400's scale (no videos: the plan reads the manifest
and its recorded row-group sizes only): `--videos` in shards of 64, row groups of 8, `--epochs`
epochs over `--world` workers.

  before   pipeline.plan(...) of every rank, of which a worker kept its own (`[rank]`); the
           driver counted the steps over the same whole plan
  after    pipeline.plan(..., rank): that rank's units alone; the driver counts rows per rank and
           epoch from the row-group sizes (pipeline.rows_per_rank), making no unit

Time: the median of `--rounds`; memory: tracemalloc's peak over one more round (Python objects).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc

from vidtempo.bench import emit

HELP = "a run's data plan at Kinetics-400's scale: time and memory per rank, before and after"


def manifest(out: str, videos: int, per_shard: int = 64, row_group: int = 8) -> None:
    from vidtempo.data.schema import SCHEMA_VERSION

    shards = []
    for k, start in enumerate(range(0, videos, per_shard)):
        n = min(per_shard, videos - start)
        shards.append({"file": f"part-{k:05d}.parquet", "rows": n, "bytes": 0,
                       "row_groups": [min(row_group, n - i) for i in range(0, n, row_group)]})  # fmt: skip
    data = {"schema_version": SCHEMA_VERSION, "dataset": "bench", "split": "train", "classes": ["c"] * 400,
            "storage": "video", "num_videos": videos, "num_quarantined": 0, "shards": shards,
            "order": {"kind": "shuffled", "seed": 0}}  # fmt: skip
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(data, f)


def measure(fn, rounds: int) -> dict:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": statistics.median(times), "peak_mb": peak / 2**20}


def run(videos: int = 240_000, epochs: int = 100, world: int = 32, rounds: int = 3) -> dict:
    from vidtempo.data import pipeline

    with tempfile.TemporaryDirectory() as out:
        manifest(out, videos)
        span = range(epochs)

        def rank_before():
            return pipeline.plan(out, "train", span, 0, world)[0]

        def rank_after():
            return pipeline.plan(out, "train", span, 0, world, rank=0)

        def driver_before():
            return pipeline.steps_per_epoch(pipeline.plan(out, "train", span, 0, world), 8)

        def driver_after():
            groups = pipeline.split_groups(out, "train")
            return int(pipeline.rows_per_rank(groups, span, 0, world, 1).min()) // 8

        assert rank_before() == rank_after() and driver_before() == driver_after()
        units = len(rank_after())
        rows = {"a worker's dataset plan (each rank, each start)": (rank_before, rank_after),
                "the driver's steps per epoch": (driver_before, driver_after)}
        result = {"videos": videos, "row_groups": -(-videos // 8), "epochs": epochs,
                  "world": world, "units_per_rank": units, "rows": {}}  # fmt: skip
        for name, (before, after) in rows.items():
            b, a = measure(before, rounds), measure(after, rounds)
            result["rows"][name] = {"before": b, "after": a,
                                    "speedup": b["seconds"] / a["seconds"],
                                    "memory_ratio": b["peak_mb"] / max(a["peak_mb"], 1e-6)}  # fmt: skip
    return result


def table(r: dict) -> str:
    lines = [f"{r['videos']:,} videos in {r['row_groups']:,} row groups, {r['epochs']} epochs, "
             f"{r['world']} workers: {r['units_per_rank']:,} units a rank", "",
             "| what | before: s | after: s | faster | before: peak MB | after: peak MB | less memory |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, x in r["rows"].items():
        b, a = x["before"], x["after"]
        lines.append(f"| {name} | {b['seconds']:.3f} | {a['seconds']:.3f} | {x['speedup']:.0f}× | "
                     f"{b['peak_mb']:.0f} | {a['peak_mb']:.1f} | {x['memory_ratio']:.0f}× |")  # fmt: skip
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", type=int, default=240_000, help="default: Kinetics-400's train")
    p.add_argument("--epochs", type=int, default=100, help="default 100 (TANet's K400 recipe)")
    p.add_argument("--world", type=int, default=32, help="workers (default 32: the zoo's 8x4)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.videos, args.epochs, args.world, args.rounds)
    return emit(result, table(result), args.json)
