"""Before a run starts: Ray connected, the cluster able to hold the run, storage and tracking
where every node reaches them, the data there. Everything here fails before anything is
written, with what to change.

    root = before_run(cfg, uri)   # fit, tune and evaluate; doctor reports the same checks

- `ensure_ray` (ray_session.py): RAY_ADDRESS / the address given (which must answer), else a
  local instance (token authentication on, its dashboard where Ray Train's cleaner finds it).
- `check_resources`: the workers fit the nodes, and a node carries run.decode_resource — the
  alive nodes, or on a cluster with an autoscaler those it can add (vidtempo.capacity): then
  `before_run` asks for them and waits (run.node_wait_minutes) before anything is written.
- `check_cluster`: on several nodes, checkpoints and MLflow are not files of one node.
- `settle`: the settings that depend on the cluster (the decode CPUs of GPU workers).
- `storage_root`: where checkpoints go (the shard folders a run reads: data/schema.py).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from vidtempo import capacity
from vidtempo.capacity import Capacity, Need, ResourceError
from vidtempo.config import Config, ConfigError, override
from vidtempo.machine import home
from vidtempo.ray_session import ensure_ray
from vidtempo.tracking.store import is_local_uri


def before_run(cfg: Config, uri: str | None, imagenet: str | None = None) -> str:
    """Ray connected, the run placeable, its storage (and the tracking store `uri`, unless
    None, and the ImageNet weights, when given) reachable from every node it spans; returns
    the storage root."""
    ensure_ray()
    cap, launch = check_resources(cfg)
    root = storage_root(cfg)
    check_cluster(cfg, root, uri, spans(cap, launch), imagenet)
    if launch:
        capacity.wait_for(Need.for_run(cfg), cap, launch, cfg.run.node_wait_minutes)
    return root


def settle(cfg: Config) -> Config:
    """The run's settings that depend on the cluster, fixed before anything is written (the
    config every worker, trial and checkpoint records): run.data_cpus_per_worker when the recipe
    leaves it null — with GPU workers decoding beside them, each GPU node's CPUs over its GPUs
    less the worker's own (a p4d.24xlarge: 96 / 8 - 1 = 11); otherwise 1."""
    r = cfg.run
    if r.data_cpus_per_worker is not None:
        return cfg
    cpus = capacity.DATA_CPUS
    if r.use_gpu and not r.decode_resource:
        ensure_ray()
        ratio = capacity.cpus_per_gpu(capacity.read())
        if ratio:
            cpus = max(capacity.DATA_CPUS, math.floor(ratio - r.cpus_per_worker))
    return override(cfg, {"run.data_cpus_per_worker": cpus}, "the cluster's nodes")


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


def check_cluster(cfg: Config, root: str, uri: str | None, n: int,
                  imagenet: str | None = None) -> None:  # fmt: skip
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
    if imagenet is not None and imagenet_is_local(imagenet):
        problems.append(
            f"the ImageNet weights {imagenet} are a file on this node only, and every worker "
            "reads them from its own disk: pass --imagenet s3://BUCKET/resnet50.pth (or gs://, "
            "file:/// on a shared mount) after copying the file there, or --imagenet "
            "torchvision://resnet50 to have each node download torchvision's weights"
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


def imagenet_is_local(source: str) -> bool:
    from vidtempo.models.imagenet import is_local  # torch: only when a run names weights

    return is_local(source)
