"""`vidtempo bench shuffle`: how far the classes of a worker's training batches are from those of
a global shuffle (the zoo's `DistributedSampler(shuffle=True)`), on a class-sorted list.

The list: `--classes` classes × `--per-class` videos, grouped by class as Kinetics' lists and
CSVs are. It goes through vidtempo's own converter (`convert`, with a shard writer that keeps the
labels only: no videos), then its own training order: the row groups of every epoch dealt to the
workers (`pipeline.plan`) and mixed in each worker's buffer (`batches.epoch_batches`). Three
orders, side by side:

  list order       the shards hold the list's order (`prepare --list-order`; before the seeded
                   order was the default)
  shuffled         the shards hold a seeded permutation of the list (`prepare`'s default)
  global shuffle   every epoch a permutation of all videos, rank r taking every world-th one
                   and cutting its batches in order (DistributedSampler)

Per worker and epoch: the distinct classes of each batch, and the classes two consecutive
batches share; their means over every worker, epoch and batch.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from vidtempo.bench import emit

HELP = "classes per training batch and consecutive-batch overlap vs a global shuffle"


def class_sorted_list(classes: int, per_class: int) -> list[dict]:
    return [{"video_id": f"v{c:04d}_{i:03d}", "label": c}
            for c in range(classes) for i in range(per_class)]  # fmt: skip


def inputs_only(kept: dict):
    """A `convert` shard writer (run_chunks) that writes no video: each shard's manifest entry,
    its inputs kept in `kept` by shard name, in the order the shard would hold them."""
    from vidtempo.data import convert as conv

    def run_chunks(todo, opts, out, bar):
        for name, chunk in todo:
            kept[name] = chunk
            groups = [min(conv.ROW_GROUP, len(chunk) - i)
                      for i in range(0, len(chunk), conv.ROW_GROUP)]  # fmt: skip
            yield name, {"file": name, "rows": len(chunk), "bytes": 0, "row_groups": groups}, []

    return run_chunks


def our_batches(jobs: list[dict], order_seed: int | None, world: int, batch: int,
                epochs: int, videos_per_shard: int, seed: int) -> list[list[np.ndarray]]:  # fmt: skip
    """Each worker's label batches, epoch after epoch, as vidtempo's training draws them."""
    from vidtempo.data import convert as conv
    from vidtempo.data import pipeline
    from vidtempo.data.batches import epoch_batches

    chunks: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as out:
        opts = conv.Options(out=out, dataset="bench", split="train", storage="frames",
                            videos_per_shard=videos_per_shard, classes=[""] * (1 + max(
                                j["label"] for j in jobs)), progress=False,
                            order_seed=order_seed)  # fmt: skip
        conv.convert(jobs, opts, {"kind": "bench"}, inputs_only(chunks))
        units = pipeline.plan(out, "train", range(epochs), seed, world)
    labels = {name: [j["label"] for j in chunk] for name, chunk in chunks.items()}
    steps = pipeline.steps_per_epoch(units, batch)

    class Stream:  # what a worker's dataset shard streams: its units' rows, in unit order
        def __init__(self, rank_units):
            self.rank_units = rank_units

        def iter_batches(self, **_):
            for u in self.rank_units:
                name = u["path"].rsplit("/", 1)[-1]
                rows = labels[name][u["row_group"] * conv.ROW_GROUP:][: u["rows"]]
                yield {"label": np.array(rows), "epoch": np.full(len(rows), u["epoch"])}

    return [[b["label"] for b in epoch_batches(Stream(rank), batch, steps, 0)]
            for rank in units]  # fmt: skip


def global_batches(n_videos: int, labels: np.ndarray, world: int, batch: int,
                   epochs: int, seed: int) -> list[list[np.ndarray]]:  # fmt: skip
    out: list[list[np.ndarray]] = [[] for _ in range(world)]
    per_rank = n_videos // world
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, epoch]).permutation(n_videos)
        for r in range(world):
            mine = labels[perm[r::world][:per_rank]]
            out[r] += [mine[i : i + batch] for i in range(0, per_rank - batch + 1, batch)]
    return out


def measure(batches: list[list[np.ndarray]], steps_per_epoch: int) -> dict:
    distinct, shared = [], []
    for rank in batches:
        for i, b in enumerate(rank):
            distinct.append(len(set(b.tolist())))
            if i % steps_per_epoch:  # consecutive within an epoch
                shared.append(len(set(b.tolist()) & set(rank[i - 1].tolist())))
    return {"distinct": float(np.mean(distinct)), "shared": float(np.mean(shared)),
            "batches": len(distinct)}  # fmt: skip


def run(classes: int = 174, per_class: int = 24, world: int = 8, batch: int = 8, epochs: int = 6,
        videos_per_shard: int = 64, seed: int = 0) -> dict:  # fmt: skip
    jobs = class_sorted_list(classes, per_class)
    labels = np.array([j["label"] for j in jobs])
    result = {"classes": classes, "videos": len(jobs), "world": world, "batch": batch,
              "epochs": epochs, "videos_per_shard": videos_per_shard, "rows": {}}  # fmt: skip
    for name, order_seed in (("list order", None), ("shuffled", 0)):
        b = our_batches(jobs, order_seed, world, batch, epochs, videos_per_shard, seed)
        result["rows"][name] = measure(b, len(b[0]) // epochs)
    g = global_batches(len(jobs), labels, world, batch, epochs, seed)
    result["rows"]["global shuffle"] = measure(g, len(g[0]) // epochs)
    ref = result["rows"]["global shuffle"]
    for row in result["rows"].values():
        row["distinct_ratio"] = row["distinct"] / ref["distinct"]
        # the excess of shared classes over the global shuffle's, in classes of a batch
        row["shared_excess"] = (row["shared"] - ref["shared"]) / batch
    return result


def table(r: dict) -> str:
    lines = [f"{r['videos']} videos of {r['classes']} classes in a class-sorted list, "
             f"{r['videos_per_shard']} a shard; {r['world']} workers × {r['batch']} videos a "
             f"batch, {r['epochs']} epochs", "",
             "| order | distinct classes / batch | vs global | classes shared by consecutive "
             "batches | excess over global (share of a batch) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, x in r["rows"].items():
        lines.append(f"| {name} | {x['distinct']:.2f} | {x['distinct_ratio']:.3f} | "
                     f"{x['shared']:.2f} | {x['shared_excess'] * 100:+.1f}% |")  # fmt: skip
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", type=int, default=174, help="default 174 (Something-Something)")
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--world", type=int, default=8, help="training workers")
    p.add_argument("--batch", type=int, default=8, help="videos per batch and worker")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--videos-per-shard", type=int, default=64)
    p.add_argument("--json", default=None)


def main(args: argparse.Namespace) -> int:
    result = run(args.classes, args.per_class, args.world, args.batch, args.epochs,
                 args.videos_per_shard)  # fmt: skip
    return emit(result, table(result), args.json)
