"""What a sweep costs before it starts, where it stands while it runs, and its answer at the end.

    budget(cfg, data_dir, plan, concurrent)   trials × epochs, ASHA's typical spend, hours
    table(rows, metric)                       the trial table (markdown)
    plot(rows, space, metric)                 the ranking metric over the searched values
    from_mlflow(uri, experiment, sweep)       the rows again, read from the tracking server

No Ray here: the driver computes these from the config, the shards' manifests and MLflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from vidtempo.config import Config
from vidtempo.report import plan as zoo_plan
from vidtempo.tune import space as S

# clips/s of one CPU training worker when none is given: the demo's TIN-R18 on 32² frames ran
# 50-100 clips/s per worker on the 2-core machines (BENCHMARKS.md, "The demo's time"); a
# ResNet-50 at 224² is far slower, so a CPU sweep of a zoo recipe passes --clips-per-s
ASSUMED_CPU_CLIPS_PER_S = 50.0


def asha_epochs(epochs: int, grace: int, reduction: int) -> float:
    """Epochs ASHA spends on a trial on average: every trial reaches the first rung (`grace`),
    1/rf of them the next (grace × rf), …, 1/rf^K of them the end — its rungs filled evenly,
    as Ray's asynchronous version tends to when trials arrive in any order."""
    rungs = []
    m = grace
    while m < epochs:
        rungs.append(m)
        m *= reduction
    if not rungs:
        return float(epochs)
    spent, marks = float(rungs[0]), [*rungs, epochs]
    for k in range(len(rungs)):
        spent += (marks[k + 1] - marks[k]) / reduction ** (k + 1)
    return spent


@dataclass
class Budget:
    trials: int
    epochs: int
    max_trial_epochs: int
    typical_trial_epochs: float  # ASHA's; the maximum without ASHA
    train_clips: int  # per trial-epoch
    eval_clips: int  # per trial-epoch: the held-out part of train/ (or val/)
    device: str  # "GPU" or "CPU worker"
    workers: int  # per trial
    concurrent: int
    clips_per_s: float  # per device
    clips_source: str
    device_hours: float  # typical
    device_hours_max: float
    decode_core_hours: float  # typical
    wall_hours: float  # typical, with `concurrent` trials at once

    def lines(self) -> list[str]:
        asha = (f"; ASHA typically ~{self.typical_trial_epochs:.0f}"
                if self.typical_trial_epochs < self.max_trial_epochs else "")  # fmt: skip
        unit = "GPU-hours" if self.device == "GPU" else "CPU-worker-hours"
        return [
            f"budget: {self.trials} trials × {self.epochs} epochs: at most "
            f"{self.max_trial_epochs} trial-epochs{asha}",
            f"  a trial-epoch: {self.train_clips:,} training clips + {self.eval_clips:,} clips "
            f"ranked on, {self.workers} {self.device}s × {self.clips_per_s:g} clips/s "
            f"({self.clips_source})",
            f"  typical: {self.device_hours:.3g} {unit}, {self.decode_core_hours:.3g} decode "
            f"core-hours, {_hours(self.wall_hours)} with {self.concurrent} trial(s) at once "
            f"(at most {self.device_hours_max:.3g} {unit})",
        ]  # fmt: skip

    def metrics(self) -> dict[str, float]:
        return {f"budget/{k}": float(v) for k, v in asdict(self).items()
                if isinstance(v, int | float)}  # fmt: skip


def budget(cfg: Config, train_clips: int, eval_clips: int, trials: int, concurrent: int,
           grace: int | None, reduction: int, clips_per_s: float | None = None) -> Budget:  # fmt: skip
    """The sweep's cost from zoo plan's model: clips per trial-epoch over clips/s per device
    (an evaluated clip a third of a trained one), the decode core-seconds per clip."""
    gpu = cfg.run.use_gpu
    if clips_per_s is not None:
        source = "given: --clips-per-s"
    elif gpu:
        clips_per_s, source = zoo_plan.ASSUMED_CLIPS_PER_S, "ASSUMED, zoo plan's GPU figure"
    else:
        clips_per_s, source = ASSUMED_CPU_CLIPS_PER_S, "ASSUMED: the demo's per-worker rate"
    epochs = cfg.train.epochs
    typical = trials * (asha_epochs(epochs, grace, reduction) if grace else epochs)
    per_epoch_s = (train_clips + eval_clips / zoo_plan.EVAL_SPEEDUP) / clips_per_s
    decode_s, _ = zoo_plan.decode_cost(cfg)
    device_h = typical * per_epoch_s / 3600
    workers = cfg.run.num_workers
    return Budget(
        trials=trials, epochs=epochs, max_trial_epochs=trials * epochs,
        typical_trial_epochs=typical, train_clips=train_clips, eval_clips=eval_clips,
        device="GPU" if gpu else "CPU worker", workers=workers, concurrent=concurrent,
        clips_per_s=clips_per_s, clips_source=source, device_hours=device_h,
        device_hours_max=trials * epochs * per_epoch_s / 3600,
        decode_core_hours=typical * (train_clips + eval_clips) * decode_s / 3600,
        wall_hours=device_h / workers / max(1, min(concurrent, trials)),
    )  # fmt: skip


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def progress(rows: list[dict], metric: str, mode: str, spent_s: float, spent_epochs: int,
             typical_epochs: float) -> str:  # fmt: skip
    """One line: trials done / running / stopped / failed, the best so far, an ETA from the
    trial-epochs per second so far and the typical spend left."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "stopped", "error")}
    scored = [r for r in rows if r["best"] == r["best"]]
    best = (max if mode == "max" else min)(scored, key=lambda r: r["best"]) if scored else None
    shown = f"best {metric} {best['best']:.2f} (trial {best['trial']})" if best else "no result yet"
    left = max(0.0, typical_epochs - spent_epochs)
    eta = f"ETA ~{_hours(left * spent_s / spent_epochs / 3600)}" if spent_epochs else "ETA –"
    return (f"{counts['done']} done, {counts['running']} running, {counts['stopped']} stopped, "
            f"{counts['error']} failed; {shown}; {eta}")  # fmt: skip


def table(rows: list[dict], metric: str) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", *keys, "lr.effective", f"best {metric}", "epochs", "minutes", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["trial"], *(fmt(r["params"].get(k)) for k in keys), f"{r['lr.effective']:.4g}",
                 f"{r['best']:.2f}", str(r["epochs"]), f"{r.get('minutes', float('nan')):.1f}",
                 r["status"] + (" ← best" if r.get("is_best") else "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BATCH_KEYS = ("run.batch_per_worker", "run.num_workers")


def scaling(rows: list[dict], metric: str, mode: str) -> list[str]:
    """Does the linear scaling rule hold? For a sweep with a batch axis (run.batch_per_worker
    or run.num_workers): per global batch, the trial with the best value and its effective lr;
    each best effective lr over the smallest batch's, next to the batch ratio (the rule says
    they are equal). Empty without a batch axis or with fewer than two batch sizes scored."""
    if not any(k in r["params"] for r in rows for k in BATCH_KEYS):
        return []
    best: dict[int, dict] = {}
    for r in rows:
        if r["best"] != r["best"] or not r.get("batch.global"):
            continue
        b = int(r["batch.global"])
        if b not in best or (r["best"] > best[b]["best"] if mode == "max" else r["best"] < best[b]["best"]):
            best[b] = r
    if len(best) < 2:
        return []
    ref = min(best)
    lines = [f"| global batch | best {metric} | its effective lr | lr ratio | batch ratio |",
             "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for b in sorted(best):
        r = best[b]
        lines.append(f"| {b} | {r['best']:.2f} | {r['lr.effective']:.4g} | "
                     f"{r['lr.effective'] / best[ref]['lr.effective']:.2f} | {b / ref:.2f} |")  # fmt: skip
    return lines


def fmt(v) -> str:
    """A searched value as the tables and the trial lines show it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plot(rows: list[dict], space: dict[str, str], metric: str, title: str):
    """The ranking metric over the searched values: the first two axes of the space as x and
    y (a log axis for a loguniform one or an lr), colour for the metric; a trial ASHA stopped is
    an ×, a failed one grey, the best a star. One axis: the metric on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(space, key=lambda k: (not k.endswith("lr"), k))
    x_key = keys[0]
    y_key = keys[1] if len(keys) > 1 else None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    scored = [r for r in rows if r["best"] == r["best"]]
    lo = min((r["best"] for r in scored), default=0.0)
    hi = max((r["best"] for r in scored), default=1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1)
    cmap = matplotlib.colormaps["viridis"]
    shown = set()
    for r in rows:
        x = float(r["params"].get(x_key, math.nan))
        y = float(r["params"].get(y_key, math.nan)) if y_key else r["best"]
        ok = r["best"] == r["best"]
        style = {"done": ("o", "finished"), "stopped": ("X", "stopped by ASHA"),
                 "running": ("s", "running"), "error": ("v", "failed")}.get(r["status"], ("o", r["status"]))  # fmt: skip
        label = style[1] if style[1] not in shown else None
        shown.add(style[1])
        ax.scatter([x], [y], marker=style[0], s=90, c=[cmap(norm(r["best"])) if ok else "0.6"],
                   edgecolors="black", linewidths=0.6, label=label, zorder=3)  # fmt: skip
        if y_key and ok:
            ax.annotate(f"{r['best']:.1f}", (x, y), textcoords="offset points", xytext=(6, 5),
                        fontsize=8)  # fmt: skip
        if r.get("is_best"):
            ax.scatter([x], [y], marker="*", s=320, facecolors="none", edgecolors="red",
                       linewidths=1.5, label="best", zorder=4)  # fmt: skip
    kind, values = S.parse_spec(x_key, space[x_key])
    if kind == "loguniform" or x_key.endswith("lr"):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
    if kind in ("loguniform", "uniform"):  # the searched range, not only the values drawn
        pad = (values[1] / values[0]) ** 0.05 if kind == "loguniform" else None
        ax.set_xlim(*((values[0] / pad, values[1] * pad) if pad else
                      (values[0] - 0.05 * (values[1] - values[0]), values[1] + 0.05 * (values[1] - values[0]))))  # fmt: skip
    ys = sorted({float(r["params"][y_key]) for r in rows if y_key in r["params"]}) if y_key else []
    if ys and all(y.is_integer() for y in ys):  # a whole-number axis (shift_div): its values
        ax.set_yticks(ys)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key or metric)
    if y_key:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def from_mlflow(uri: str, experiment: str | None, sweep: str) -> dict:
    """A sweep as MLflow holds it (running or finished): {"parent", "metric", "mode", "space",
    "rows"} — each child run's values (its config diff), best value of the ranking metric,
    epochs logged and status. `experiment` None: every experiment of the store."""
    from vidtempo.tracking import store

    c = store.client(uri)
    exps = [c.get_experiment_by_name(experiment)] if experiment else c.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    found = c.search_runs(ids, f"tags.`vidtempo.sweep` = '{sweep}'", max_results=10_000,
                          order_by=["attributes.start_time DESC"]) if ids else []  # fmt: skip
    parents = [r for r in found if r.data.tags.get("vidtempo.kind") == "sweep"]
    if not parents:
        others = c.search_runs(ids, "tags.`vidtempo.kind` = 'sweep'", max_results=1000) if ids else []
        names = sorted({r.data.tags.get("vidtempo.sweep", "?") for r in others})
        where = f"experiment '{experiment}'" if experiment else "any experiment"
        raise FileNotFoundError(f"no sweep named '{sweep}' in {where} at {uri}"
                                + (f"; the sweeps there: {', '.join(names)}" if names else ""))  # fmt: skip
    parent = parents[0]
    tags = parent.data.tags
    metric = tags.get("vidtempo.metric", "val/top1")
    mode = tags.get("vidtempo.mode", "max")
    space = {k[len("space."):]: v for k, v in tags.items() if k.startswith("space.")}
    rows = []
    for child in found:
        t = child.data.tags
        if t.get("mlflow.parentRunId") != parent.info.run_id:
            continue
        history = [m.value for m in c.get_metric_history(child.info.run_id, metric)]
        best = (max if mode == "max" else min)(history) if history else float("nan")
        epochs = len({m.step for m in c.get_metric_history(child.info.run_id, "epoch")})
        status = {"FINISHED": "done", "KILLED": "stopped", "FAILED": "error"}.get(
            child.info.status, "running")  # fmt: skip
        if status == "stopped" and "vidtempo.stopped_by" not in t:
            status = "error"
        rows.append({"trial": t.get("vidtempo.run_name", child.info.run_name).rsplit("-", 1)[-1],
                     "batch.global": int(child.data.params.get("batch.global", 0)),
                     "params": json.loads(t.get("vidtempo.trial_params")
                                          or t.get("vidtempo.config_diff") or "{}"),
                     "lr.effective": float(child.data.params.get("lr.effective", "nan")),
                     "best": float(best), "epochs": epochs, "status": status,
                     "minutes": (child.info.end_time - child.info.start_time) / 60e3
                     if child.info.end_time else float("nan"),
                     "mlflow_run_id": child.info.run_id,
                     "is_best": t.get("vidtempo.best_trial") == "true"})  # fmt: skip
    rows.sort(key=lambda r: r["trial"])
    return {"parent": {"run_id": parent.info.run_id, "status": parent.info.status, "tags": tags},
            "metric": metric, "mode": mode, "space": space, "rows": rows}  # fmt: skip


def from_mlflow_text(uri: str, experiment: str | None, sweep: str, plot_path: str | None) -> str:
    """`vidtempo tune --report SWEEP`: the sweep's search, its trial table, the scaling rule's
    answer when it searched a batch axis, the best trial; the plot saved at `plot_path`."""
    found = from_mlflow(uri, experiment, sweep)
    tags = found["parent"]["tags"]
    lines = [f"sweep {sweep} (MLflow run {found['parent']['run_id']}, "
             f"{found['parent']['status']}): {tags.get('vidtempo.search', 'random')} search, "
             f"{tags.get('vidtempo.scheduler', '?')}, ranked on "
             f"{tags.get('vidtempo.ranked_on', found['metric'])}\n",
             table(found["rows"], found["metric"])]  # fmt: skip
    rule = scaling(found["rows"], found["metric"], found["mode"])
    if rule:
        lines.append("\nthe linear scaling rule: the best effective lr per global batch\n\n"
                     + "\n".join(rule))  # fmt: skip
    best = [r for r in found["rows"] if r["is_best"]]
    if best:
        lines.append(f"\nbest: trial {best[0]['trial']} {best[0]['params']} {found['metric']} "
                     f"{best[0]['best']:.2f} (MLflow run {best[0]['mlflow_run_id']})")  # fmt: skip
    if plot_path:
        import matplotlib.pyplot as plt

        figure = plot(found["rows"], found["space"], found["metric"], f"sweep {sweep}")
        figure.savefig(plot_path, dpi=100)
        plt.close(figure)
        lines.append(f"plot: {plot_path}")
    return "\n".join(lines)
