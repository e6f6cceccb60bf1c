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
import socket
import time
import uuid
from pathlib import Path

import ray
import ray.train
import yaml
from ray.train.torch import TorchTrainer

from vidtempo import config, storage, tracking, verbosity
from vidtempo.config import Config, ConfigError
from vidtempo.data import pipeline
from vidtempo.data.schema import MANIFEST, DataError, read_manifest
from vidtempo.data.transform import clip_bytes
from vidtempo.rehearsal import free_port
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.loop import eval_loop_per_worker, train_loop_per_worker

# glibc returns big freed blocks to the OS at once (mmap) and page-faults them back on every
# step; CPU workers keep them instead (BENCHMARKS.md, tin_shift section: 2.75x → 5.36x)
CPU_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


# Ray kills idle task workers after 1 s once there are more worker processes than CPUs — and a
# training run's actors alone outnumber the CPUs of a small box. Every validation pass then
# started fresh workers that import torch again (~7 s per pass on 2 cores instead of <1 s).
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


class ResourceError(RuntimeError):
    """The cluster cannot place the workers a run asks for."""


class ClusterUnreachable(ConnectionError):
    """No Ray head listens at the address a command was given."""


def check_gcs_answers(address: str, timeout: float = 10.0) -> None:
    """A `host:port` address (not "auto", not ray://) must accept a connection within `timeout`
    seconds: ray.init itself retries a dead address for minutes before it gives up."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ClusterUnreachable(
                    f"no Ray head answers at {address} ({exc.strerror or exc}): start one with "
                    "`ray start --head`, or pass the address `ray status` prints on the head"
                ) from None
            time.sleep(0.5)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS, as inside `ray job submit`), else start a local
    instance for this process."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_gcs_answers(address)
        ray.init(address=address, logging_level=verbosity.log_level())
        return
    # A new local instance keeps Ray's own default: token authentication, with the token Ray
    # makes in ~/.ray/auth_token when there is none (RAY_AUTH_MODE set by the user wins). Ray
    # switches its cached config to token mode itself; setting the variable here instead would
    # leave this process's config behind (its GCS then refuses the driver). Its notice that it
    # did so, and how to opt out, is about a choice vidtempo makes on purpose: not printed.
    verbosity.quiet_auth_notice()
    # The dashboard stays on: when Tune stops a trial, its Train controller dies with it, and
    # Ray Train's placement-group cleaner asks the dashboard's state API whether the controller
    # is gone before it frees the trial's CPUs. The cleaner finds that API by looking for Ray
    # processes on the machine and gives up when there are two instances ("Found multiple
    # active Ray instances") — the placement group then leaks and the next trial never starts.
    # So this instance's workers are told where its dashboard is.
    port = free_port()
    env = {**CPU_WORKER_ENV, **verbosity.worker_env(),
           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}  # fmt: skip
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), dashboard_port=port,
             runtime_env={"env_vars": env}, _system_config=LOCAL_SYSTEM_CONFIG,
             logging_level=verbosity.log_level())  # fmt: skip


def storage_root(cfg: Config) -> str:
    """run.storage_path, else VIDTEMPO_STORAGE (set on a cluster's head), else <home>/runs.
    A URI (s3://, gs://, file:// for a shared mount) is kept as it is."""
    root = cfg.run.storage_path or os.environ.get("VIDTEMPO_STORAGE")
    if root:
        return root if "://" in root else str(Path(root).expanduser().resolve())
    return str(tracking.home() / "runs")


def spans_nodes(cfg: Config) -> int:
    """How many nodes the run's workers may land on: every alive node when there are several,
    and 2 when this single node cannot hold them (an autoscaler will add nodes)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        return len(nodes)
    return 1 if workers_on((nodes or [{}])[0], cfg) >= cfg.run.num_workers else 2


def check_cluster(cfg: Config, root: str, uri: str | None) -> None:
    """On several nodes, checkpoints and MLflow must live where every node reaches them: fail at
    once (nothing written yet) instead of on a worker of another node later."""
    n = spans_nodes(cfg)
    if n < 2:
        return
    problems = []
    if "://" not in root:
        problems.append(
            f"checkpoints would go to {root}, a folder on this node only: set run.storage_path "
            "(--storage, or VIDTEMPO_STORAGE) to s3://BUCKET/PREFIX or gs://BUCKET/PREFIX, or to "
            "file:///PATH on a shared mount (NFS) that every node sees"
        )
    if uri is not None and tracking.is_local_uri(uri):
        problems.append(
            f"MLflow would write to {uri}, a file on this node only: start `mlflow server "
            "--host 0.0.0.0 --port 5000 --backend-store-uri sqlite:////PATH/mlflow.db` on the "
            "head and set run.mlflow_uri (--mlflow-uri, or VIDTEMPO_MLFLOW_URI) to "
            "http://HEAD_IP:5000"
        )
    if problems:
        raise ConfigError(f"this run spans {n} nodes, but " + "; and ".join(problems) + ".")


def workers_on(resources: dict, cfg: Config) -> int:
    """How many of the run's workers one node with these resources holds."""
    r = cfg.run
    fits = math.floor(resources.get("CPU", 0) / r.cpus_per_worker + 1e-9)
    if r.use_gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) + 1e-9))
    return fits


def check_resources(cfg: Config) -> None:
    """Fail at once when the cluster cannot place the workers, or has no node for the decode
    tasks run.decode_resource asks for (Ray would wait forever)."""
    if os.environ.get("VIDTEMPO_SKIP_RESOURCE_CHECK"):
        return
    r = cfg.run
    if r.decode_resource and not any(
        n["Resources"].get(r.decode_resource) for n in ray.nodes() if n.get("Alive")
    ):
        raise ResourceError(
            f"no alive node carries the Ray resource '{r.decode_resource}' that "
            "run.decode_resource (--decode-on) sends the decoding to: start nodes with it "
            "(cluster.yaml's cpu-decode nodes carry `decode`), drop --decode-on, or on an "
            "autoscaling cluster set VIDTEMPO_SKIP_RESOURCE_CHECK=1 to let Ray start them"
        )
    gpu = 1.0 if r.use_gpu else 0.0
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    placeable = sum(workers_on(res, cfg) for res in nodes)
    total_cpu = sum(res.get("CPU", 0) for res in nodes)
    total_gpu = sum(res.get("GPU", 0) for res in nodes)
    need_cpu = r.num_workers * (r.cpus_per_worker + r.data_cpus_per_worker)
    if placeable < r.num_workers or total_cpu + 1e-9 < need_cpu:
        asked = (f"{r.num_workers} workers × ({r.cpus_per_worker:g} CPU"
                 + (", 1 GPU" if gpu else "") + f") + {r.data_cpus_per_worker:g} CPU each for "
                 f"data = {need_cpu:g} CPUs" + (f", {r.num_workers} GPUs" if gpu else ""))  # fmt: skip
        raise ResourceError(
            f"the run asks for {asked}, but the cluster has {len(nodes)} node(s) with "
            f"{total_cpu:g} CPUs and {total_gpu:g} GPUs in total (room for {placeable} "
            "workers). Use fewer workers (--workers / run.num_workers), smaller "
            "run.cpus_per_worker / run.data_cpus_per_worker, or add nodes "
            "(on an autoscaling cluster: VIDTEMPO_SKIP_RESOURCE_CHECK=1 lets Ray wait for them)."
        )


class OwnDataOptions(ray.train.DataConfig):
    """Every worker reads each dataset whole, with the execution options its factory gave it.

    pipeline.build sets them on each dataset: preserve_order (so a seed reproduces the order
    of the clips, hence the run), the data CPU budget and the training stream's read-ahead
    bound. Ray Train's own DataConfig overwrites a dataset's options with those of the
    DataContext of the process that configures the data (the Train controller, which has
    none of them): the stream then came in completion order and read ahead without bound."""

    def __init__(self) -> None:
        super().__init__(datasets_to_split=[])

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        return [{name: ds.iterator() for name, ds in datasets.items()}
                for _ in range(world_size)]  # fmt: skip


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


def check_data(cfg: Config, data_dir: str) -> None:
    """train/ and val/ shard folders under `data_dir` (a local path or a URI), readable from
    here, with videos, of the config's classes. A URI whose endpoint does not answer or refuses
    the credentials fails here, before anything starts."""
    storage.check_reachable(data_dir, "data")
    for split in ("train", "val"):
        d = storage.join(data_dir, split)
        if not storage.exists(storage.join(d, MANIFEST)) and not storage.exists(d):
            raise DataError(
                f"{storage.where(data_dir)} has no '{split}' folder: --data must hold train/ and "
                f"val/ shard folders (`vidtempo prepare ... --out {data_dir}` writes them)"
            )
        manifest = read_manifest(d)
        if not manifest.get("num_videos"):
            raise DataError(
                f"{d} holds no videos (all quarantined? see its quarantine report); "
                "convert the dataset again"
            )
        pipeline.check_classes(manifest, cfg, d)


def make_dataset(data_dir: str, cfg_dict: dict, split: str, rank: int, world: int,
                 run_dir: str, backend: str = "decord", repeats: int = 1):  # fmt: skip
    """Dataset factory, called by Ray Train each time the workers (re)start: training streams
    from the first epoch after the checkpoint the workers restore."""
    cfg = config.from_dict(cfg_dict)
    data_cpus = cfg.run.data_cpus_per_worker
    if split == "train":
        start = ckpt.restored_epochs(run_dir)
        if start >= cfg.train.epochs:
            return ray.data.from_items([{"epoch": 0}])  # nothing left to train; never read
        return pipeline.build(storage.join(data_dir, "train"), cfg, "train",
                              epochs=range(start, cfg.train.epochs), seed=cfg.run.seed,
                              backend=backend, data_cpus=data_cpus, rank=rank, world=world,
                              repeats=repeats)  # fmt: skip
    return make_split_dataset(storage.join(data_dir, "val"), cfg_dict, split, rank, world, backend)


def fit(cfg: Config, data_dir: str | Path, name: str | None = None,
        imagenet: str | Path | None = None, tags: dict[str, str] | None = None,
        parent_run_id: str | None = None, quiet: bool = False,
        train_fn=train_loop_per_worker, callbacks: list | None = None) -> dict:  # fmt: skip
    """Train `cfg` on the shards under `data_dir` (train/ and val/), then evaluate its test
    protocol. Returns {"name", "run_dir", "mlflow_uri", "mlflow_run_id", "metrics"}.
    `train_fn` is the per-worker loop (tests wrap it to inject failures); `callbacks` are Ray
    Train callbacks (a Tune sweep passes TuneReportCallback); `quiet`: no progress lines (a
    sweep's trials, whose events the sweep prints), unless verbose."""
    data_dir = storage.normalize(data_dir)
    check_data(cfg, data_dir)
    imagenet = imagenet_weights(cfg, imagenet)
    name = name or cfg.name
    root = storage_root(cfg)
    run_dir = storage.join(root, name)
    uri = tracking.resolve_uri(cfg)
    ensure_ray()
    check_resources(cfg)
    check_cluster(cfg, root, uri)
    plan = epoch_plan(cfg, data_dir)
    run_id = open_run(cfg, name, root, uri, plan, quiet,
                      {"vidtempo.data": str(data_dir), "vidtempo.run_dir": run_dir, **(tags or {})},
                      parent_run_id)  # fmt: skip
    job = {"config": config.to_dict(cfg), "name": name, "run_dir": run_dir,
           "mlflow_uri": uri, "mlflow_run_id": run_id, "steps_per_epoch": plan["steps"],
           "batch_per_worker": cfg.batch_per_worker, "imagenet": str(imagenet) if imagenet else None,
           "verbose": verbosity.verbose(), "progress": verbosity.verbose() or not quiet}  # fmt: skip
    datasets = {
        f"{split}_{r}": functools.partial(make_dataset, data_dir, job["config"], split, r,
                                          cfg.run.num_workers, run_dir, repeats=plan["repeats"])  # fmt: skip
        for split in ("train", "val", "test")
        for r in range(cfg.run.num_workers)
    }
    trainer = make_trainer(cfg, train_fn, job, datasets, name, root, callbacks=callbacks,
                           checkpoints=True)  # fmt: skip
    try:
        trainer.fit()
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    return {"name": name, "run_dir": run_dir, "mlflow_uri": uri, "mlflow_run_id": run_id,
            "metrics": tracking.get_run(uri, run_id)["metrics"]}  # fmt: skip


def imagenet_weights(cfg: Config, imagenet: str | Path | None) -> str | Path | None:
    """The ImageNet state dict a run starts from: the argument, else VIDTEMPO_IMAGENET, when
    the recipe asks for one (model.pretrained=imagenet); None when it trains from scratch."""
    if cfg.model.pretrained == "imagenet" and imagenet is None:
        imagenet = os.environ.get("VIDTEMPO_IMAGENET")
        if not imagenet:
            raise ConfigError(
                f"{cfg.name} starts from ImageNet weights (model.pretrained=imagenet): pass "
                "--imagenet PATH to a torchvision ResNet-50 state dict (resnet50-*.pth), set "
                "VIDTEMPO_IMAGENET, or train from scratch with --set model.pretrained=none"
            )
    if imagenet is not None and not Path(imagenet).exists():
        raise ConfigError(f"ImageNet weights {imagenet} do not exist")
    return None if cfg.model.pretrained == "none" else imagenet


def epoch_plan(cfg: Config, data_dir: str) -> dict:
    """How the training set is passed over: `one_pass` (one epoch's units per worker),
    `repeats` (passes per epoch, for train.min_steps) and `steps` per epoch."""
    batch, world = cfg.batch_per_worker, cfg.run.num_workers
    train_dir = storage.join(data_dir, "train")
    one_pass = pipeline.plan(train_dir, "train", range(1), cfg.run.seed, world)
    repeats = pipeline.repeats_for(one_pass, batch, cfg.train.epochs, cfg.train.min_steps)
    units = pipeline.plan(train_dir, "train", range(cfg.train.epochs), cfg.run.seed,
                          world, repeats)  # fmt: skip
    steps = pipeline.steps_per_epoch(units, batch)
    if steps < 1:
        raise DataError(
            f"{train_dir} is too small for {world} workers × {batch} videos per step: "
            "use fewer workers or a smaller run.batch_per_worker"
        )
    return {"one_pass": one_pass, "repeats": repeats, "steps": steps}


def open_run(cfg: Config, name: str, root: str, uri: str, plan: dict, quiet: bool,
             tags: dict[str, str], parent_run_id: str | None) -> str:  # fmt: skip
    """The MLflow run of run `name` under `root`: the one it already has (resuming, with the
    same config), or a new one, with the run's config.yaml and progress file written."""
    run_dir = storage.join(root, name)
    progress = ckpt.read_progress(run_dir)
    saved = storage.read_bytes(storage.join(run_dir, "config.yaml"))
    if progress.get("mlflow_run_id") and saved is not None:
        before = config.from_dict(yaml.safe_load(saved), f"{run_dir}/config.yaml")
        changed = config.diff(before, cfg)
        if changed:
            listed = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changed.items())[:6])
            raise ConfigError(
                f"run '{name}' in {root} was started with a different config ({listed}); "
                "resume it unchanged or start a new run with --name"
            )
        run_id = progress["mlflow_run_id"]
        tracking.set_running(uri, run_id)
        if not quiet:
            print(f"[{name}] resuming: {progress['epochs_done']}/{cfg.train.epochs} epochs done "
                  f"(MLflow run {run_id})", flush=True)  # fmt: skip
        return run_id
    steps, repeats = plan["steps"], plan["repeats"]
    run_id = tracking.start_run(cfg, name, uri, tags, parent_run_id)
    tracking.log_metrics(uri, run_id, {"steps_per_epoch": steps, "epoch_passes": repeats,
                                       "clip_bytes": clip_bytes(cfg.data.train)}, step=0)  # fmt: skip
    if repeats > 1 and not quiet:
        print(f"[{name}] {sum(u['rows'] for r in plan['one_pass'] for u in r)} training videos: "
              f"each epoch passes over them {repeats} times, {steps} steps, so that "
              f"{cfg.train.epochs} epochs make train.min_steps={cfg.train.min_steps} or more",
              flush=True)  # fmt: skip
    storage.write_bytes(storage.join(run_dir, "config.yaml"), config.dump_yaml(cfg).encode())
    ckpt.write_progress(run_dir, epochs_done=0, mlflow_run_id=run_id)
    return run_id


def make_trainer(cfg: Config, loop, loop_config: dict, datasets: dict, name: str, root: str,
                 callbacks: list | None = None, checkpoints: bool = False) -> TorchTrainer:  # fmt: skip
    """The one TorchTrainer of `fit` and `evaluate`: the run's workers, its storage, its
    datasets with vidtempo's own data options; with `checkpoints`, run.keep_last of them and
    run.max_failures restarts from the last."""
    pipeline.quiet()  # the driver's DataContext goes to the workers
    kept = {}
    if checkpoints:
        kept = {"checkpoint_config": ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_last),
                "failure_config": ray.train.FailureConfig(max_failures=cfg.run.max_failures)}  # fmt: skip
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=scaling(cfg),
        run_config=ray.train.RunConfig(name=name, storage_path=root,
                                       worker_runtime_env=worker_runtime_env(cfg),
                                       callbacks=callbacks or [],
                                       logging_config=verbosity.train_logging_config(), **kept),  # fmt: skip
        datasets=datasets,
        dataset_config=OwnDataOptions(),
    )


def evaluate(cfg: Config, checkpoint: str | Path, data_dir: str | Path,
             protocol: str = "test") -> dict[str, float]:  # fmt: skip
    """Score a checkpoint on the val/ shards under the config's test (or val) protocol, on
    Ray Train workers; scores are merged by video_id across the workers."""
    data_dir = storage.normalize(data_dir)
    storage.check_reachable(data_dir, "data")
    d = storage.join(data_dir, "val")
    if not storage.exists(storage.join(d, MANIFEST)) and storage.exists(
        storage.join(data_dir, MANIFEST)
    ):
        d = data_dir  # the val shard folder itself
    pipeline.check_classes(read_manifest(d), cfg, d)
    checkpoint = storage.normalize(checkpoint)
    storage.check_reachable(checkpoint, "checkpoint")
    if not storage.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint {storage.where(checkpoint)} does not exist")
    ensure_ray()
    check_resources(cfg)
    check_cluster(cfg, storage_root(cfg), None)
    world = cfg.run.num_workers
    split = "test" if protocol == "test" else "val"
    root = storage.join(storage_root(cfg), "_evaluate")
    name = f"{cfg.name}-{uuid.uuid4().hex[:8]}"
    cfg_dict = config.to_dict(cfg)
    datasets = {
        f"{split}_{r}": functools.partial(make_split_dataset, d, cfg_dict, split, r, world)
        for r in range(world)
    }
    job = {"config": cfg_dict, "checkpoint": str(checkpoint), "split": split,
           "batch": cfg.batch_per_worker, "verbose": verbosity.verbose()}  # fmt: skip
    result = make_trainer(cfg, eval_loop_per_worker, job, datasets, name, root).fit()
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    with contextlib.suppress(Exception):
        storage.delete_tree(storage.join(root, name))
    return metrics


def make_split_dataset(split_dir: str, cfg_dict: dict, split: str, rank: int, world: int,
                       backend: str = "decord"):  # fmt: skip
    """Dataset factory for one evaluation split (val or test protocol) of one rank."""
    cfg = config.from_dict(cfg_dict)
    return pipeline.build(split_dir, cfg, split, seed=cfg.run.seed, backend=backend,
                          data_cpus=cfg.run.data_cpus_per_worker, rank=rank, world=world)  # fmt: skip
