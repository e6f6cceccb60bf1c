"""A Ray Tune sweep: one Train V2 run per trial, ASHA or a plain grid, nested MLflow runs.

    sweep(base_cfg, data_dir, space, samples=16)

Each trial is a Tune *function* trainable that fits a TorchTrainer (vidtempo.train.run.fit) with
TuneReportCallback, so Tune sees every epoch's `val/top1` and ASHA can stop it; its Train run is
named `<sweep>-<trial id>` (unique, and stable when a sweep resumes). Everything of a sweep lives
in `<storage>/sweeps/<sweep>/`: Tune's experiment state, ASHA's rungs (asha_state.pkl), the
parent run's id (vidtempo_sweep.json), best_config.yaml, and the trials' checkpoints under
trials/<sweep>-<trial id>/. The trial functions reserve no CPU themselves; the Train workers do, and
`max_concurrent_trials` is what the cluster can hold at once at its largest (an autoscaler adds
the nodes for the trials beyond those alive), so no trial waits forever.
"""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from vidtempo import capacity, config, storage, verbosity
from vidtempo.capacity import ResourceError
from vidtempo.config import Config
from vidtempo.preflight import before_run, check_data
from vidtempo.tracking import record, store
from vidtempo.train.run import fit
from vidtempo.tune import space as S


def concurrent_trials(cfg: Config) -> int:
    """How many trials of `cfg` the cluster holds at once at its largest: its alive nodes and
    those its autoscaler may add (trials beyond the alive nodes wait for theirs)."""
    cap = capacity.read()
    need = capacity.Need.for_run(cfg)
    n = cap.most(need)
    if n < 1:
        raise ResourceError(capacity.impossible(need, cap))
    return n


class ResumableASHA(tune.schedulers.ASHAScheduler):
    """ASHA whose rungs survive `--resume`.

    `Tuner.restore` brings back the trials and the searcher but builds the scheduler afresh
    from the pickled TuneConfig, so the rungs — the results every earlier trial reached at each
    milestone — would be empty and nothing resumed would be stopped. This scheduler writes its
    state (the same pickle of its attributes as Ray's own `save`) next to the sweep after every
    result and reads it back before the first trial is added on resume."""

    def __init__(self, state_path: str, **kwargs):
        super().__init__(**kwargs)
        self.state_path = state_path
        self._state_read = False

    def _read_state(self) -> None:
        if self._state_read:
            return
        saved = storage.read_bytes(self.state_path)
        if saved:
            self.__dict__.update(pickle.loads(saved))
        self._state_read = True

    def _write_state(self) -> None:
        storage.write_bytes(self.state_path, pickle.dumps(self.__dict__))

    def on_trial_add(self, tune_controller, trial) -> None:
        self._read_state()
        if trial.trial_id not in self._trial_info:  # a resumed trial keeps its bracket
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._write_state()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._write_state()


class TrialEvents(tune.Callback):
    """One line per trial event on the driver: started (its values), each epoch's metric,
    finished, stopped by the scheduler, failed — in place of Tune's periodic status tables."""

    def __init__(self, sweep_name: str, metric: str, epochs: int):
        self.sweep_name, self.metric, self.epochs = sweep_name, metric, epochs
        self.last_epoch: dict[str, int] = {}

    def _say(self, trial, text: str) -> None:
        print(f"[{self.sweep_name}] trial {trial.trial_id} {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        values = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.config.items()))
        self._say(trial, f"started: {values}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        epoch = int(result.get("epoch", 0))
        if epoch and epoch != self.last_epoch.get(trial.trial_id):
            self.last_epoch[trial.trial_id] = epoch
            value = result.get(self.metric)
            shown = f"{self.metric} {value:.2f}" if isinstance(value, int | float) else ""
            self._say(trial, f"epoch {epoch}/{self.epochs}  loss {result.get('loss', 0):.4f}  {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epoch = self.last_epoch.get(trial.trial_id, 0)
        self._say(trial, "finished" if epoch >= self.epochs else f"stopped after epoch {epoch}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._say(trial, f"failed (see {trial.local_path or 'its log'})")


def trial(params: dict, *, base: dict, data_dir: str, sweep_name: str, parent_run_id: str,
          imagenet: str | None) -> None:  # fmt: skip
    """One trial: the base config with this trial's values, trained by a TorchTrainer."""
    from ray.tune.integration.ray_train import TuneReportCallback

    base_cfg = config.from_dict(base)
    cfg = config.override(base_cfg, params, "trial params")
    name = f"{sweep_name}-{tune.get_context().get_trial_id()}"
    changed = {k: b for k, (_, b) in config.diff(base_cfg, cfg).items()}
    tags = {"vidtempo.sweep": sweep_name, "vidtempo.config_diff": json.dumps(changed)}
    fit(cfg, data_dir, name=name, imagenet=imagenet, tags=tags, parent_run_id=parent_run_id,
        quiet=True, callbacks=[TuneReportCallback()], under=f"sweeps/{sweep_name}/trials")  # fmt: skip


def sweep(base: Config, data_dir: str | Path, space: dict[str, tuple], samples: int = 1,
          scheduler: str = "asha", grace_period: int = 1, reduction_factor: int = 2,
          name: str | None = None, resume: bool = False, imagenet: str | None = None) -> dict:  # fmt: skip
    """Run (or resume) a sweep; returns {"rows", "best", "best_config_path", "parent_run_id"}.
    Trials validate every epoch: Tune wants the metric in every report, and ASHA compares
    trials at whichever epochs its rungs fall on."""
    if base.train.val_interval != 1:
        print(f"[sweep] trials validate every epoch (the recipe says every "
              f"{base.train.val_interval}): train.val_interval=1", flush=True)  # fmt: skip
        base = config.override(base, {"train.val_interval": 1}, "the sweep")
    S.check(base, space)  # bad keys and values fail here, before any trial starts
    data_dir = storage.normalize(data_dir)  # a local path or a URI
    check_data(base, data_dir)
    uri = store.resolve_uri(base)
    root = storage.join(before_run(base, uri), "sweeps")
    name = name or f"tune-{base.name}"
    sweep_dir = storage.join(root, name)
    parent = parent_run(base, name, uri, space, scheduler, sweep_dir, resume)
    fn = tune.with_resources(
        functools.partial(trial, base=config.to_dict(base), data_dir=str(data_dir),
                          sweep_name=name, parent_run_id=parent, imagenet=imagenet),
        # no CPU (its Train workers hold those); Tune refuses an empty request, so 1 MiB of memory
        {"CPU": 0, "memory": 1 << 20},
    )  # fmt: skip
    if resume:
        tuner = tune.Tuner.restore(sweep_dir, fn, resume_errored=True)
    else:
        sched = make_scheduler(base, scheduler, sweep_dir, grace_period, reduction_factor)
        tuner = make_tuner(fn, base, space, samples, sched, name, root)
    try:
        results = tuner.fit()
    except BaseException:
        record.end_run(uri, parent, "KILLED")
        raise
    return finish(results, base, name, uri, parent, sweep_dir)


def parent_run(base: Config, name: str, uri: str, space: dict[str, tuple], scheduler: str,
               sweep_dir: str, resume: bool) -> str:  # fmt: skip
    """The sweep's parent MLflow run: the interrupted sweep's when resuming, else a new one
    (its id kept beside the sweep, for a later --resume)."""
    marker = storage.join(sweep_dir, "vidtempo_sweep.json")
    state = json.loads(storage.read_bytes(marker) or b"{}")
    can_restore = tune.Tuner.can_restore(sweep_dir)
    where = sweep_dir.rsplit("/", 1)[0]  # the sweeps folder
    if resume and not can_restore:
        raise FileNotFoundError(f"no sweep named '{name}' to resume in {where}")
    if can_restore and not resume:
        raise FileExistsError(
            f"sweep '{name}' already exists in {where}: pass --resume to continue it, or --name"
        )
    if resume and state.get("parent_run_id"):
        record.set_running(uri, state["parent_run_id"])
        return state["parent_run_id"]
    parent = record.sweep_started(base, name, uri, scheduler, S.describe(space))
    storage.write_bytes(marker, json.dumps({"parent_run_id": parent}).encode())
    return parent


def make_scheduler(base: Config, scheduler: str, sweep_dir: str, grace_period: int,
                   reduction_factor: int):  # fmt: skip
    """ASHA over epochs (its rungs kept beside the sweep), or first-in first-out (a grid)."""
    if scheduler != "asha":
        return tune.schedulers.FIFOScheduler()
    return ResumableASHA(storage.join(sweep_dir, "asha_state.pkl"), time_attr="epoch",
                         max_t=base.train.epochs, grace_period=grace_period,
                         reduction_factor=reduction_factor, stop_last_trials=False)  # fmt: skip


def make_tuner(fn, base: Config, space: dict[str, tuple], samples: int, sched, name: str,
               root: str) -> tune.Tuner:  # fmt: skip
    """A seeded search over `space`, as many trials at once as the cluster holds."""
    metric = base.eval.metric
    return tune.Tuner(
        fn,
        param_space={k: S.tune_domain(kind, args) for k, (kind, args) in space.items()},
        # the limit goes to the generator itself, since Tune ignores max_concurrent_trials next
        # to an explicit BasicVariantGenerator
        tune_config=tune.TuneConfig(metric=metric, mode=base.eval.mode, scheduler=sched,
                                    num_samples=samples, search_alg=BasicVariantGenerator(
                                        random_state=base.run.seed,
                                        max_concurrent=concurrent_trials(base))),  # fmt: skip
        run_config=tune.RunConfig(
            name=name, storage_path=root, verbose=2 if verbosity.verbose() else 0,
            callbacks=[TrialEvents(name, metric, base.train.epochs)]),  # fmt: skip
    )


def finish(results, base: Config, name: str, uri: str, parent: str, sweep_dir: str) -> dict:
    """The trial table, the best trial and its config (beside the sweep and in MLflow)."""
    metric, mode = base.eval.metric, base.eval.mode
    rows = summarize(results, base, metric, mode, name, uri)
    best_row = max((r for r in rows if r["best"] == r["best"]),
                   key=lambda r: r["best"] if mode == "max" else -r["best"], default=None)  # fmt: skip
    out = {"rows": rows, "best": best_row, "parent_run_id": parent, "sweep_dir": sweep_dir}
    best_yaml = None
    if best_row:
        best_yaml = config.dump_yaml(config.override(base, best_row["params"], "the best trial"))
        out["best_config_path"] = path = storage.join(sweep_dir, "best_config.yaml")
        storage.write_bytes(path, best_yaml.encode())
    record.sweep_finished(uri, parent, metric, table(rows, metric), rows, best_yaml,
                          best_row["best"] if best_row else None)  # fmt: skip
    return out


def summarize(results, base: Config, metric: str, mode: str, name: str, uri: str) -> list[dict]:
    rows = []
    for r in results:
        params = dict(r.config)
        cfg = config.override(base, params, "trial params")
        df = r.metrics_dataframe
        values = df[metric].dropna() if df is not None and metric in df else []
        best = (values.max() if mode == "max" else values.min()) if len(values) else float("nan")
        epochs = int(df["epoch"].max()) if df is not None and "epoch" in df else 0
        status = "error" if r.error else ("done" if epochs >= base.train.epochs else "stopped")
        run_id = store.find_run(uri, base.run.experiment, f"{name}-{_trial_id(r)}")
        if run_id and status == "stopped":  # ASHA ended it: its MLflow run says so
            record.trial_stopped(uri, run_id)  # a trial that really failed has r.error
        minutes = float(df["time_total_s"].max()) / 60 if df is not None and "time_total_s" in df else float("nan")
        rows.append({"trial": _trial_id(r), "params": params, "lr.effective": cfg.effective_lr,
                     "best": float(best), "epochs": epochs, "status": status,
                     "minutes": minutes, "mlflow_run_id": run_id})  # fmt: skip
    return rows


def _trial_id(result) -> str:
    return str((result.metrics or {}).get("trial_id", ""))


def table(rows: list[dict], metric: str) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", *keys, "lr.effective", f"best {metric}", "epochs", "minutes", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["trial"], *(_fmt(r["params"].get(k)) for k in keys), f"{r['lr.effective']:.4g}",
                 f"{r['best']:.2f}", str(r["epochs"]), f"{r.get('minutes', float('nan')):.1f}",
                 r["status"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
