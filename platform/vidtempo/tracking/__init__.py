"""MLflow tracking — the only module that imports mlflow.

Default store: SQLite at an absolute path, `<home>/mlflow/mlflow.db`, with artifacts beside it
(MLflow 3 refuses the old `./mlruns` file store). `<home>` is `VIDTEMPO_HOME`, else the checkout
— unless the checkout is a `ray job submit` working-dir copy, which Ray deletes: then
`~/vidtempo`. `VIDTEMPO_MLFLOW_URI` or `run.mlflow_uri` (an `mlflow server` URL on a cluster)
replace the default.

Every call takes the tracking URI and a run id and goes through an `MlflowClient`, so the driver
creates the run and rank 0 of the workers logs to it without any global "active run".
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from vidtempo.config import PROJECT_DIR, Config, dump_yaml, flatten

logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

MAX_PARAM = 6000  # MLflow's limit on a param value


def key(name: str) -> str:
    """MLflow allows no '@' in names: `test/top1@2x3` is logged as `test/top1:2x3`."""
    return name.replace("@", ":")


def home() -> Path:
    if os.environ.get("VIDTEMPO_HOME"):
        return Path(os.environ["VIDTEMPO_HOME"]).resolve()
    if "runtime_resources" in PROJECT_DIR.parts:  # a Ray job's working-dir copy
        return Path.home() / "vidtempo"
    return PROJECT_DIR


def default_uri() -> str:
    db = home() / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}"  # sqlite:/// + /abs/path = four slashes


def resolve_uri(cfg: Config | None = None) -> str:
    if cfg is not None and cfg.run.mlflow_uri:
        return cfg.run.mlflow_uri
    return os.environ.get("VIDTEMPO_MLFLOW_URI") or default_uri()


def is_local_uri(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def _client(uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # artifacts beside the database, not in ./mlartifacts of whatever the cwd is
        root = Path(uri[len("sqlite:///") :]).parent / "artifacts" / name
        location = root.as_uri()
    return client.create_experiment(name, artifact_location=location)


def zoo_tags(cfg: Config) -> dict[str, str]:
    """The zoo's published numbers, for side-by-side columns in the UI and `zoo compare`: the
    config's own reference, or that of the zoo config it was derived from (`zoo_config`)."""
    from vidtempo import config as C

    ref, zoo = cfg.reference, cfg.name
    if ref is None and cfg.zoo_config:
        zoo = cfg.zoo_config
        ref = C.load(zoo).reference
    if ref is None:
        return {}
    tags = {"zoo.config": zoo, "zoo.source": ref.source, "zoo.params": str(ref.params), "zoo.flops": str(ref.flops),
            "zoo.gpus": ref.zoo_gpus, "zoo.gpu_mem_mb": str(ref.gpu_mem_mb),
            "zoo.checkpoint": ref.checkpoint, "zoo.pretrain": ref.pretrain}  # fmt: skip
    for i, r in enumerate(ref.results):
        tags[f"zoo.top1:{r.protocol}"] = str(r.top1)
        tags[f"zoo.top5:{r.protocol}"] = str(r.top5)
        if i == 0:  # the protocol of the config's test pipeline comes first
            tags.update({"zoo.top1": str(r.top1), "zoo.top5": str(r.top5),
                         "zoo.protocol": r.protocol})  # fmt: skip
    if ref.original_top1 is not None:
        tags["zoo.original_top1"] = str(ref.original_top1)
    if ref.original_top5 is not None:
        tags["zoo.original_top5"] = str(ref.original_top5)
    return tags


def run_params(cfg: Config) -> dict[str, str]:
    """The flattened config plus what the linear scaling rule made of it."""
    params = dict(flatten(cfg))
    params.update({
        "lr.base": cfg.optim.lr,
        "lr.effective": cfg.effective_lr,
        "batch.global": cfg.global_batch,
        "batch.reference": cfg.reference_global_batch,
    })  # fmt: skip
    return {k: str(v)[:MAX_PARAM] for k, v in params.items()}


def start_run(cfg: Config, run_name: str, uri: str, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None) -> str:  # fmt: skip
    """Create a run with params, zoo tags and the resolved config; returns its id."""
    from mlflow.entities import Param, RunTag

    client = _client(uri)
    all_tags = {"mlflow.runName": run_name, "vidtempo.run_name": run_name,
                "vidtempo.config": cfg.name, **zoo_tags(cfg), **(tags or {})}  # fmt: skip
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(uri, cfg.run.experiment), tags=all_tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in run_params(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_text(run_id, dump_yaml(cfg), "config.yaml")
    client.log_batch(run_id, tags=[RunTag("vidtempo.status", "running")])
    return run_id


def find_run(uri: str, experiment: str, run_name: str) -> str | None:
    """The newest run of this name in the experiment (a re-submitted run continues it)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`vidtempo.run_name` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key(k), float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v)
    ]
    if batch:
        _client(uri).log_batch(run_id, metrics=batch)


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    _client(uri).log_text(run_id, text, artifact_file)


def log_dict(uri: str, run_id: str, obj: Any, artifact_file: str) -> None:
    log_text(uri, run_id, json.dumps(obj, indent=2, default=str), artifact_file)


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None):
    _client(uri).log_artifact(run_id, str(path), artifact_path)


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = _client(uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def set_running(uri: str, run_id: str) -> None:
    """Reopen a run (a resumed run was marked FAILED or KILLED when it stopped)."""
    client = _client(uri)
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "vidtempo.status", "running")


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client = _client(uri)
    client.set_tag(run_id, "vidtempo.status", status.lower())
    client.set_terminated(run_id, status=status)


def get_run(uri: str, run_id: str) -> dict:
    """{"metrics": latest values, "params", "tags", "status"} of a run."""
    run = _client(uri).get_run(run_id)
    return {"metrics": dict(run.data.metrics), "params": dict(run.data.params),
            "tags": dict(run.data.tags), "status": run.info.status}  # fmt: skip


def experiments(uri: str) -> list[str]:
    """Names of the experiments in the store."""
    return [e.name for e in _client(uri).search_experiments()]


def runs(uri: str, experiment: str) -> list[dict]:
    """Every run of an experiment, newest first, as get_run() dicts plus "run_id" and "name"."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "metrics": dict(r.data.metrics), "params": dict(r.data.params),
             "tags": dict(r.data.tags)}
            for r in client.search_runs([exp.experiment_id], max_results=10_000,
                                        order_by=["attributes.start_time DESC"])]  # fmt: skip


def create_run(uri: str, experiment: str, name: str, tags: dict[str, str]) -> str:
    """A run that holds no training: a report."""
    client = _client(uri)
    run = client.create_run(experiment_id(uri, experiment),
                            tags={"mlflow.runName": name, "vidtempo.run_name": name, **tags})  # fmt: skip
    return run.info.run_id


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in _client(uri).get_metric_history(run_id, key)]


def load_text(uri: str, run_id: str, artifact_file: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}")


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (an mlflow server; on a cluster: ray attach cluster.yaml -p 5000)"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
