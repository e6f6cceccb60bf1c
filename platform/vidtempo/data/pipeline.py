"""The Ray Data pipeline — the only module of vidtempo.data that imports Ray.

    row groups of the shards → map_batches(read + VideoTransform: sample → decode → augment)

Frames are decoded inside `map_batches`, never materialised as a dataset; blocks stay small
(one row group of videos each) because decoded clips are large. For training, the units of
every epoch are chained in one dataset (each with its epoch, so randomness is fresh per epoch
and seeded, and a per-epoch order), so a worker streams every epoch from one
`get_dataset_shard` iterator. The CPUs Ray Data may use are capped
(`data_cpus`) so that decoding cannot starve the training workers, nor the reverse.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from vidtempo import storage
from vidtempo.capacity import DATA_CPUS, DECODE_SHARE
from vidtempo.config import Config
from vidtempo.data.holdout import held_rows as holdout_rows
from vidtempo.data.holdout import select
from vidtempo.data.sampling import clip_bytes
from vidtempo.data.schema import DataError, check_classes, read_manifest, shard_paths
from vidtempo.data.transform import VideoTransform

_FOOTERS: dict[tuple[str, int], pq.FileMetaData] = {}  # per decode worker process


def read_row_group(path: str, group: int, columns: list[str]):
    """One row group of a shard (a local file or an object): its footer is read once per
    worker process and shard (keyed by path and size: a rewritten shard is read afresh), so a
    unit costs one ranged read of its columns; from a bucket that is one request fewer."""
    with storage.open_input_file(path) as f:
        key = (path, f.size())
        shard = pq.ParquetFile(f, metadata=_FOOTERS.get(key))
        if len(_FOOTERS) > 4096:
            _FOOTERS.clear()
        _FOOTERS[key] = shard.metadata
        return shard.read_row_group(group, columns=columns)


# A read of the data that fails in a training worker (the object store unreachable or erring
# past pyarrow's own retries) is tried again after 1, 2, 4, 8, 16 and 32 s — an outage of about a
# minute — before the stream gives up: a row group (returned whole or not at all, so no video is
# read twice), and the manifest and plan a worker reads as it builds each dataset. The driver's
# pre-flight does not wait: a URI that does not answer stops a run before it starts.
READ_RETRY_WAITS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def retrying(what: str, fn, *args, waits=READ_RETRY_WAITS):
    """fn(*args), again after each of `waits` seconds while it raises OSError (pyarrow's I/O
    errors, and vidtempo.storage's); each retry is a line in the worker's log."""
    for attempt, wait in enumerate((*waits, None)):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise  # not there: waiting does not bring it
        except OSError as exc:
            if wait is None:
                raise
            print(f"vidtempo: {what} failed ({str(exc)[:200]}); retry {attempt + 1} of "
                  f"{len(waits)} in {wait:.0f} s", flush=True)  # fmt: skip
            time.sleep(wait)


class ReadRowGroups:
    """Ray Data UDF: (shard, row group, epoch) units → decoded, augmented clips. Reading the
    row groups inside the task keeps reads and decoding fused; a task takes a few units."""

    def __init__(self, transform: VideoTransform, columns: list[str]):
        self.transform = transform
        self.columns = columns

    def __call__(self, units: dict) -> dict:
        outs = []
        passes = units.get("pass", np.zeros(len(units["path"]), dtype=np.int64))
        takes = units.get("take", [""] * len(units["path"]))
        for path, group, epoch, rep, take in zip(units["path"], units["row_group"], units["epoch"],
                                                 passes, takes):  # fmt: skip
            # read here, where it decodes
            table = retrying(f"reading {path} row group {group}", read_row_group, path,
                             int(group), self.columns)  # fmt: skip
            if take:  # one side of a held-out split: these rows of the group only
                table = table.take([int(i) for i in take.split(",")])
            batch = {k: np.asarray(v, dtype=object) for k, v in table.to_pydict().items()}
            batch["epoch"] = np.full(table.num_rows, int(epoch), dtype=np.int64)
            batch["pass"] = np.full(table.num_rows, int(rep), dtype=np.int64)
            outs.append(self.transform(batch))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


READ_AHEAD_CLIPS = 64
# A decode task takes consecutive row groups up to VIDEOS_PER_TASK videos and TASK_BYTES of
# decoded clips. Ray Data's streaming executor runs in the training worker (each rank streams
# its own dataset) and, while its tasks are many and in flight, its scheduling loop turns
# without pause and takes the worker's GIL from the training loop: the demo's TIN trained at
# a third of its speed until the stream's last task was done (the "slow early epochs": 17 of 24
# epochs with 8 videos a task, 1 of 8 with 512; bench demo, BENCHMARKS.md "The demo's time").
# Fewer tasks shorten that; a stream decoded ahead whole ends it (read_ahead). Small clips
# make big tasks; clips of 224² (1.2 MB) stay at one row group a task, so that the
# read-ahead (READ_AHEAD_CLIPS) still lets every decode CPU work.
VIDEOS_PER_TASK = 512
TASK_BYTES = 8 * 1024 * 1024
READ_AHEAD_MIN_BYTES = 16 * 1024 * 1024
# a training stream this small is decoded ahead whole (read_ahead), using at most
# 1/STORE_SHARE of the object store for all the workers' streams
WHOLE_STREAM_BYTES = 512 * 1024 * 1024
STORE_SHARE = 4


def quiet(ctx=None) -> None:
    """No per-dataset progress bars: a run streams several datasets per worker and epoch, and
    their bars would bury the training progress lines."""
    ctx = ctx or ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False


def row_groups(paths: list[str], recorded: list | None = None) -> list[tuple[str, int, int]]:
    """(shard, row group, rows) of every row group: the sizes the converter recorded in the
    manifest (`recorded`, one list per shard) where there are some, else each shard's footer."""
    out = []
    for p, sizes in zip(paths, recorded or [None] * len(paths)):
        if sizes is None:
            with storage.open_input_file(p) as f:
                meta = pq.ParquetFile(f).metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        out += [(p, g, n) for g, n in enumerate(sizes)]
    return out


def split_groups(data_dir: str | Path, split: str, holdout: float = 0.0) -> list[tuple]:
    """The row groups a split streams, as (shard, row group, rows, take): from the manifest (the
    sizes the converter recorded), less the held-out videos for `train` or only them for `val`
    with `holdout` (a fraction of the train/ folder `data_dir`, vidtempo.data.holdout); `take`
    names a unit's rows when it is one side of that split ("" for all of them)."""
    manifest = read_manifest(data_dir)
    recorded = [s.get("row_groups") for s in manifest["shards"] if s["rows"]]
    groups = [(*g, "") for g in row_groups(shard_paths(data_dir, manifest), recorded)]
    if holdout:
        held = holdout_rows(str(data_dir), holdout)
        side = "rest" if split == "train" else "held"
        groups = [(path, group, rows if take is None else len(take),
                   "" if take is None else ",".join(map(str, take)))
                  for path, group, rows, _ in groups
                  for take in [select(rows, held.get((path, group), ()), side)]]  # fmt: skip
        groups = [g for g in groups if g[2]]
    return groups


def epoch_order(n: int, seed: int, epoch: int, rep: int) -> np.ndarray:
    """The order of an epoch's (and pass's) `n` training units: the same on every rank."""
    return np.random.default_rng([seed, epoch] if rep == 0 else [seed, epoch, rep]).permutation(n)


def rank_units(groups: list[tuple], split: str, epochs: range, seed: int, world: int,
               repeats: int, rank: int) -> Iterator[dict]:  # fmt: skip
    """Worker `rank`'s units, one epoch after another (see `plan`): each epoch's order is drawn
    and this rank's every world-th unit of it made, never the other ranks' units."""
    train = split == "train"
    for epoch in epochs if train else range(1):
        for rep in range(repeats if train else 1):
            order = epoch_order(len(groups), seed, epoch, rep) if train else range(len(groups))
            for g in order[rank::world]:
                path, group, rows, take = groups[g]
                yield {"path": path, "row_group": group, "rows": rows, "epoch": epoch,
                       "pass": rep, "take": take}  # fmt: skip


def plan(data_dir: str | Path, split: str, epochs: range, seed: int = 0,
         world: int = 1, repeats: int = 1, holdout: float = 0.0,
         rank: int | None = None) -> list:  # fmt: skip
    """The units (row groups) each of `world` workers streams, epoch after epoch — or, with
    `rank`, that worker's alone (what its dataset is built from).

    Training units are shuffled per epoch with (seed, epoch) and dealt round-robin, so every
    worker sees different videos each epoch; with `repeats`, an epoch is that many passes, each
    shuffled (and later augmented) afresh. Val/test units are dealt once, in order, so each
    video is evaluated exactly once across the workers. With `holdout` (a fraction of the
    train/ folder `data_dir`, vidtempo.data.holdout), `train` streams the rest of the videos
    and `val` the held-out ones; a unit then names its rows (`take`)."""
    groups = split_groups(data_dir, split, holdout)
    ranks = range(world) if rank is None else [rank]
    dealt = [list(rank_units(groups, split, epochs, seed, world, repeats, r)) for r in ranks]
    return dealt if rank is None else dealt[0]


def rows_per_rank(groups: list[tuple], epochs: range, seed: int, world: int,
                  repeats: int) -> np.ndarray:  # fmt: skip
    """Training rows of each (epoch, rank) as `rank_units` deals them, from counts alone (the
    driver's check of a whole run: no unit is made)."""
    rows = np.array([g[2] for g in groups], dtype=np.int64)
    out = np.zeros((len(epochs), world), dtype=np.int64)
    for i, epoch in enumerate(epochs):
        for rep in range(repeats):
            dealt = rows[epoch_order(len(groups), seed, epoch, rep)]
            out[i] += np.bincount(np.arange(len(dealt)) % world, weights=dealt,
                                  minlength=world).astype(np.int64)  # fmt: skip
    return out


def repeats_for(units_one_pass: list[list[dict]], batch_size: int, epochs: int,
                min_steps: int | None) -> int:  # fmt: skip
    """Passes per epoch so that `epochs` epochs make at least `min_steps` optimizer steps."""
    steps = steps_per_epoch(units_one_pass, batch_size)
    if not min_steps or steps < 1:
        return 1
    return max(1, -(-min_steps // (steps * epochs)))


def steps_per_epoch(units: list[list[dict]], batch_size: int) -> int:
    """Optimizer steps every worker can take in every epoch: all workers must take the same
    number (DDP), so it is the smallest count of full batches; the rest of an epoch is dropped."""
    counts: dict[tuple[int, int], int] = {}
    epochs = {u["epoch"] for rank in units for u in rank}
    for r, rank in enumerate(units):
        for e in epochs:
            counts[r, e] = 0
        for u in rank:
            counts[r, u["epoch"]] += u["rows"]
    return min(counts.values()) // batch_size if counts else 0


def build(
    data_dir: str | Path,
    cfg: Config,
    split: str = "train",
    epochs: range | None = None,
    seed: int | None = None,
    backend: str = "decord",
    data_cpus: float | None = None,
    rank: int = 0,
    world: int = 1,
    repeats: int = 1,
    holdout: float = 0.0,
    near: str | None = None,
) -> ray.data.Dataset:
    """Worker `rank`'s dataset of one split (see `plan`): `train` augments with the train
    pipeline over `epochs`; `val` and `test` run those pipelines once, in order. `data_dir`
    is a local folder or a URI: each decode task opens its row group where it runs. `seed` and
    `data_cpus` (the CPUs its decode tasks may use at once) are the config's run.seed and
    run.data_cpus_per_worker unless given. `holdout`: `data_dir` is train/, of which `train`
    streams all but that fraction and `val` the held-out videos (see `plan`)."""
    seed = cfg.run.seed if seed is None else seed
    if data_cpus is None:  # the run's (settled on the driver: preflight.settle)
        data_cpus = cfg.run.data_cpus_per_worker or DATA_CPUS
    manifest = retrying(f"reading {data_dir}'s manifest", read_manifest, data_dir)
    check_classes(manifest, cfg, data_dir)
    kind = manifest["storage"]  # frames or video
    pipe = {"train": cfg.data.train, "val": cfg.data.val, "test": cfg.data.test}[split]
    ctx = ray.data.DataContext.get_current()
    # decoded clips are large: small blocks keep the object store and memory bounded
    ctx.target_max_block_size = 64 * 1024 * 1024
    # Ray Data reserves a share of the CPUs for every operator; with the few CPUs a data budget
    # has, that left the decode stage backpressured to one task at a time (bench data: 0.5x a
    # DataLoader). The only heavy operator here is the decode, so it gets the whole budget.
    ctx.op_resource_reservation_enabled = False
    quiet(ctx)
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(cpu=data_cpus)
    columns = ["video_id", "label", "num_frames", "frames" if kind == "frames" else "video"]
    train = split == "train"
    epochs = epochs if (train and epochs is not None) else range(1)
    # rows reach the loop in unit order, so a seed reproduces the order of a run
    ctx.execution_options.preserve_order = True
    # Units of work are Parquet row groups (8 videos each, as the converter writes them), one
    # block per unit: Ray's own read_parquet coalesces small shard files into one block, which
    # then decodes on one CPU while the others idle (the ~0.3x of `vidtempo bench data`).
    if not len(epochs):
        raise DataError("no epochs to stream: the run has already finished")
    units = retrying(f"planning {data_dir}", plan, data_dir, split, epochs, seed, world,
                     repeats, holdout, rank)  # fmt: skip
    if not units:
        raise DataError(
            f"{data_dir} has too few row groups for {world} workers ({split}); use fewer workers"
        )
    # a task: consecutive units, up to VIDEOS_PER_TASK videos and TASK_BYTES of clips
    sample_bytes = clip_bytes(pipe)
    videos = max(1, min(VIDEOS_PER_TASK, TASK_BYTES // max(1, sample_bytes)))
    per_task = max(1, videos // max(1, units[0]["rows"]))
    ds = ray.data.from_items(units, override_num_blocks=-(-len(units) // per_task))
    # sample → decode → augment, fused with the read of each unit; a transform is cheap to
    # build, so plain tasks do it (no actor pool holding CPUs while idle)
    transform = VideoTransform(pipe, cfg.data, kind, seed, 0, backend)
    placement = decode_placement(cfg, near)
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for a scheduling strategy
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            ReadRowGroups(transform, columns),
            batch_size=per_task,
            batch_format="numpy",
            num_cpus=min(1.0, data_cpus) if data_cpus else 1,
            **placement,
        )
    read_ahead(ds, sum(u["rows"] for u in units) * sample_bytes, sample_bytes, world, bounded=train)
    return ds


def decode_placement(cfg: Config, near: str | None) -> dict:
    """Where the decode tasks run. With run.decode_resource, on the nodes that carry it (CPU-only
    decode nodes), whence the clips leave as uint8 for the training workers. With GPU workers,
    beside their consumer, the worker on node `near` — whose CPUs beside its GPUs are what
    run.data_cpus_per_worker was settled from (preflight.settle) — elsewhere only while that node
    has no CPU free. CPU workers keep Ray Data's default (SPREAD): their node's CPUs are the
    workers', and a task asking for a full node is no demand the autoscaler sees (the
    rehearsal's sweep waited for good: its decode tasks never got a node launched)."""
    if cfg.run.decode_resource:
        return {"resources": {cfg.run.decode_resource: DECODE_SHARE}}
    if near and cfg.run.use_gpu:
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(
            near, soft=True, _spill_on_unavailable=True)}  # fmt: skip
    return {}


def read_ahead(ds: ray.data.Dataset, stream_bytes: int, sample_bytes: int, world: int,
               bounded: bool = True) -> bool:  # fmt: skip
    """How far a stream decodes ahead of the loop; True when it decodes all of it.

    While a stream's executor has work left and the loop is slower than the decoding, Ray
    Data's scheduling loop turns without pause in the training worker (ray.wait returns at
    once on finished tasks whose outputs it may not read yet) and takes the GIL from the
    training thread: the demo's early epochs ran at a third of the later speed. A stream
    whose clips fit in WHOLE_STREAM_BYTES (and in 1/STORE_SHARE of the object store with the
    other workers' streams) is decoded ahead in one go — no read-ahead bound, no
    downstream-capacity backpressure — so its executor is done within the first epochs
    (the demo's TIN stream: 10-19 s instead of 24-38 s, 1-4 CPU s instead of 6-30;
    BENCHMARKS.md, issue 25's fourth round).
    A larger training stream reads ahead READ_AHEAD_CLIPS clips and decodes as the loop goes
    (from object storage too: twice that measured the same, BENCHMARKS.md issue 24); a larger
    val/test split (`bounded=False`) keeps Ray Data's defaults."""
    store = ray.cluster_resources().get("object_store_memory", 0) if ray.is_initialized() else 0
    whole = stream_bytes <= min(WHOLE_STREAM_BYTES, store / (STORE_SHARE * world))
    if not (whole or bounded):
        return False
    budget = 2 * stream_bytes if whole else READ_AHEAD_CLIPS * sample_bytes
    limits = ds.context.execution_options.resource_limits
    ds.context.execution_options.resource_limits = limits.copy(
        object_store_memory=max(READ_AHEAD_MIN_BYTES, budget)
    )
    if whole:
        ds.context.downstream_capacity_backpressure_ratio = None
    return whole
