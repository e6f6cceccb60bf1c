"""Where the MLflow store lives, and reading it back.

The default store is SQLite at an absolute path, `<home>/mlflow/mlflow.db` (vidtempo.machine.home),
with artifacts beside it: MLflow 3 refuses the old `./mlruns` file store. `VIDTEMPO_MLFLOW_URI` or
`run.mlflow_uri` (an `mlflow server` URL on a cluster) replace it. A `sqlite:///` URI is turned
into its file path here and nowhere else (`sqlite_path`).

Every call takes the tracking URI and goes through an `MlflowClient`, so the driver creates a run
and rank 0 of the workers logs to it without any global "active run".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vidtempo import verbosity
from vidtempo.config import Config
from vidtempo.machine import home

logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
if not verbosity.verbose():  # MLflow's own switch for its per-download progress bar
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SQLITE = "sqlite:///"


def sqlite_uri(db: str | Path) -> str:
    """The tracking URI of a SQLite file: sqlite:/// + /abs/path = four slashes."""
    return f"{SQLITE}{Path(db).absolute()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for any other store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def default_uri() -> str:
    return sqlite_uri(home() / "mlflow" / "mlflow.db")


def resolve_uri(cfg: Config | None = None) -> str:
    if cfg is not None and cfg.run.mlflow_uri:
        return cfg.run.mlflow_uri
    return os.environ.get("VIDTEMPO_MLFLOW_URI") or default_uri()


def is_local_uri(uri: str) -> bool:
    """A store on this machine's disk (a file other nodes do not see)."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store keeps its artifacts: beside the database (not in ./mlartifacts of
    whatever the working directory is). None for a server, which has its own."""
    db = sqlite_path(uri)
    return db.parent / "artifacts" if db is not None else None


def client(uri: str):
    """An MlflowClient of `uri` (a SQLite store's folder is made first)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name`, created when it is new."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = artifact_root(uri)
    location = (artifacts / name).as_uri() if artifacts is not None else None
    return c.create_experiment(name, artifact_location=location)


def experiments(uri: str) -> list[str]:
    """Names of the experiments in the store."""
    return [e.name for e in client(uri).search_experiments()]


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """A metric's (step, value) points, by step (the last value of a step logged twice)."""
    points = {m.step: m.value for m in sorted(client(uri).get_metric_history(run_id, key),
                                              key=lambda m: m.timestamp)}  # fmt: skip
    return sorted(points.items())


def find_run(uri: str, experiment: str, run_name: str) -> str | None:
    """The newest run of this name in the experiment (a re-submitted run continues it)."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = c.search_runs([exp.experiment_id],
                          filter_string=f"tags.`vidtempo.run_name` = '{run_name}'",
                          order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return found[0].info.run_id if found else None


def get_run(uri: str, run_id: str) -> dict:
    """{"metrics": latest values, "params", "tags", "status"} of a run."""
    run = client(uri).get_run(run_id)
    return {"metrics": dict(run.data.metrics), "params": dict(run.data.params),
            "tags": dict(run.data.tags), "status": run.info.status}  # fmt: skip


def runs(uri: str, experiment: str) -> list[dict]:
    """Every run of an experiment, newest first, as get_run() dicts plus "run_id" and "name"."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "metrics": dict(r.data.metrics), "params": dict(r.data.params),
             "tags": dict(r.data.tags)}
            for r in c.search_runs([exp.experiment_id], max_results=10_000,
                                   order_by=["attributes.start_time DESC"])]  # fmt: skip


def newest_experiment_id(uri: str) -> str | None:
    """The experiment of the newest run in the store (None when it holds no run)."""
    c = client(uri)
    newest = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1,
                           order_by=["attributes.start_time DESC"])  # fmt: skip
    return newest[0].info.experiment_id if newest else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]


def load_text(uri: str, run_id: str, artifact_file: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}")
