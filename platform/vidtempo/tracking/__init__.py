"""MLflow tracking — the only package that imports mlflow. One module per concern:

    tracking.store    where the store lives (URIs; SQLite paths parsed once) and reading it back
    tracking.record   what a run records: params, tags, lineage, description, per-epoch metrics
                      and diagnostics, test results, artifacts; sweeps and reports
    tracking.ui       the MLflow UI: its command, its runs page, the `mlflow ui` process

The names below are those modules' own, gathered so that `tracking.get_run(...)` reads as before.
"""

from vidtempo.tracking.record import (
    end_run,
    key,
    log_artifact,
    log_dict,
    log_figure,
    log_metrics,
    log_text,
    run_params,
    set_running,
    set_tags,
    start_run,
    zoo_tags,
)
from vidtempo.tracking.store import (
    default_uri,
    experiment_id,
    experiments,
    find_run,
    get_run,
    is_local_uri,
    load_text,
    metric_history,
    resolve_uri,
    runs,
)
from vidtempo.tracking.ui import runs_page, start_ui, ui_command

__all__ = [
    "default_uri", "end_run", "experiment_id", "experiments", "find_run", "get_run",
    "is_local_uri", "key", "load_text", "log_artifact", "log_dict", "log_figure", "log_metrics",
    "log_text", "metric_history", "resolve_uri", "run_params", "runs", "runs_page", "set_running",
    "set_tags", "start_run", "start_ui", "ui_command", "zoo_tags",
]  # fmt: skip
