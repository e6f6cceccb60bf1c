"""The driver side of a training run: checks, MLflow run, datasets, TorchTrainer.fit.

    fit(cfg, data_dir)  →  train on Ray Train, evaluate the test protocol, log to MLflow

A run is named (default: the config name) and lives in `<storage_path>/<name>`; fitting a name
that already has checkpoints resumes it from the last one and continues its MLflow run. A worker
failure restarts the workers from the last checkpoint (FailureConfig), inside the same fit.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import uuid
from pathlib import Path

import ray
import ray.train
import yaml
from ray.train.torch import TorchTrainer

from vidtempo import config, models, storage, verbosity
from vidtempo.config import Config, ConfigError
from vidtempo.data import pipeline
from vidtempo.data.sampling import clip_bytes
from vidtempo.data.schema import DataError, check_data, check_eval_data
from vidtempo.models import imagenet
from vidtempo.preflight import before_run, settle
from vidtempo.ray_session import CPU_WORKER_ENV
from vidtempo.tracking import record, store
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.worker import EvalJob, Job, eval_loop_per_worker, train_loop_per_worker

# Ray Train's wait for a worker group's resources before it tries again (its default, and
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S when set)
START_TIMEOUT_S = float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60))
# keys a resumed run may change: how long it waits for nodes changes nothing it computes
RESUMABLE_CHANGES = {"run.node_wait_minutes"}


class OwnDataOptions(ray.train.DataConfig):
    """Every worker reads its own datasets (`<split>_<rank>`, pipeline.plan), built here once
    Ray Train has placed the workers, so that a GPU worker's decode tasks run beside it (on its
    node unless that node has no CPU free; pipeline.decode_placement), with the execution
    options the builder gives them.

    What Ray Train hands `configure` is what the trainer's dataset factories return: here the
    builders themselves (make_trainer), called with the worker's node. pipeline.build sets the
    options on each dataset: preserve_order (so a seed reproduces the order of the clips, hence
    the run), the data CPU budget and the training stream's read-ahead bound. Ray Train's own
    DataConfig overwrites a dataset's options with those of the DataContext of the process that
    configures the data (the Train controller, which has none of them): the stream then came in
    completion order and read ahead without bound."""

    def __init__(self) -> None:
        super().__init__(datasets_to_split=[])

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        built = {}
        for name, build in datasets.items():
            rank = int(name.rsplit("_", 1)[1])
            built[name] = build(near=worker_node_ids[rank] if worker_node_ids else None)
        return [{name: ds.iterator() for name, ds in built.items()} for _ in range(world_size)]


def _builder(build):
    """A dataset factory for Ray Train that returns the builder (OwnDataOptions builds)."""
    return build


def worker_runtime_env(cfg: Config) -> dict:
    """The Train workers' environment: the allocator setting on CPUs, Ray's log levels."""
    cpu = {} if cfg.run.use_gpu else CPU_WORKER_ENV
    return {"env_vars": {**cpu, **verbosity.worker_env()}}


def scaling(cfg: Config) -> ray.train.ScalingConfig:
    """One worker per GPU (or `run.cpus_per_worker` CPUs), `run.num_workers` of them."""
    r = cfg.run
    return ray.train.ScalingConfig(
        num_workers=r.num_workers, use_gpu=r.use_gpu,
        resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": 1} if r.use_gpu else {})},
        placement_strategy=r.placement_strategy,
    )


def make_dataset(data_dir: str, cfg: Config, split: str, rank: int, world: int,
                 run_dir: str, backend: str = "decord", repeats: int = 1,
                 near: str | None = None):  # fmt: skip
    """Rank `rank`'s dataset of `split`, built each time the workers (re)start (OwnDataOptions;
    `near`: the worker's node): training streams from the first epoch after the checkpoint the
    workers restore."""
    holdout = cfg.data.holdout
    if split == "train":
        start = ckpt.restored_epochs(run_dir)
        if start >= cfg.train.epochs:
            return ray.data.from_items([{"epoch": 0}])  # nothing left to train; never read
        return pipeline.build(storage.join(data_dir, "train"), cfg, "train",
                              epochs=range(start, cfg.train.epochs), backend=backend,
                              rank=rank, world=world, repeats=repeats, holdout=holdout,
                              near=near)  # fmt: skip
    if holdout:  # validation on the held-out part of train/ (val/ is not read)
        return pipeline.build(storage.join(data_dir, "train"), cfg, "val", backend=backend,
                              rank=rank, world=world, holdout=holdout, near=near)  # fmt: skip
    return make_split_dataset(storage.join(data_dir, "val"), cfg, split, rank, world, backend,
                              near)  # fmt: skip


def fit(cfg: Config, data_dir: str | Path, name: str | None = None,
        imagenet: str | Path | None = None, tags: dict[str, str] | None = None,
        parent_run_id: str | None = None, quiet: bool = False,
        train_fn=train_loop_per_worker, callbacks: list | None = None,
        under: str | None = None) -> dict:  # fmt: skip
    """Train `cfg` on the shards under `data_dir` (train/ and val/), then evaluate its test
    protocol. Returns {"name", "run_dir", "mlflow_uri", "mlflow_run_id", "metrics"}.
    `train_fn` is the per-worker loop, called with the run's `Job` (tests wrap it to inject
    failures); `callbacks` are Ray
    Train callbacks (a Tune sweep passes TuneReportCallback); `quiet`: no progress lines (a
    sweep's trials, whose events the sweep prints), unless verbose; `under`: a folder under the
    storage root the run lives in (a sweep's trials: sweeps/<sweep>/trials)."""
    data_dir = storage.normalize(data_dir)
    check_data(cfg, data_dir)
    models.check(cfg)
    imagenet = imagenet_weights(cfg, imagenet)
    cfg = settle(cfg)
    name = name or cfg.name
    uri = store.resolve_uri(cfg)
    root = before_run(cfg, uri, imagenet)
    if under:
        root = storage.join(root, under)
    run_dir = storage.join(root, name)
    done = finished_run(cfg, name, root, uri, quiet)
    if done:
        return done
    plan = epoch_plan(cfg, data_dir)
    run_id = open_run(cfg, name, root, uri, plan, quiet,
                      {"vidtempo.data": str(data_dir), "vidtempo.run_dir": run_dir, **(tags or {})},
                      parent_run_id)  # fmt: skip
    job = Job(cfg=cfg, name=name, run_dir=run_dir, mlflow_uri=uri, mlflow_run_id=run_id,
              steps_per_epoch=plan["steps"], imagenet=imagenet,
              verbose=verbosity.verbose(), progress=verbosity.verbose() or not quiet)  # fmt: skip
    datasets = {
        f"{split}_{r}": functools.partial(make_dataset, data_dir, cfg, split, r,
                                          cfg.run.num_workers, run_dir, repeats=plan["repeats"])  # fmt: skip
        for split in (("train", "val") if cfg.data.holdout else ("train", "val", "test"))
        for r in range(cfg.run.num_workers)
    }
    trainer = make_trainer(cfg, functools.partial(train_fn, job), datasets, name, root,
                           callbacks=callbacks, checkpoints=True)  # fmt: skip
    try:
        trainer.fit()
    except BaseException:
        record.end_run(uri, run_id, "FAILED")
        raise
    record.end_run(uri, run_id, "FINISHED")
    return {"name": name, "run_dir": run_dir, "mlflow_uri": uri, "mlflow_run_id": run_id,
            "metrics": store.get_run(uri, run_id)["metrics"]}  # fmt: skip


def imagenet_weights(cfg: Config, source: str | Path | None) -> str | None:
    """The ImageNet weights a run starts from, resolved on the driver: the argument, else
    VIDTEMPO_IMAGENET, when the recipe asks for them (model.pretrained=imagenet); None when it
    trains from scratch. A torchvision name, a URI (checked: it answers and holds the file) or
    a local file (checked: it exists; a run spanning nodes refuses it in before_run)."""
    if cfg.model.pretrained == "none":
        return None
    source = source or os.environ.get("VIDTEMPO_IMAGENET")
    if not source:
        raise ConfigError(
            f"{cfg.name} starts from ImageNet weights (model.pretrained=imagenet): pass "
            "--imagenet torchvision://resnet50 (torchvision's weights, downloaded on each node), "
            "--imagenet s3://BUCKET/resnet50.pth (a state dict every node reads) or a local "
            "file on one machine; or set VIDTEMPO_IMAGENET; or train from scratch with "
            "--set model.pretrained=none"
        )
    return imagenet.resolve(source)


def epoch_plan(cfg: Config, data_dir: str) -> dict:
    """How the training set is passed over: `one_pass` (one epoch's units per worker),
    `repeats` (passes per epoch, for train.min_steps) and `steps` per epoch."""
    batch, world = cfg.batch_per_worker, cfg.run.num_workers
    train_dir, holdout = storage.join(data_dir, "train"), cfg.data.holdout
    one_pass = pipeline.plan(train_dir, "train", range(1), cfg.run.seed, world, holdout=holdout)
    repeats = pipeline.repeats_for(one_pass, batch, cfg.train.epochs, cfg.train.min_steps)
    # every epoch's rows per rank from counts alone: the units themselves are made by each
    # rank for itself (pipeline.rank_units), 10^8 dicts at Kinetics' scale on 32 workers
    groups = pipeline.split_groups(train_dir, "train", holdout)
    rows = pipeline.rows_per_rank(groups, range(cfg.train.epochs), cfg.run.seed, world, repeats)
    steps = int(rows.min()) // batch if rows.size else 0
    if steps < 1:
        raise DataError(
            f"{train_dir} is too small for {world} workers × {batch} videos per step: "
            "use fewer workers or a smaller run.batch_per_worker"
        )
    # each worker validates whole row groups: every one must have some (else each worker fails
    # as it builds its dataset, and the restarts eat run.max_failures)
    eval_dir = train_dir if holdout else storage.join(data_dir, "val")
    dealt = pipeline.plan(eval_dir, "val", range(1), cfg.run.seed, world, holdout=holdout)
    if not all(dealt):
        have = sum(len(rank) for rank in dealt)
        raise DataError(
            f"{'the held-out part of ' if holdout else ''}{eval_dir} has {have} row group"
            f"{'s' * (have != 1)} for {world} workers to validate on (each takes whole row "
            f"groups of up to 8 videos): use at most {have} workers"
        )
    return {"one_pass": one_pass, "repeats": repeats, "steps": steps}


def finished_run(cfg: Config, name: str, root: str, uri: str, quiet: bool) -> dict | None:
    """fit()'s result for run `name` when it already ran to the end with this config (every
    epoch and the test protocol: its MLflow run FINISHED), else None. A resubmitted job, or a
    sweep resumed after its driver was stopped while Tune's saved state still had the trial
    running, returns at once instead of starting the workers again to evaluate once more."""
    run_dir = storage.join(root, name)
    progress = ckpt.read_progress(run_dir)
    saved = storage.read_bytes(storage.join(run_dir, "config.yaml"))
    run_id = progress.get("mlflow_run_id")
    if not run_id or saved is None or progress["epochs_done"] < cfg.train.epochs:
        return None
    before = config.from_dict(yaml.safe_load(saved), f"{run_dir}/config.yaml")
    if any(k not in RESUMABLE_CHANGES for k in config.diff(before, cfg)):
        return None  # open_run says what changed
    run = store.get_run(uri, run_id)
    if run["status"] != "FINISHED":
        return None
    if not quiet:
        print(f"[{name}] already finished: {cfg.train.epochs} epochs and the test protocol "
              f"(MLflow run {run_id}); --name NEW starts another run", flush=True)  # fmt: skip
    return {"name": name, "run_dir": run_dir, "mlflow_uri": uri, "mlflow_run_id": run_id,
            "metrics": run["metrics"]}  # fmt: skip


def open_run(cfg: Config, name: str, root: str, uri: str, plan: dict, quiet: bool,
             tags: dict[str, str], parent_run_id: str | None) -> str:  # fmt: skip
    """The MLflow run of run `name` under `root`: the one it already has (resuming, with the
    same config), or a new one, with the run's config.yaml and progress file written."""
    run_dir = storage.join(root, name)
    progress = ckpt.read_progress(run_dir)
    saved = storage.read_bytes(storage.join(run_dir, "config.yaml"))
    if progress.get("mlflow_run_id") and saved is not None:
        before = config.from_dict(yaml.safe_load(saved), f"{run_dir}/config.yaml")
        changed = {k: v for k, v in config.diff(before, cfg).items() if k not in RESUMABLE_CHANGES}
        if changed:
            listed = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changed.items())[:6])
            raise ConfigError(
                f"run '{name}' in {root} was started with a different config ({listed}); "
                "resume it unchanged or start a new run with --name"
            )
        run_id = progress["mlflow_run_id"]
        record.set_running(uri, run_id)
        if not quiet:
            print(f"[{name}] resuming: {progress['epochs_done']}/{cfg.train.epochs} epochs done "
                  f"(MLflow run {run_id})", flush=True)  # fmt: skip
        return run_id
    steps, repeats = plan["steps"], plan["repeats"]
    run_id = record.start_run(cfg, name, uri, tags, parent_run_id, metrics={
        "steps_per_epoch": steps, "epoch_passes": repeats, "clip_bytes": clip_bytes(cfg.data.train)})  # fmt: skip
    if repeats > 1 and not quiet:
        print(f"[{name}] {sum(u['rows'] for r in plan['one_pass'] for u in r)} training videos: "
              f"each epoch passes over them {repeats} times, {steps} steps, so that "
              f"{cfg.train.epochs} epochs make train.min_steps={cfg.train.min_steps} or more",
              flush=True)  # fmt: skip
    storage.write_bytes(storage.join(run_dir, "config.yaml"), config.dump_yaml(cfg).encode())
    ckpt.write_progress(run_dir, epochs_done=0, mlflow_run_id=run_id)
    return run_id


def make_trainer(cfg: Config, loop, datasets: dict, name: str, root: str,
                 callbacks: list | None = None, checkpoints: bool = False) -> TorchTrainer:  # fmt: skip
    """The one TorchTrainer of `fit` and `evaluate`: the run's workers, its storage, its
    datasets with vidtempo's own data options; with `checkpoints`, run.keep_last of them and
    run.max_failures restarts from the last."""
    pipeline.quiet()  # the driver's DataContext goes to the workers
    kept = {}
    if checkpoints:
        kept = {"checkpoint_config": ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_last),
                "failure_config": failure_config(cfg)}  # fmt: skip
    return TorchTrainer(
        loop,
        scaling_config=scaling(cfg),
        run_config=ray.train.RunConfig(name=name, storage_path=root,
                                       worker_runtime_env=worker_runtime_env(cfg),
                                       callbacks=callbacks or [],
                                       logging_config=verbosity.train_logging_config(), **kept),  # fmt: skip
        datasets={name: functools.partial(_builder, build) for name, build in datasets.items()},
        dataset_config=OwnDataOptions(),
    )


def failure_config(cfg: Config) -> ray.train.FailureConfig:
    """run.max_failures restarts of the workers from the last checkpoint. Each time they
    (re)start, Ray Train waits START_TIMEOUT_S for their resources and then tries again — on an
    autoscaling cluster while a lost node is replaced; run.node_wait_minutes bounds those tries
    (Ray's default is no bound: a run whose nodes never come would wait forever)."""
    tries = max(1, math.ceil(cfg.run.node_wait_minutes * 60 / START_TIMEOUT_S))
    return ray.train.FailureConfig(max_failures=cfg.run.max_failures,
                                   controller_failure_limit=tries)  # fmt: skip


def evaluate(cfg: Config, checkpoint: str | Path, data_dir: str | Path,
             protocol: str = "test") -> dict[str, float]:  # fmt: skip
    """Score a checkpoint on the val/ shards under the config's test (or val) protocol, on
    Ray Train workers; scores are merged by video_id across the workers."""
    d = check_eval_data(cfg, storage.normalize(data_dir))
    models.check(cfg)
    cfg = settle(cfg)
    checkpoint = storage.normalize(checkpoint)
    storage.check_reachable(checkpoint, "checkpoint")
    if not storage.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint {storage.where(checkpoint)} does not exist")
    root = storage.join(before_run(cfg, None), "_evaluate")
    world = cfg.run.num_workers
    split = "test" if protocol == "test" else "val"
    name = f"{cfg.name}-{uuid.uuid4().hex[:8]}"
    datasets = {
        f"{split}_{r}": functools.partial(make_split_dataset, d, cfg, split, r, world)
        for r in range(world)
    }
    job = EvalJob(cfg=cfg, checkpoint=str(checkpoint), split=split, verbose=verbosity.verbose())
    result = make_trainer(cfg, functools.partial(eval_loop_per_worker, job), datasets, name,
                          root).fit()  # fmt: skip
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    with contextlib.suppress(Exception):
        storage.delete_tree(storage.join(root, name))
    return metrics


def make_split_dataset(split_dir: str, cfg: Config, split: str, rank: int, world: int,
                       backend: str = "decord", near: str | None = None):  # fmt: skip
    """One rank's dataset of one evaluation split (val or test protocol)."""
    return pipeline.build(split_dir, cfg, split, backend=backend, rank=rank, world=world,
                          near=near)  # fmt: skip
