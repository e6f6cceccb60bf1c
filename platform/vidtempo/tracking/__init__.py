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
import tempfile
import time
from pathlib import Path
from typing import Any

from vidtempo import lineage, verbosity
from vidtempo.config import PROJECT_DIR, Config, dump_yaml, flatten

logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
if not verbosity.verbose():  # MLflow's own switch for its per-download progress bar
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

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
    return {k: lineage.redact(str(v))[:MAX_PARAM] for k, v in params.items()}


def start_run(cfg: Config, run_name: str, uri: str, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None) -> str:  # fmt: skip
    """Create a run with params, zoo tags, lineage (vidtempo.lineage: commit, entry point,
    command, user, Ray job; the uncommitted diff as an artifact) and the resolved config;
    returns its id. Tags passed in win over the collected ones."""
    from mlflow.entities import Param, RunTag

    client = _client(uri)
    source, diff = lineage.collect()
    all_tags = {"mlflow.runName": run_name, "vidtempo.run_name": run_name,
                "vidtempo.config": cfg.name, "mlflow.note.content": lineage.describe(cfg),
                **source, **zoo_tags(cfg), **(tags or {})}  # fmt: skip
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(uri, cfg.run.experiment), tags=all_tags)
    run_id = run.info.run_id
    if diff:
        client.log_text(run_id, diff, lineage.DIFF_ARTIFACT)
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


def log_figure(uri: str, run_id: str, figure, artifact_file: str) -> None:
    """A matplotlib figure as an image artifact (closed afterwards)."""
    import matplotlib.pyplot as plt

    try:
        _client(uri).log_figure(run_id, figure, artifact_file)
    finally:
        plt.close(figure)


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
    """A run that holds no training: a report (with the lineage of the process that made it)."""
    client = _client(uri)
    source, diff = lineage.collect()
    run = client.create_run(experiment_id(uri, experiment),
                            tags={"mlflow.runName": name, "vidtempo.run_name": name, **source,
                                  **tags})  # fmt: skip
    if diff:
        client.log_text(run.info.run_id, diff, lineage.DIFF_ARTIFACT)
    return run.info.run_id


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in _client(uri).get_metric_history(run_id, key)]


def load_text(uri: str, run_id: str, artifact_file: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}")


def ui_command(uri: str, experiment: str | None = None) -> str:
    """The command that opens the runs of `uri` (and of one experiment) in the MLflow UI."""
    import sys

    exp = f" --experiment {experiment}" if experiment else ""
    store = "" if uri == default_uri() else f" --mlflow-uri {uri}"
    exe = Path(sys.executable).parent / "vidtempo"  # .venv/bin/vidtempo after `make demo`
    prog = "vidtempo"
    if exe.exists():
        prog = os.path.relpath(exe) if exe.is_relative_to(Path.cwd()) else str(exe)
    return f"{prog} ui{exp}{store}"


def runs_page(base_url: str, uri: str, experiment: str | None = None) -> str:
    """The UI's runs table of an experiment (`#/experiments/<id>/runs`, not MLflow 3's GenAI
    overview): the one named, else the one with the newest run."""
    client = _client(uri)
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(experiments(uri)) or "none yet"
            raise ValueError(f"no experiment '{experiment}' in {uri} (it has: {names})")
        exp_id = exp.experiment_id
    else:
        newest = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                    max_results=1, order_by=["attributes.start_time DESC"])  # fmt: skip
        if not newest:
            return f"{base_url.rstrip('/')}/#/experiments"
        exp_id = newest[0].info.experiment_id
    return f"{base_url.rstrip('/')}/#/experiments/{exp_id}/runs"


def start_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, timeout: float = 120.0):
    """`mlflow ui` on a local store (SQLite), bound to `host`; returns (process, base URL) once
    it answers. An http(s) tracking URI is a server already: nothing starts (process None)."""
    import subprocess
    import sys
    import urllib.request

    if uri.startswith(("http://", "https://")):
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
        return None, uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        raise FileNotFoundError(f"{uri} does not exist yet: train something first (make demo)")
    base = f"http://{host}:{port}"
    try:
        urllib.request.urlopen(f"{base}/health", timeout=2)
        raise OSError(f"port {port} on {host} is taken (another MLflow UI?): pass --port")
    except OSError as exc:
        if "taken" in str(exc):
            raise
    log_path = Path(uri[len("sqlite:///") :]).parent / "ui.log" if uri.startswith("sqlite:///") \
        else Path(tempfile.gettempdir()) / "vidtempo-mlflow-ui.log"  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return proc, base
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited: {log_path.read_text()[-2000:]}") from None
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"mlflow ui did not answer on {base} in {timeout:.0f} s") from None
            time.sleep(0.5)
