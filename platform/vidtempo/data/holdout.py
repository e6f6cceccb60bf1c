"""The held-out part of train/ that a sweep ranks its trials on.

    held_rows(train_dir, 0.1)  →  {(shard, row group): [row, …]}  the videos held out

Chosen per class (stratified) and by video id alone (the order of a hash of each id), so the
same shards give the same split on every node, in every trial and after a resume, whatever the
shard layout. A class keeps at least one video to train on and, with two or more, gives at least
one to the held-out part. The trials train on the rest of train/; val/ is never read by them.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict

import pyarrow.parquet as pq

from vidtempo import storage
from vidtempo.data.schema import DataError, read_manifest, shard_paths


def count(fraction: float, videos: int) -> int:
    """Videos of a class of `videos` held out at `fraction`: round(fraction × videos), at
    least 1 when the class has 2 or more, never all of them."""
    if videos < 2 or fraction <= 0:
        return 0
    return min(videos - 1, max(1, round(fraction * videos)))


def order_key(video_id: str) -> str:
    return hashlib.sha1(video_id.encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def held_rows(train_dir: str, fraction: float) -> dict[tuple[str, int], tuple[int, ...]]:
    """The held-out videos of the shards under `train_dir`, as row indexes per (shard path, row
    group); reads only the video_id and label columns."""
    if not 0 < fraction < 1:
        raise DataError(f"a held-out fraction must lie in (0, 1), got {fraction}")
    train_dir = storage.normalize(train_dir)
    by_class: dict[int, list[tuple[str, str, int, int]]] = defaultdict(list)
    for path in shard_paths(train_dir, read_manifest(train_dir)):
        with storage.open_input_file(path) as f:
            shard = pq.ParquetFile(f)
            for group in range(shard.metadata.num_row_groups):
                t = shard.read_row_group(group, columns=["video_id", "label"]).to_pydict()
                for row, (vid, label) in enumerate(zip(t["video_id"], t["label"])):
                    by_class[int(label)].append((order_key(vid), path, group, row))
    held: dict[tuple[str, int], list[int]] = defaultdict(list)
    for members in by_class.values():
        members.sort()
        for _, path, group, row in members[: count(fraction, len(members))]:
            held[path, group].append(row)
    if not held:
        raise DataError(f"{train_dir} has no class with 2 or more videos: nothing can be held "
                        "out to rank a sweep's trials on; rank on val/ (--rank-on val)")  # fmt: skip
    return {k: tuple(sorted(v)) for k, v in held.items()}


def select(rows: int, held: tuple[int, ...], side: str) -> tuple[int, ...] | None:
    """The rows of a row group of `rows` videos that one side reads: "held" the held-out ones,
    "rest" the others; None: all of them."""
    if side == "held":
        return held
    if not held:
        return None
    gone = set(held)
    return tuple(i for i in range(rows) if i not in gone)
