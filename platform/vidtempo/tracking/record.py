"""What a run records in MLflow — every param, tag, metric and artifact vidtempo writes.

A training run (`fit`):
    start_run        params (the flattened config + the linear scaling rule's numbers), the zoo's
                     published numbers (zoo.* tags), lineage (vidtempo.lineage: commit, entry
                     point, command, user, Ray job; the uncommitted diff), the description,
                     config.yaml, and the epoch plan (steps_per_epoch, epoch_passes, clip_bytes)
    placement        where each worker rank runs and what its numerics depend on
    epoch            each epoch's metrics: loss, lr, clips/s, data wait, val/*, and the temporal
                     modules' diagnostics (TIN offsets/gates, TAM asymmetry)
    test             the test protocol's scores, per-class accuracies, TIN's offset histograms
    end_run          FINISHED / FAILED / KILLED, and the `vidtempo.status` tag
A sweep: sweep_started (the parent run, its search space), trial_stopped, sweep_finished
(best config, trial table). A report (zoo plan, zoo compare, a benchmark): report_run. The zoo's
own training log as a reference run: zoo_log.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from vidtempo import config as C
from vidtempo import lineage
from vidtempo.config import Config, dump_yaml, flatten
from vidtempo.tracking.store import client, experiment_id

MAX_PARAM = 6000  # MLflow's limit on a param value


def key(name: str) -> str:
    """MLflow allows no '@' in names: `test/top1@2x3` is logged as `test/top1:2x3`."""
    return name.replace("@", ":")


# ---- a training run -------------------------------------------------------------------------


def zoo_tags(cfg: Config) -> dict[str, str]:
    """The zoo's published numbers, for side-by-side columns in the UI and `zoo compare`: the
    config's own reference, or that of the zoo config it was derived from (`zoo_config`)."""
    zoo, ref = C.zoo_reference(cfg)
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


def describe(cfg: Config, limit: int = 12) -> str:
    """The run's description: the config, the overrides on top of its file, and how it differs
    from the zoo config it was derived from."""
    order = ("model.", "optim.", "schedule.", "train.", "data.", "eval.", "run.")

    def listed(changes: dict) -> str:  # the recipe first, then data, then where it ran
        keys = sorted(changes, key=lambda k: next((i for i, p in enumerate(order)
                                                   if k.startswith(p)), len(order)))  # fmt: skip
        items = [f"{k}: {changes[k][0]!r} → {changes[k][1]!r}" for k in keys]
        more = f"; and {len(items) - limit} more" if len(items) > limit else ""
        return "; ".join(items[:limit]) + more

    lines = [f"Config `{cfg.name}`."]
    try:
        from_file = C.load(cfg.name)
    except C.ConfigError:
        from_file = None  # a YAML outside jobs/configs, or a sweep's trial config
    if from_file is not None:
        overrides = C.diff(from_file, cfg)
        lines.append(f"Overrides: {listed(overrides)}." if overrides else "No overrides.")
    if cfg.zoo_config:
        changed = C.diff(C.load(cfg.zoo_config), cfg)
        lines.append(f"Derived from the zoo config `{cfg.zoo_config}`; differs in "
                     f"{len(changed)} keys: {listed(changed)}.")  # fmt: skip
    elif cfg.reference is not None:
        lines.append("A zoo recipe (its reference numbers are this run's zoo.* tags).")
    return "\n".join(lines)


def start_run(cfg: Config, run_name: str, uri: str, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None, metrics: dict[str, float] | None = None) -> str:  # fmt: skip
    """Create a run with params, zoo tags, lineage, the description and the resolved config
    (and `metrics` at step 0); returns its id. Tags passed in win over the collected ones."""
    from mlflow.entities import Param, RunTag

    c = client(uri)
    all_tags = {"vidtempo.config": cfg.name, "mlflow.note.content": describe(cfg),
                **zoo_tags(cfg), **(tags or {})}  # fmt: skip
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run_id = _create(uri, cfg.run.experiment, run_name, all_tags)
    params = [Param(k, v) for k, v in run_params(cfg).items()]
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=params[i : i + 100])
    c.log_text(run_id, dump_yaml(cfg), "config.yaml")
    c.log_batch(run_id, tags=[RunTag("vidtempo.status", "running")])
    if metrics:
        log_metrics(uri, run_id, metrics, step=0)
    return run_id


def placement(uri: str, run_id: str, nodes: list[str], numerics: list[str]) -> None:
    """Where each worker rank runs (Ray node ids, by rank) and what the run's last bits depend
    on (device, library versions)."""
    set_tags(uri, run_id, {"vidtempo.worker_nodes": json.dumps(nodes),
                           "vidtempo.numerics": json.dumps(sorted(set(numerics)))})  # fmt: skip


def resumed(uri: str, run_id: str, after_epoch: int, iteration: int) -> None:
    """The workers started from a checkpoint (a restart after a failure, or a resubmitted run):
    metric `resumed_after_epoch`, one point per start, at its step."""
    log_metrics(uri, run_id, {"resumed_after_epoch": float(after_epoch)}, step=iteration)


def epoch(uri: str, run_id: str, number: int, metrics: dict[str, float]) -> None:
    """Epoch `number`'s (1-based) metrics, the temporal modules' diagnostics among them."""
    log_metrics(uri, run_id, metrics, step=number)


def test(uri: str, run_id: str, epochs: int, scores: dict[str, float], per_class: dict,
         offsets_figure=None) -> None:  # fmt: skip
    """The test protocol's scores (at the last epoch's step), the per-class accuracies and, for
    TIN, the histogram figure of its offsets."""
    log_metrics(uri, run_id, scores, step=epochs)
    log_dict(uri, run_id, per_class, "test_per_class_top1.json")
    if offsets_figure is not None:
        log_figure(uri, run_id, offsets_figure, "tin_offsets.png")


def set_running(uri: str, run_id: str) -> None:
    """Reopen a run (a resumed run was marked FAILED or KILLED when it stopped)."""
    c = client(uri)
    c.update_run(run_id, status="RUNNING")
    c.set_tag(run_id, "vidtempo.status", "running")


def evaluation(cfg: Config, uri: str, checkpoint: str, protocol: str,
               scores: dict[str, float]) -> str:  # fmt: skip
    """`vidtempo evaluate … --experiment/--mlflow-uri`: the scores of a checkpoint as a run of
    their own (run `evaluate-<recipe>`, kind `evaluate`, the checkpoint named); its id."""
    run_id = start_run(cfg, f"evaluate-{cfg.name}", uri,
                       tags={"vidtempo.kind": "evaluate", "vidtempo.checkpoint": checkpoint,
                             "vidtempo.protocol": protocol})  # fmt: skip
    log_metrics(uri, run_id, scores, step=0)
    end_run(uri, run_id)
    return run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    c = client(uri)
    c.set_tag(run_id, "vidtempo.status", status.lower())
    c.set_terminated(run_id, status=status)


# ---- a sweep ---------------------------------------------------------------------------------


def sweep_started(base: Config, name: str, uri: str, scheduler: str, space: dict[str, str],
                  tags: dict[str, str] | None = None,
                  metrics: dict[str, float] | None = None) -> str:  # fmt: skip
    """The sweep's parent run (its trials' runs nest under it): the base config as a training
    run records it, the scheduler, the search space, and `tags` / `metrics` (the search, the
    ranking, the budget)."""
    parent = start_run(base, name, uri, {
        "vidtempo.kind": "sweep", "vidtempo.sweep": name, "vidtempo.scheduler": scheduler,
        **{f"space.{k}": v for k, v in space.items()}, **(tags or {})}, metrics=metrics)  # fmt: skip
    log_dict(uri, parent, space, "space.json")
    return parent


def best_trial(uri: str, parent: str, run_id: str, trial: str) -> None:
    """The best trial's run tagged, and named on the sweep's parent run."""
    set_tags(uri, run_id, {"vidtempo.best_trial": "true"})
    set_tags(uri, parent, {"vidtempo.best_run_id": run_id, "vidtempo.best_trial": trial})


def trial_stopped(uri: str, run_id: str) -> None:
    """A trial the scheduler ended: tagged, and KILLED (it may still read RUNNING when its actor
    died at once, or FAILED when fit() saw the stop as an exception first)."""
    set_tags(uri, run_id, {"vidtempo.stopped_by": "ASHA"})
    if client(uri).get_run(run_id).info.status != "KILLED":
        end_run(uri, run_id, "KILLED")


def sweep_finished(uri: str, parent: str, metric: str, trials_md: str, trials: list[dict],
                   best_config_yaml: str | None = None, best: float | None = None,
                   figure=None) -> None:  # fmt: skip
    """The trial table (markdown and JSON), the best trial's config and value, the plot of the
    ranking metric over the searched values (sweep.png); FINISHED."""
    if best_config_yaml is not None:
        log_text(uri, parent, best_config_yaml, "best_config.yaml")
        log_metrics(uri, parent, {f"best/{metric}": best}, step=0)
    log_text(uri, parent, trials_md, "trials.md")
    log_dict(uri, parent, trials, "trials.json")
    if figure is not None:
        log_figure(uri, parent, figure, "sweep.png")
    end_run(uri, parent, "FINISHED")


# ---- a report ------------------------------------------------------------------------------------


def report_run(uri: str, experiment: str, name: str, tags: dict[str, str],
               metrics: dict[str, float] | None = None, texts: dict[str, str] | None = None,
               files: list[str | Path] = (), end: bool = True) -> str:  # fmt: skip
    """A run that holds no training — a zoo plan, a zoo comparison, a benchmark — with the
    lineage of the process that made it, its numbers (step 0), texts and files as artifacts."""
    run_id = _create(uri, experiment, name, tags)
    if metrics:
        log_metrics(uri, run_id, metrics, step=0)
    for artifact_file, text in (texts or {}).items():
        log_text(uri, run_id, text, artifact_file)
    for path in files:
        log_artifact(uri, run_id, path)
    if end:
        end_run(uri, run_id, "FINISHED")
    return run_id


def zoo_log(uri: str, experiment: str, zoo_config: str, log, digest: str,
            texts: dict[str, str]) -> tuple[str, bool]:  # fmt: skip
    """The zoo's training log (vidtempo.report.zoo_log.ZooLog) as a reference run: its epoch
    curves under our runs' keys and steps (loss, lr, val/top1, … at step = epoch), the logged
    iterations as loss_iter / lr_iter at step = global iteration, `texts` as artifacts (the
    log's config). Returns (run id, created); a log imported before (same sha256) is not
    imported again."""
    from mlflow.entities import Metric

    c = client(uri)
    found = c.search_runs([experiment_id(uri, experiment)],
                          f"tags.`vidtempo.zoo_log_sha256` = '{digest}'", max_results=1)  # fmt: skip
    if found:
        return found[0].info.run_id, False
    tags = {"vidtempo.kind": "zoo-log", "zoo.config": zoo_config, "vidtempo.config": zoo_config,
            "vidtempo.zoo_log_source": log.source, "vidtempo.zoo_log_format": log.format,
            "vidtempo.zoo_log_sha256": digest, "mlflow.note.content": log.summary()}  # fmt: skip
    if log.notes:
        tags["vidtempo.zoo_log_notes"] = "; ".join(log.notes)
    run_id = _create(uri, experiment, f"zoo-log {zoo_config}", tags)
    now = int(time.time() * 1000)
    points = [Metric(key(k), float(v), now, e) for e, m in sorted(log.epochs.items())
              for k, v in m.items() if math.isfinite(v)]  # fmt: skip
    points += [Metric(f"{k}_iter", float(v), now, step) for step, m in log.iterations
               for k, v in m.items() if math.isfinite(v)]  # fmt: skip
    for i in range(0, len(points), 1000):  # MLflow takes up to 1000 metrics a batch
        c.log_batch(run_id, metrics=points[i : i + 1000])
    for artifact_file, text in texts.items():
        log_text(uri, run_id, text, artifact_file)
    end_run(uri, run_id, "FINISHED")
    return run_id, True


# ---- the writes themselves -------------------------------------------------------------------


def _create(uri: str, experiment: str, name: str, tags: dict[str, str]) -> str:
    """A new run named `name` with the lineage of this process (vidtempo.lineage: its tags, and
    the uncommitted diff as an artifact); `tags` win over the collected ones."""
    source, diff = lineage.collect()
    run_id = client(uri).create_run(
        experiment_id(uri, experiment),
        tags={"mlflow.runName": name, "vidtempo.run_name": name, **source, **tags}).info.run_id  # fmt: skip
    if diff:
        log_text(uri, run_id, diff, lineage.DIFF_ARTIFACT)
    return run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """The finite numbers of `metrics` (others are skipped), '@' in names made ':'."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key(k), float(v), now, step) for k, v in metrics.items()
             if isinstance(v, int | float) and math.isfinite(v)]  # fmt: skip
    if batch:
        client(uri).log_batch(run_id, metrics=batch)


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    client(uri).log_text(run_id, text, artifact_file)


def log_dict(uri: str, run_id: str, obj: Any, artifact_file: str) -> None:
    log_text(uri, run_id, json.dumps(obj, indent=2, default=str), artifact_file)


def log_figure(uri: str, run_id: str, figure, artifact_file: str) -> None:
    """A matplotlib figure as an image artifact (closed afterwards)."""
    import matplotlib.pyplot as plt

    try:
        client(uri).log_figure(run_id, figure, artifact_file)
    finally:
        plt.close(figure)


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None):
    client(uri).log_artifact(run_id, str(path), artifact_path)


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    c = client(uri)
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))
