"""The Ray Data pipeline — the only module of vidtempo.data that imports Ray.

    read_parquet(shards) → map_batches(VideoTransform: sample → decode → augment, uint8)

Frames are decoded inside `map_batches`, never materialised as a dataset; blocks stay small
(a few videos each) because decoded clips are large. For training, one copy of the pipeline is
chained per epoch (`epoch` column), each with its own randomness and block order, so a worker
streams every epoch from one `get_dataset_shard` iterator. The CPUs Ray Data may use are capped
(`data_cpus`) so that decoding cannot starve the training workers, nor the reverse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from vidtempo.config import Config
from vidtempo.data.schema import DataError, read_manifest, shard_paths
from vidtempo.data.transform import VideoTransform


def check_classes(manifest: dict, cfg: Config, data_dir: str | Path) -> None:
    classes = manifest.get("classes") or []
    if len(classes) != cfg.model.num_classes:
        raise DataError(
            f"{data_dir} holds {len(classes)} classes but {cfg.name} is built for "
            f"model.num_classes={cfg.model.num_classes}; convert the right dataset or override "
            f"it with --set model.num_classes={len(classes)}"
        )


def _with_epoch(epoch: int):
    def add(table: pa.Table) -> pa.Table:
        return table.append_column("epoch", pa.array(np.full(len(table), epoch, dtype=np.int64)))

    return add


def build(
    data_dir: str | Path,
    cfg: Config,
    split: str = "train",
    epochs: range | None = None,
    seed: int = 0,
    backend: str = "decord",
    data_cpus: float | None = None,
    batch_size: int = 4,
) -> ray.data.Dataset:
    """The dataset of one split: `train` augments with the train pipeline over `epochs`;
    `val` and `test` run those pipelines once, in order."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    check_classes(manifest, cfg, data_dir)
    storage = manifest["storage"]
    pipe = {"train": cfg.data.train, "val": cfg.data.val, "test": cfg.data.test}[split]
    ctx = ray.data.DataContext.get_current()
    # decoded clips are large: small blocks keep the object store and memory bounded
    ctx.target_max_block_size = 64 * 1024 * 1024
    if data_cpus is not None:
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            cpu=data_cpus
        )
    columns = ["video_id", "label", "num_frames", "frames" if storage == "frames" else "video"]
    train = split == "train"
    epochs = epochs if (train and epochs is not None) else range(1)
    parts = []
    for epoch in epochs:  # cheap: only the shard reads are repeated, each with its epoch
        ds = ray.data.read_parquet(shard_paths(data_dir, manifest)).select_columns(columns)
        if train:
            ds = ds.randomize_block_order(seed=seed * 1000 + epoch)
        parts.append(
            ds.map_batches(_with_epoch(epoch), batch_format="pyarrow", zero_copy_batch=True)
        )
    if not parts:
        raise DataError("no epochs to stream: the run has already finished")
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    # sample → decode → augment in tasks of batch_size videos, fused with the reads: a
    # transform is cheap to build, so tasks need no actor pool (and no CPU held while idle)
    return ds.map_batches(
        VideoTransform(pipe, cfg.data, storage, seed, 0, backend),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
