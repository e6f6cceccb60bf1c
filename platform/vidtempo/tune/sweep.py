"""A Ray Tune sweep: one Train V2 run per trial, random/grid or TPE search, ASHA or every trial
to the end, nested MLflow runs.

    sweep(base_cfg, data_dir, Plan(space))        then   final(base_cfg, data_dir, sweep_name)

Trials are ranked on a held-out part of train/ by default (`data.holdout` = `tune.holdout`,
metrics `holdout/*`): they never read val/, and the number a sweep reports is that of the final
run, which retrains the best config on all of train/ and evaluates it on val/ with the zoo's
protocol (`--final`). `Plan.rank_on="val"` ranks on val/ instead, named so everywhere.

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
import math
import pickle
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ray import tune

from vidtempo import capacity, config, models, storage, verbosity
from vidtempo.capacity import ResourceError
from vidtempo.config import Config, ConfigError
from vidtempo.data.schema import check_data
from vidtempo.preflight import before_run, settle, storage_root
from vidtempo.tracking import record, store
from vidtempo.train.run import epoch_plan, fit, imagenet_weights
from vidtempo.tune import report
from vidtempo.tune import space as S
from vidtempo.tune.search import make_search

SEARCHES = ("random", "tpe")
SCHEDULERS = ("asha", "grid")  # grid: every trial to the end (first in, first out)
RANK_ON = ("holdout", "val")


@dataclass(frozen=True)
class Plan:
    """What a sweep searches and how; kept beside the sweep (vidtempo_sweep.json), so that
    `--resume` reads it back. None: the default for the space and the recipe (`resolved`)."""

    space: dict[str, str]  # dotted key → spec, e.g. {"optim.lr": "loguniform:0.005:0.05"}
    samples: int | None = None
    search: str = "random"
    scheduler: str = "asha"
    grace_period: int | None = None
    reduction_factor: int = 2
    rank_on: str = "holdout"
    # the seed of the search's draws; None: run.seed, which also seeds every trial's training
    search_seed: int | None = None

    def parsed(self) -> dict[str, tuple]:
        return {k: S.parse_spec(k, v) for k, v in self.space.items()}

    def resolved(self, base: Config) -> Plan:
        """The defaults filled in: samples sized to the space, ASHA's first rung past the
        warm-up."""
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.rank_on not in RANK_ON:
            raise ConfigError(f"--rank-on must be one of {', '.join(RANK_ON)}, got {self.rank_on!r}")
        space = self.parsed()
        samples = self.samples or S.default_samples(space, self.search)
        grace = self.grace_period or default_grace(base)
        if self.scheduler == "asha" and not 1 <= grace < base.train.epochs:
            raise ConfigError(f"--grace-period {grace}: ASHA's first rung must come before the "
                              f"last epoch ({base.train.epochs}); use --scheduler grid")  # fmt: skip
        seed = base.run.seed if self.search_seed is None else self.search_seed
        return replace(self, samples=samples, grace_period=grace, search_seed=seed)

    def trials(self) -> int:
        """Trials the sweep runs: the samples, each over every grid combination (random)."""
        grid = math.prod(len(a) for k, a in self.parsed().values() if k == "grid")
        return self.samples * (grid if self.search == "random" else 1)


def default_grace(base: Config) -> int:
    """ASHA's first rung: the first epoch after the warm-up (a rung inside it compares trials
    still at a fraction of their lr: noise, BENCHMARKS.md "ASHA against the grid"), before the
    last epoch."""
    return max(1, min(base.train.epochs - 1, math.ceil(base.schedule.warmup_epochs) + 1))


def ranking(base: Config, rank_on: str) -> dict:
    """The overrides of a trial's config that make it train on train/ less the held-out part and
    validate on that part (`holdout/top1`); none when the sweep ranks on val/."""
    if rank_on == "val":
        return {}
    return {"data.holdout": base.tune.holdout, "eval.metric": ranked_metric(base, rank_on)}


def ranked_metric(base: Config, rank_on: str) -> str:
    metric = base.eval.metric
    return metric if rank_on == "val" else "holdout/" + metric.split("/", 1)[-1]


def ranked_on(base: Config, rank_on: str) -> str:
    """How a sweep's trials are ranked, in words (a tag on every trial and the parent)."""
    if rank_on == "val":
        return "val/ (the split the final number is reported on)"
    return f"a held-out {base.tune.holdout:.0%} of train/ per class (val/ not read)"


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
    finished, stopped by the scheduler, failed — in place of Tune's periodic status tables —
    and after each trial's end where the sweep stands (done / running / stopped, best, ETA)."""

    def __init__(self, sweep_name: str, metric: str, mode: str, epochs: int, typical: float,
                 stopper: str = "ASHA"):  # fmt: skip
        self.sweep_name, self.metric, self.mode, self.epochs = sweep_name, metric, mode, epochs
        self.stopper = stopper  # who stops a trial before its last epoch
        self.typical = typical  # trial-epochs the budget expects
        self.last_epoch: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.ended: dict[str, str] = {}
        self.started = time.monotonic()
        self.spent = 0  # trial-epochs seen in this process

    def standing(self) -> str:
        rows = [{"trial": t, "best": self.best.get(t, float("nan")),
                 "status": self.ended.get(t, "running")} for t in self.last_epoch]  # fmt: skip
        return report.progress(rows, self.metric, self.mode, time.monotonic() - self.started,
                               self.spent, self.typical)  # fmt: skip

    def _say(self, trial, text: str) -> None:
        print(f"[{self.sweep_name}] trial {trial.trial_id} {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        values = " ".join(f"{k}={report.fmt(v)}" for k, v in sorted(trial.config.items()))
        self._say(trial, f"started: {values}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        epoch = int(result.get("epoch", 0))
        if epoch and epoch != self.last_epoch.get(trial.trial_id):
            self.last_epoch[trial.trial_id] = epoch
            self.spent += 1
            value = result.get(self.metric)
            if isinstance(value, int | float):
                old = self.best.get(trial.trial_id)
                better = old is None or (value > old if self.mode == "max" else value < old)
                self.best[trial.trial_id] = value if better else old
            shown = f"{self.metric} {value:.2f}" if isinstance(value, int | float) else ""
            self._say(trial, f"epoch {epoch}/{self.epochs}  loss {result.get('loss', 0):.4f}  {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epoch = self.last_epoch.get(trial.trial_id, 0)
        done = epoch >= self.epochs
        self.ended[trial.trial_id] = "done" if done else "stopped"
        self._say(trial, "finished" if done else f"stopped at epoch {epoch} by {self.stopper}")
        print(f"[{self.sweep_name}] {self.standing()}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = "error"
        self._say(trial, f"failed (see {trial.local_path or 'its log'})")
        print(f"[{self.sweep_name}] {self.standing()}", flush=True)


def trial(params: dict, *, base: dict, data_dir: str, sweep_name: str, parent_run_id: str,
          imagenet: str | None, rank_on: str) -> None:  # fmt: skip
    """One trial: the base config with this trial's values (ranked as the sweep says), trained
    by a TorchTrainer."""
    from ray.tune.integration.ray_train import TuneReportCallback

    base_cfg = config.from_dict(base)
    searched = config.override(base_cfg, params, "trial params")
    cfg = config.override(searched, ranking(base_cfg, rank_on), "the sweep's ranking")
    name = f"{sweep_name}-{tune.get_context().get_trial_id()}"
    changed = {k: b for k, (_, b) in config.diff(base_cfg, searched).items()}
    tags = {"vidtempo.sweep": sweep_name, "vidtempo.config_diff": json.dumps(changed),
            "vidtempo.trial_params": json.dumps(params),
            "vidtempo.ranked_on": ranked_on(base_cfg, rank_on)}  # fmt: skip
    fit(cfg, data_dir, name=name, imagenet=imagenet, tags=tags, parent_run_id=parent_run_id,
        quiet=True, callbacks=[TuneReportCallback()], under=f"sweeps/{sweep_name}/trials")  # fmt: skip


def sweep(base: Config, data_dir: str | Path, plan: Plan | None = None, name: str | None = None,
          resume: bool = False, imagenet: str | None = None,
          clips_per_s: float | None = None) -> dict:  # fmt: skip
    """Run (or resume: the plan is read back from the sweep) a sweep; returns {"rows", "best",
    "best_config_path", "parent_run_id", "plan", "budget", "metric"}. Trials validate every
    epoch: Tune wants the metric in every report, and ASHA compares trials at whichever epochs
    its rungs fall on."""
    if base.train.val_interval != 1:
        print(f"[sweep] trials validate every epoch (the recipe says every "
              f"{base.train.val_interval}): train.val_interval=1", flush=True)  # fmt: skip
        base = config.override(base, {"train.val_interval": 1}, "the sweep")
    data_dir = storage.normalize(data_dir)  # a local path or a URI
    settled = driver_settings(base)  # what a trial would otherwise read from its node
    base = settle(config.override(base, settled, "the sweep's driver"))
    uri = settled["run.mlflow_uri"]
    imagenet = imagenet_weights(base, imagenet)
    name = name or f"tune-{base.name}"
    root = storage.join(settled["run.storage_path"], "sweeps")
    sweep_dir = storage.join(root, name)
    state = read_state(sweep_dir, name, resume)
    if resume:
        base = settle(config.override(resumed_base(base, state, name), settled,
                                      "the sweep's driver"))  # fmt: skip
        plan = Plan(**state["plan"])  # what it was started with; a space given now is not used
        print(f"[{name}] resuming: {plan.search} search over {', '.join(plan.space)} "
              f"({plan.trials()} trials), {plan.scheduler}, ranked on {plan.rank_on}", flush=True)  # fmt: skip
    elif plan is None:
        raise ConfigError("a new sweep needs a search space: --space KEY=SPEC or --space-file")
    plan = plan.resolved(base)
    space = plan.parsed()
    S.check(base, space)  # bad keys and values fail here, before any trial starts
    check_data(base, data_dir)
    models.check(base)
    before_run(base, uri, imagenet)
    metric = ranked_metric(base, plan.rank_on)
    concurrent = concurrent_trials(base)
    costs = budget_of(base, data_dir, plan, concurrent, clips_per_s)
    for line in costs.lines():
        print(f"[{name}] {line}", flush=True)
    parent = state.get("parent_run_id") if resume else None
    if parent:
        record.set_running(uri, parent)
    else:
        parent = record.sweep_started(base, name, uri, plan.scheduler, plan.space, {
            "vidtempo.search": plan.search, "vidtempo.metric": metric,
            "vidtempo.mode": base.eval.mode, "vidtempo.ranked_on": ranked_on(base, plan.rank_on),
            "vidtempo.budget": "\n".join(costs.lines())}, costs.metrics())  # fmt: skip
        write_state(sweep_dir, {"parent_run_id": parent, "plan": asdict(plan),
                                "base": config.to_dict(base)})  # fmt: skip
    fn = tune.with_resources(
        functools.partial(trial, base=config.to_dict(base), data_dir=str(data_dir),
                          sweep_name=name, parent_run_id=parent, imagenet=imagenet,
                          rank_on=plan.rank_on),  # fmt: skip
        # no CPU (its Train workers hold those); Tune refuses an empty request, so 1 MiB of memory
        {"CPU": 0, "memory": 1 << 20},
    )  # fmt: skip
    if resume and tune.Tuner.can_restore(sweep_dir):
        tuner = tune.Tuner.restore(sweep_dir, fn, resume_errored=True)
    else:
        sched = make_scheduler(base, plan, metric, sweep_dir)
        tuner = make_tuner(fn, base, plan, metric, sched, name, root, concurrent,
                           costs.typical_trial_epochs)  # fmt: skip
    try:
        results = tuner.fit()
    except BaseException:
        record.end_run(uri, parent, "KILLED")
        raise
    state = {"parent_run_id": parent, "plan": asdict(plan), "base": config.to_dict(base)}
    out = finish(results, base, plan, metric, name, uri, sweep_dir, state)
    return {**out, "plan": plan, "budget": costs, "metric": metric}


def driver_settings(base: Config) -> dict:
    """The checkpoint root and tracking URI as this driver resolves them (the recipe's, else
    VIDTEMPO_STORAGE / VIDTEMPO_MLFLOW_URI, else this machine's defaults), written into the
    config every trial is handed: a trial runs on any node, whose environment is not the
    driver's (docs/cluster.md)."""
    return {"run.storage_path": storage_root(base), "run.mlflow_uri": store.resolve_uri(base)}


def read_state(sweep_dir: str, name: str, resume: bool) -> dict:
    """What the sweep folder says: {"parent_run_id", "plan"} of the sweep to resume; {} for a
    new one. A new sweep over an existing name, or a resume of none, fails before anything."""
    state = json.loads(storage.read_bytes(storage.join(sweep_dir, "vidtempo_sweep.json")) or b"{}")
    where = sweep_dir.rsplit("/", 1)[0]  # the sweeps folder
    if resume and "plan" not in state:
        raise FileNotFoundError(f"no sweep named '{name}' to resume in {where}")
    if state and not resume:
        raise FileExistsError(
            f"sweep '{name}' already exists in {where}: pass --resume to continue it, or --name"
        )
    return state


def resumed_base(base: Config, state: dict, name: str, applied: tuple[str, ...] = ()) -> Config:
    """The config a sweep was started with (its trials resume only with the same one); what the
    resuming command sets otherwise is said and left aside (but for the keys the caller
    `applied` itself)."""
    if "base" not in state:
        return base
    saved = config.from_dict(state["base"], f"sweep {name}'s config")
    # set by the driver each time, not by the command (the decode CPUs: settled from the
    # cluster; the final run printed "not applied: run.data_cpus_per_worker" for it)
    ignored = [k for k in config.diff(saved, base)
               if k not in ("train.val_interval", "run.storage_path", "run.mlflow_uri",
                            "run.data_cpus_per_worker", *applied)]
    if ignored:
        print(f"[{name}] resuming with the config it was started with; not applied: "
              f"{', '.join(ignored[:8])}{' …' if len(ignored) > 8 else ''}", flush=True)  # fmt: skip
    return saved


def write_state(sweep_dir: str, state: dict) -> None:
    storage.write_bytes(storage.join(sweep_dir, "vidtempo_sweep.json"), json.dumps(state).encode())


def budget_of(base: Config, data_dir: str, plan: Plan, concurrent: int,
              clips_per_s: float | None) -> report.Budget:  # fmt: skip
    """The budget from the trials' own epoch plan: their steps × global batch and the clips
    they are ranked on."""
    from vidtempo.data.holdout import held_rows
    from vidtempo.data.schema import read_manifest

    cfg = config.override(base, ranking(base, plan.rank_on), "the sweep's ranking")
    steps = epoch_plan(cfg, data_dir)["steps"]
    if plan.rank_on == "val":
        ranked = read_manifest(storage.join(data_dir, "val"))["num_videos"]
    else:
        ranked = sum(len(v) for v in held_rows(storage.join(data_dir, "train"), cfg.data.holdout).values())
    grace = plan.grace_period if plan.scheduler == "asha" else None
    return report.budget(cfg, steps * cfg.global_batch, ranked, plan.trials(), concurrent, grace,
                         plan.reduction_factor, clips_per_s)  # fmt: skip


def make_scheduler(base: Config, plan: Plan, metric: str, sweep_dir: str):
    """ASHA over epochs (its rungs kept beside the sweep), or first-in first-out (a grid)."""
    if plan.scheduler != "asha":
        return tune.schedulers.FIFOScheduler()
    return ResumableASHA(storage.join(sweep_dir, "asha_state.pkl"), time_attr="epoch",
                         max_t=base.train.epochs, grace_period=plan.grace_period,
                         reduction_factor=plan.reduction_factor, stop_last_trials=False)  # fmt: skip


def make_tuner(fn, base: Config, plan: Plan, metric: str, sched, name: str, root: str,
               concurrent: int, typical: float) -> tune.Tuner:  # fmt: skip
    """A seeded search over the plan's space, as many trials at once as the cluster holds; a
    trial that fails is started again (from its last checkpoint) tune.trial_retries times."""
    tpe = plan.search == "tpe"
    domains = {k: S.tune_domain("choice" if tpe and kind == "grid" else kind, args)
               for k, (kind, args) in plan.parsed().items()}  # fmt: skip
    return tune.Tuner(
        fn,
        param_space=domains,
        tune_config=tune.TuneConfig(metric=metric, mode=base.eval.mode, scheduler=sched,
                                    num_samples=plan.samples,
                                    search_alg=make_search(base, plan.parsed(), plan.search,
                                                           plan.samples, plan.search_seed, metric,
                                                           concurrent)),  # fmt: skip
        run_config=tune.RunConfig(
            name=name, storage_path=root, verbose=2 if verbosity.verbose() else 0,
            failure_config=tune.FailureConfig(max_failures=base.tune.trial_retries),
            callbacks=[TrialEvents(name, metric, base.eval.mode, base.train.epochs, typical,
                                   stopper="ASHA" if plan.scheduler == "asha" else "Tune")]),  # fmt: skip
    )


def finish(results, base: Config, plan: Plan, metric: str, name: str, uri: str, sweep_dir: str,
           state: dict) -> dict:  # fmt: skip
    """The trial table, the best trial (tagged, and named on the parent) and its config (beside
    the sweep and in MLflow), the plot over the searched values."""
    mode, parent = base.eval.mode, state["parent_run_id"]
    rows = summarize(results, base, metric, mode, name, uri)
    timeline, seen = [], set()
    for r in rows:
        for t, e, v in r.pop("curve"):  # the test report repeats the last epoch's metrics
            if (r["trial"], int(e)) not in seen:
                seen.add((r["trial"], int(e)))
                timeline.append({"time": float(t), "trial": r["trial"], "epoch": int(e),
                                 "value": float(v)})  # fmt: skip
    best_row = max((r for r in rows if r["best"] == r["best"]),
                   key=lambda r: r["best"] if mode == "max" else -r["best"], default=None)  # fmt: skip
    out = {"rows": rows, "best": best_row, "parent_run_id": parent, "sweep_dir": sweep_dir,
           "timeline": timeline}  # every result in the order received: (time, trial, epoch, value)
    best_yaml = None
    if best_row:
        best_row["is_best"] = True
        best_yaml = config.dump_yaml(config.override(base, best_row["params"], "the best trial"))
        out["best_config_path"] = path = storage.join(sweep_dir, "best_config.yaml")
        storage.write_bytes(path, best_yaml.encode())
        if best_row["mlflow_run_id"]:
            record.best_trial(uri, parent, best_row["mlflow_run_id"], best_row["trial"])
        write_state(sweep_dir, {**state, "best_params": best_row["params"]})
    figure = report.plot(rows, plan.space, metric,
                         f"{name}: best {metric} per trial ({plan.search}, {plan.scheduler})")  # fmt: skip
    table = report.table(rows, metric)
    rule = report.scaling(rows, metric, mode)
    if rule:  # a batch axis: the best effective lr per global batch
        out["scaling"] = "\n".join(rule)
        table += "\n\nthe linear scaling rule: the best effective lr per global batch\n\n" + out["scaling"]
    record.sweep_finished(uri, parent, metric, table, rows, best_yaml,
                          best_row["best"] if best_row else None, figure)  # fmt: skip
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
        curve = []
        if df is not None and {"timestamp", "epoch", metric} <= set(df.columns):
            curve = [tuple(x) for x in df[["timestamp", "epoch", metric]].dropna().itertuples(index=False)]
        rows.append({"trial": _trial_id(r), "params": params, "lr.effective": cfg.effective_lr,
                     "batch.global": cfg.global_batch,
                     "best": float(best), "epochs": epochs, "status": status,
                     "minutes": minutes, "mlflow_run_id": run_id, "curve": curve})  # fmt: skip
    return rows


def _trial_id(result) -> str:
    return str((result.metrics or {}).get("trial_id", ""))



# what a final run takes from the command that asks for it rather than from the sweep's trials:
# its scale (the lr follows by the linear scaling rule, as the searched lr is the base lr at the
# zoo's batch) and its devices
FINAL_SCALE = ("run.num_workers", "run.batch_per_worker", "run.use_gpu")


def final_config(base: Config, state: dict, name: str, scale: dict | None = None) -> Config:
    """The final run's config: the sweep's recipe with its best trial's values, at the trials'
    scale or at `scale` (what the command set of FINAL_SCALE: --workers, --batch, --gpu)."""
    scale = {k: v for k, v in (scale or {}).items() if k in FINAL_SCALE}
    cfg = config.override(resumed_base(base, state, name, tuple(scale)), state["best_params"],
                          f"sweep {name}'s best trial")  # fmt: skip
    trials = (cfg.run.num_workers, cfg.batch_per_worker)
    cfg = config.override(cfg, {**driver_settings(base), **scale,
                                "train.val_interval": base.train.val_interval},
                          "the command")  # fmt: skip
    if (cfg.run.num_workers, cfg.batch_per_worker) != trials:
        print(f"[{name}] final run at {cfg.run.num_workers} workers × {cfg.batch_per_worker} "
              f"videos (the trials: {trials[0]} × {trials[1]}): effective lr "
              f"{report.fmt(cfg.effective_lr)} by the linear scaling rule", flush=True)  # fmt: skip
    return cfg


def final(base: Config, data_dir: str | Path, name: str, imagenet: str | None = None,
          scale: dict | None = None) -> dict:  # fmt: skip
    """The number a sweep reports: its best trial's values on this recipe, trained on all of
    train/ and evaluated on val/ with the zoo's test protocol, as run `<sweep>-final` (the run
    `zoo compare` puts beside the zoo; it leaves the trials out), at the trials' scale or at the
    one the command sets (`scale`, see final_config)."""
    base = config.override(base, driver_settings(base), "the sweep's driver")
    sweep_dir = storage.join(base.run.storage_path, "sweeps", name)
    state = read_state(sweep_dir, name, resume=True)
    if "best_params" not in state:
        raise FileNotFoundError(f"sweep '{name}' has no best trial yet: let it finish "
                                "(--resume) before its final run")  # fmt: skip
    cfg = final_config(base, state, name, scale)
    tags = {"vidtempo.sweep": name, "vidtempo.kind": "sweep-final",
            "vidtempo.sweep_parent_run_id": state["parent_run_id"],
            "vidtempo.config_diff": json.dumps(state["best_params"])}  # fmt: skip
    values = " ".join(f"{k}={report.fmt(v)}" for k, v in sorted(state["best_params"].items()))
    print(f"[{name}] final run {name}-final: {values} on all of train/, tested on val/", flush=True)
    return fit(cfg, data_dir, name=f"{name}-final", imagenet=imagenet, tags=tags)
