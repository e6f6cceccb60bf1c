"""Before a run starts: Ray connected, the cluster able to hold the run, storage and tracking
where every node reaches them, the data there. Everything here fails before anything is
written, with what to change.

    root = before_run(cfg, uri)   # fit, tune and evaluate; doctor reports the same checks

- `ensure_ray`: RAY_ADDRESS / the address given (which must answer), else a local instance
  (token authentication on, its dashboard where Ray Train's cleaner finds it).
- `check_resources`: the workers fit the nodes, and a node carries run.decode_resource.
- `check_cluster`: on several nodes, checkpoints and MLflow are not files of one node.
- `storage_root`: where checkpoints go; `check_data`: the shard folders a run reads.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import ray

from vidtempo import storage, verbosity
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


class ResourceError(RuntimeError):
    """The cluster cannot place the workers a run asks for."""


class ClusterUnreachable(ConnectionError):
    """No Ray head listens at the address a command was given."""


def before_run(cfg: Config, uri: str | None) -> str:
    """Ray connected, the run placeable, its storage (and the tracking store `uri`, unless
    None) reachable from every node it spans; returns the storage root."""
    ensure_ray()
    check_resources(cfg)
    root = storage_root(cfg)
    check_cluster(cfg, root, uri)
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


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def workers_on(resources: dict, cfg: Config) -> int:
    """How many of the run's workers one node with these resources holds."""
    r = cfg.run
    fits = math.floor(resources.get("CPU", 0) / r.cpus_per_worker + 1e-9)
    if r.use_gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) + 1e-9))
    return fits


def spans_nodes(cfg: Config) -> int:
    """How many nodes the run's workers may land on: every alive node when there are several,
    and 2 when this single node cannot hold them (an autoscaler will add nodes)."""
    nodes = [n["Resources"] for n in alive_nodes()]
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
    if uri is not None and is_local_uri(uri):
        problems.append(
            f"MLflow would write to {uri}, a file on this node only: start `mlflow server "
            "--host 0.0.0.0 --port 5000 --backend-store-uri sqlite:////PATH/mlflow.db` on the "
            "head and set run.mlflow_uri (--mlflow-uri, or VIDTEMPO_MLFLOW_URI) to "
            "http://HEAD_IP:5000"
        )
    if problems:
        raise ConfigError(f"this run spans {n} nodes, but " + "; and ".join(problems) + ".")


def missing_decode_nodes(cfg: Config) -> str | None:
    """What is wrong when no alive node carries run.decode_resource (Ray would wait forever
    for one), else None."""
    r = cfg.run
    if not r.decode_resource or any(n["Resources"].get(r.decode_resource) for n in alive_nodes()):
        return None
    return (f"no alive node carries the Ray resource '{r.decode_resource}' that "
            "run.decode_resource (--decode-on) sends the decoding to: start nodes with it "
            "(cluster.yaml's cpu-decode nodes carry `decode`), drop --decode-on, or on an "
            "autoscaling cluster set VIDTEMPO_SKIP_RESOURCE_CHECK=1 to let Ray start them")  # fmt: skip


def cpus_per_run(cfg: Config) -> float:
    """The CPUs one run of `cfg` holds: its workers' and their decoding's."""
    r = cfg.run
    return r.num_workers * (r.cpus_per_worker + r.data_cpus_per_worker)


def check_resources(cfg: Config) -> None:
    """Fail at once when the cluster cannot place the workers, or has no node for the decode
    tasks run.decode_resource asks for (Ray would wait forever)."""
    if os.environ.get("VIDTEMPO_SKIP_RESOURCE_CHECK"):
        return
    missing = missing_decode_nodes(cfg)
    if missing:
        raise ResourceError(missing)
    r = cfg.run
    gpu = 1.0 if r.use_gpu else 0.0
    nodes = [n["Resources"] for n in alive_nodes()]
    placeable = sum(workers_on(res, cfg) for res in nodes)
    total_cpu = sum(res.get("CPU", 0) for res in nodes)
    total_gpu = sum(res.get("GPU", 0) for res in nodes)
    need_cpu = cpus_per_run(cfg)
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
