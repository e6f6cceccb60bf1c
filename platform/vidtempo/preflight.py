"""Before a run starts: Ray connected, the cluster able to hold the run, storage and tracking
where every node reaches them, the data there. Everything here fails before anything is
written, with what to change.

    root = before_run(cfg, uri)   # fit, tune and evaluate; doctor reports the same checks

- `ensure_ray`: RAY_ADDRESS / the address given (which must answer), else a local instance
  (token authentication on, its dashboard where Ray Train's cleaner finds it).
- `check_resources`: the workers fit the nodes, and a node carries run.decode_resource — the
  alive nodes, or on a cluster with an autoscaler those it can add (vidtempo.capacity): then
  `before_run` asks for them and waits (run.node_wait_minutes) before anything is written.
- `check_cluster`: on several nodes, checkpoints and MLflow are not files of one node.
- `storage_root`: where checkpoints go; `check_data`: the shard folders a run reads.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import ray

from vidtempo import capacity, storage, verbosity
from vidtempo.capacity import Capacity, Need, ResourceError
from vidtempo.config import Config, ConfigError
from vidtempo.data import pipeline
from vidtempo.data.schema import MANIFEST, DataError, read_manifest
from vidtempo.machine import free_port, home
from vidtempo.tracking.store import is_local_uri

# glibc returns big freed blocks to the OS at once (mmap) and page-faults them back on every
# step; CPU workers keep them instead (BENCHMARKS.md, tin_shift section: 2.75x → 5.36x)
CPU_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}

# Ray kills idle task workers after 1 s once there are more worker processes than CPUs — and a
# training run's actors alone outnumber the CPUs of a small box. Every validation pass then
# started fresh workers that import torch again (~7 s per pass on 2 cores instead of <1 s).
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


class ClusterUnreachable(ConnectionError):
    """No Ray head listens at the address a command was given."""


def before_run(cfg: Config, uri: str | None) -> str:
    """Ray connected, the run placeable, its storage (and the tracking store `uri`, unless
    None) reachable from every node it spans; returns the storage root."""
    ensure_ray()
    cap, launch = check_resources(cfg)
    root = storage_root(cfg)
    check_cluster(cfg, root, uri, spans(cap, launch))
    if launch:
        capacity.wait_for(Need.for_run(cfg), cap, launch, cfg.run.node_wait_minutes)
    return root


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
    return str(home() / "runs")


def spans(cap: Capacity, launch: dict[str, int] | None) -> int:
    """How many nodes a run may land on: every alive node, and those launched for it (None: a
    check switched off, and the run does not fit the alive nodes: at least one more)."""
    return len(cap.alive) + (sum(launch.values()) if launch is not None else 1)


def check_cluster(cfg: Config, root: str, uri: str | None, n: int) -> None:
    """On `n` > 1 nodes, checkpoints and MLflow must live where every node reaches them: fail
    at once (nothing written yet) instead of on a worker of another node later."""
    if n < 2:
        return
    problems = []
    if "://" not in root:
        problems.append(
            f"checkpoints would go to {root}, a folder on this node only: set run.storage_path "
            "(--storage, or VIDTEMPO_STORAGE) to s3://BUCKET/PREFIX or gs://BUCKET/PREFIX, or to "
            "file:///PATH on a shared mount (NFS) that every node sees"
        )
    if uri is not None and is_local_uri(uri):
        problems.append(
            f"MLflow would write to {uri}, a file on this node only: start `mlflow server "
            "--host 0.0.0.0 --port 5000 --backend-store-uri sqlite:////PATH/mlflow.db` on the "
            "head and set run.mlflow_uri (--mlflow-uri, or VIDTEMPO_MLFLOW_URI) to "
            "http://HEAD_IP:5000"
        )
    if problems:
        raise ConfigError(f"this run spans {n} nodes, but " + "; and ".join(problems) + ".")


def check_resources(cfg: Config) -> tuple[Capacity, dict[str, int] | None]:
    """The cluster (alive nodes, the autoscaler's node types) and the nodes the run needs
    launched: {} when it fits the alive nodes. A run the cluster can never hold — more workers,
    CPUs or GPUs than its largest shape, a decode resource no node carries — fails at once with
    the numbers (Ray would wait forever). VIDTEMPO_SKIP_RESOURCE_CHECK=1 switches this off (an
    expert override for an autoscaler vidtempo cannot read; the plan is then None)."""
    cap = capacity.read()
    need = Need.for_run(cfg)
    if os.environ.get("VIDTEMPO_SKIP_RESOURCE_CHECK"):
        return cap, ({} if placed_now(need, cap) else None)
    launch = cap.plan(need)
    if launch is None:
        raise ResourceError(capacity.impossible(need, cap))
    return cap, launch


def placed_now(need: Need, cap: Capacity) -> bool:
    return not any(capacity.shortfall(need, list(cap.alive)))


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


def check_eval_data(cfg: Config, data_dir: str) -> str:
    """The val shard folder an evaluation scores (`data_dir`/val, or `data_dir` itself when it
    is one), of the config's classes."""
    storage.check_reachable(data_dir, "data")
    d = storage.join(data_dir, "val")
    if not storage.exists(storage.join(d, MANIFEST)) and storage.exists(
        storage.join(data_dir, MANIFEST)
    ):
        d = data_dir  # the val shard folder itself
    pipeline.check_classes(read_manifest(d), cfg, d)
    return d
