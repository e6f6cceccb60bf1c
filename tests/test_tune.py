"""Sweeps: search spaces checked before anything starts (no trial, no MLflow run, no sweep
folder when a key or a value is bad), the held-out part of train/ the trials are ranked on, the
defaults sized to the space and the recipe, the budget, the presets, ASHA's rungs across a resume,
a stopped trial's MLflow run, the report and plot read back from MLflow, and one real TPE + ASHA
sweep killed with SIGKILL, resumed, and retrained on all of train/ (`--final`). A grid sweep on a
cluster — stopped with `ray job stop`, resumed, weak trials stopped — is the cluster rehearsal's
last step (test_object_storage)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidtempo import config
from vidtempo.config import ConfigError
from vidtempo.tune import space as S
from vidtempo.tune.sweep import Plan


def test_space_specs_parse():
    sp = S.parse(["optim.lr=loguniform:1e-3:1e-1", "model.shift_div=choice:4,8,16",
                  "optim.weight_decay=grid:0.0001,0.0005"])  # fmt: skip
    assert sp == {"optim.lr": ("loguniform", [1e-3, 0.1]),
                  "model.shift_div": ("choice", [4, 8, 16]),
                  "optim.weight_decay": ("grid", [1e-4, 5e-4])}  # fmt: skip
    with pytest.raises(ConfigError, match="0 < LOW < HIGH"):
        S.parse(["optim.lr=loguniform:0.1:0.01"])
    with pytest.raises(ConfigError, match="is not one of"):
        S.parse(["optim.lr=normal:0:1"])


def test_space_file(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("optim.lr: loguniform:0.001:0.1\nmodel.shift_div: choice:4,8\n")
    assert set(S.parse(file=f)) == {"optim.lr", "model.shift_div"}


@pytest.mark.parametrize(("item", "message"), [
    ("optim.lrr=loguniform:0.001:0.1", "unknown key 'optim.lrr' .* did you mean 'optim.lr'"),
    ("model.shift_div=choice:4,3", "model.shift_div=3 does not divide the channel counts "
                                   r"\[16, 32, 64, 128\] that tin_r50 \(depth 18, width 16\)"),
    ("model.shift_div=choice:4,32", "model.shift_div=32 does not divide"),
    ("model.shift_div=choice:4,8", "model.shift_div=8: TIN needs in_channels / shift_div divisible by 4"),
    ("model.shift_div=uniform:2:8", "whole numbers"),
    ("optim.momentum=choice:0.9,1.5", "optim.momentum = 1.5 .* out of range"),
])  # fmt: skip
def test_bad_space_fails_before_any_trial(item, message, tmp_path, synthetic_data):
    from vidtempo.tune.sweep import sweep

    cfg = config.load("tin_r18_synthetic", [f"run.storage_path={tmp_path}",
                                            f"run.mlflow_uri=sqlite:///{tmp_path / 'm.db'}"])  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        sweep(cfg, synthetic_data, Plan(space=S.describe(S.parse([item])), samples=4))
    assert not list(tmp_path.iterdir())  # no sweep folder, no MLflow store: nothing started


def test_asha_rungs_survive_a_resume(tmp_path):
    """Tune rebuilds the scheduler from its pickled TuneConfig on `Tuner.restore`; the rungs that
    earlier trials reached must come back, or nothing resumed is ever stopped."""
    import pickle
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from vidtempo.tune.sweep import ResumableASHA

    def make():
        return ResumableASHA(str(tmp_path / "asha_state.pkl"), time_attr="epoch", metric="val/top1",
                             mode="max", max_t=4, grace_period=1, reduction_factor=2)  # fmt: skip

    pickled = pickle.dumps(make())  # what Tuner.restore unpickles: a scheduler with no rungs
    first = make()
    good = [SimpleNamespace(trial_id=f"t{i}") for i in range(3)]
    for t, acc in zip(good, (60.0, 70.0, 65.0)):
        first.on_trial_add(None, t)
        for epoch in (1, 2):
            assert first.on_trial_result(None, t, {"epoch": epoch, "val/top1": acc}) == "CONTINUE"
    # -- interrupted here; the sweep resumes in a new process --
    resumed, weak = pickle.loads(pickled), SimpleNamespace(trial_id="t3")
    for t in good:
        resumed.on_trial_add(None, t)
    resumed.on_trial_add(None, weak)
    assert resumed.on_trial_result(None, weak, {"epoch": 1, "val/top1": 20.0}) == TrialScheduler.STOP
    # without the saved state the weak trial would have set the first rung and gone on
    fresh = make()
    (tmp_path / "asha_state.pkl").unlink()
    fresh.on_trial_add(None, weak)
    assert fresh.on_trial_result(None, weak, {"epoch": 1, "val/top1": 20.0}) == "CONTINUE"


def test_a_trial_asha_stopped_ends_killed_in_mlflow(tmp_path):
    """When Tune stops a trial, fit() may see the stop as an exception and end the child run
    FAILED before its actor dies, or die first and leave it RUNNING; either way the table says
    "stopped" and the MLflow run ends KILLED with `vidtempo.stopped_by=ASHA`. A trial that
    finished keeps its status."""
    from types import SimpleNamespace

    import pandas as pd

    from vidtempo import tracking
    from vidtempo.tune.sweep import summarize

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = config.load("tin_r18_synthetic", ["train.epochs=4", "run.experiment=sweep"])
    results, ids = [], {}
    for trial_id, left, epochs in (("t0", "FAILED", 2), ("t1", "RUNNING", 1),
                                   ("t2", "FINISHED", 4)):  # fmt: skip
        ids[trial_id] = tracking.start_run(base, f"sw-{trial_id}", uri)
        if left != "RUNNING":
            tracking.end_run(uri, ids[trial_id], left)
        curve = pd.DataFrame({"epoch": range(1, epochs + 1), "val/top1": [20.0] * epochs})
        results.append(SimpleNamespace(config={"optim.lr": 0.01}, metrics_dataframe=curve,
                                       error=None, metrics={"trial_id": trial_id}))  # fmt: skip
    rows = summarize(results, base, "val/top1", "max", "sw", uri)
    assert [r["status"] for r in rows] == ["stopped", "stopped", "done"]
    for trial_id, want in (("t0", "KILLED"), ("t1", "KILLED"), ("t2", "FINISHED")):
        run = tracking.get_run(uri, ids[trial_id])
        assert run["status"] == want, trial_id
        assert ("vidtempo.stopped_by" in run["tags"]) == (want == "KILLED")


# ---- the held-out part of train/ -------------------------------------------------------------


def _ids_and_labels(units: list[list[dict]]) -> list[tuple[str, int]]:
    """(video_id, label) of every row the units name."""
    out = []
    for rank in units:
        for u in rank:
            t = pq.ParquetFile(u["path"]).read_row_group(u["row_group"], columns=["video_id", "label"])
            rows = [int(i) for i in u["take"].split(",")] if u["take"] else range(t.num_rows)
            out += [(t["video_id"][i].as_py(), t["label"][i].as_py()) for i in rows]
    return out


def test_the_held_out_part_is_stratified_by_class_fixed_by_video_id_and_apart(synthetic_data):
    """`data.holdout`: the trials train on train/ less a part of each class, chosen by video id
    alone, and validate on that part; the two sides split train/ with nothing shared."""
    from vidtempo.data import holdout, pipeline

    train = synthetic_data / "train"
    rest = _ids_and_labels(pipeline.plan(train, "train", range(1), seed=0, world=2, holdout=0.1))
    held = _ids_and_labels(pipeline.plan(train, "val", range(1), seed=0, world=2, holdout=0.1))
    whole = _ids_and_labels(pipeline.plan(train, "val", range(1)))
    assert sorted(rest + held) == sorted(whole) and not set(rest) & set(held)
    per_class = Counter(label for _, label in whole)
    assert Counter(label for _, label in held) == {c: holdout.count(0.1, n) for c, n in per_class.items()}
    assert all(n == 1 for n in Counter(label for _, label in held).values())  # 3 a class: 1 out
    # by id alone: a class's held-out videos are those first in the order of their ids' hashes
    by_class = {c: sorted((holdout.order_key(v), v) for v, label in whole if label == c)
                for c in per_class}  # fmt: skip
    assert {v for v, _ in held} == {members[0][1] for members in by_class.values()}
    # the same split from another worker count (another deal of the units)
    held4 = _ids_and_labels(pipeline.plan(train, "val", range(1), world=4, holdout=0.1))
    assert sorted(held4) == sorted(held)
    assert [holdout.count(0.1, n) for n in (1, 2, 5, 10, 30)] == [0, 1, 1, 1, 3]
    assert holdout.count(0.5, 2) == 1 and holdout.count(0.9, 3) == 2  # one is always left to train


def test_a_holdout_run_needs_a_holdout_metric():
    with pytest.raises(ConfigError, match="eval.metric must be a holdout/ metric"):
        config.load("tin_r18_synthetic", ["data.holdout=0.1"])
    cfg = config.load("tin_r18_synthetic", ["data.holdout=0.1", "eval.metric=holdout/top1"])
    assert cfg.data.holdout == 0.1
    with pytest.raises(ConfigError, match=r"tune.holdout = 1.0 .* in \(0, 1\)"):
        config.load("tin_r18_synthetic", ["tune.holdout=1.0"])


# ---- defaults, presets, edges -----------------------------------------------------------------


def test_samples_and_grace_default_to_the_space_and_the_recipe():
    def samples(items, search):
        return S.default_samples(S.parse(items), search)

    lr, div = "optim.lr=loguniform:0.005:0.05", "model.shift_div=choice:4,8,16"
    assert samples([lr, div], "random") == samples([lr, div], "tpe") == 12  # 3 × 4
    assert samples([lr, "optim.weight_decay=loguniform:1e-4:1e-3"], "tpe") == 16
    assert samples([lr], "random") == 4
    grid = ["optim.lr=grid:0.01,0.02", "model.shift_div=grid:2,4,8"]
    assert samples(grid, "random") == 1 and samples(grid, "tpe") == 6  # every point once
    assert samples([lr, "model.shift_div=grid:2,4"], "random") == 4  # 4 × the 2 grid points = 8
    base = config.load("tin_r50_1x1x8_40e_sthv1_rgb")  # 1 warm-up epoch
    plan = Plan(space=S.describe(S.parse([lr, div]))).resolved(base)
    assert plan.grace_period == 2 and plan.samples == 12 and plan.trials() == 12
    plan = Plan(space=S.describe(S.parse(grid)), samples=2).resolved(base)
    assert plan.trials() == 12  # random search: each sample over the 6 grid points
    with pytest.raises(ConfigError, match="before the last epoch"):
        Plan(space={"optim.lr": "grid:0.1,0.2"}, grace_period=40).resolved(base)


def test_the_budget_counts_trial_epochs_as_asha_spends_them():
    from vidtempo.tune import report

    assert report.asha_epochs(12, 2, 3) == pytest.approx(2 + 4 / 3 + 6 / 9)  # rungs 2 and 6
    assert report.asha_epochs(3, 2, 2) == pytest.approx(2.5)
    assert report.asha_epochs(4, 4, 2) == 4  # no rung before the end
    cfg = config.load("tin_r50_1x1x8_40e_sthv1_rgb", ["run.use_gpu=true", "run.num_workers=8"])
    b = report.budget(cfg, train_clips=48_000, eval_clips=8_000, trials=12, concurrent=2,
                      grace=2, reduction=2, clips_per_s=400)  # fmt: skip
    assert b.max_trial_epochs == 480 and b.typical_trial_epochs == pytest.approx(
        12 * report.asha_epochs(40, 2, 2))  # fmt: skip
    per_epoch_h = (48_000 + 8_000 / 3) / 400 / 3600
    assert b.device_hours == pytest.approx(b.typical_trial_epochs * per_epoch_h)
    assert b.wall_hours == pytest.approx(b.device_hours / 8 / 2)
    text = "\n".join(b.lines())
    assert "12 trials × 40 epochs: at most 480 trial-epochs; ASHA typically ~" in text
    assert "8 GPUs × 400 clips/s (given: --clips-per-s)" in text and "GPU-hours" in text


def test_shift_div_is_refused_where_nothing_shifts_and_checked_on_the_models_widths():
    from vidtempo import models

    space = S.parse(["model.shift_div=choice:4,8"])
    for name in ("tanet_r50_1x1x8_50e_sthv1_rgb", "tanet_r18_synthetic",
                 "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb"):  # fmt: skip
        with pytest.raises(ConfigError, match="model.shift_div changes nothing in"):
            S.check(config.load(name), space)
    # widths from the model: a width-24 TSM shifts 24-, 48-, 96- and 192-channel inputs
    narrow = config.load("tsm_r18_synthetic", ["model.width=24"])
    assert models.shifted_channels(narrow) == [24, 48, 96, 192]
    S.check(narrow, S.parse(["model.shift_div=choice:3,8"]))  # 3 divides them all
    with pytest.raises(ConfigError, match=r"\[24\] that tsm_r50 \(depth 18, width 24\)"):
        S.check(narrow, S.parse(["model.shift_div=choice:16"]))


@pytest.mark.parametrize("name", config.zoo_names())
def test_every_seed_config_has_a_preset_space_that_checks(name):
    cfg = config.load(name)
    preset = S.preset(cfg)
    space = S.parse(file=preset)
    S.check(cfg, space)
    assert "optim.lr" in space
    assert ("model.shift_div" in space) == cfg.model.arch.startswith("tin")
    assert ("optim.weight_decay" in space) == (not cfg.model.arch.startswith("tin"))


def test_a_space_file_given_wins_over_the_preset(tmp_path):
    from vidtempo.cli import build_parser

    f = tmp_path / "space.yaml"
    f.write_text('optim.lr: "grid:0.01,0.02"\n')
    args = build_parser().parse_args(["tune", "tin_r50_1x1x8_40e_sthv1_rgb", "--data", "d",
                                      "--space-file", str(f)])  # fmt: skip
    assert args.space_file == str(f) and args.samples is None and args.grace_period is None
    jobs = Path(config.PROJECT_DIR) / "jobs" / "tune_tin_sthv1.py"
    assert "DEFAULT_SPACE" not in jobs.read_text()  # the job's space is the preset file


def test_a_best_config_on_s3_is_read_by_train(s3):
    from vidtempo import storage

    bucket = s3.make_bucket("best-config")
    cfg = config.load("tin_r18_synthetic", ["optim.lr=0.0123"])
    storage.write_bytes(f"{bucket}/sweeps/s/best_config.yaml", config.dump_yaml(cfg).encode())
    back = config.load(f"{bucket}/sweeps/s/best_config.yaml", ["run.num_workers=1"])
    assert back.optim.lr == 0.0123 and back.run.num_workers == 1
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(f"{bucket}/sweeps/none/best_config.yaml")


def test_trials_that_fail_are_retried_by_tune(tmp_path):
    from vidtempo.tune.sweep import make_scheduler, make_tuner

    base = config.load("tin_r18_synthetic", ["tune.trial_retries=3"])
    plan = Plan(space={"optim.lr": "grid:0.01,0.02"}).resolved(base)
    tuner = make_tuner(lambda c: None, base, plan, "holdout/top1",
                       make_scheduler(base, plan, "holdout/top1", str(tmp_path)), "s",
                       str(tmp_path), 1, 4.0)  # fmt: skip
    assert tuner._local_tuner._run_config.failure_config.max_failures == 3


@pytest.mark.ray
def test_a_trial_is_handed_the_drivers_storage_and_tracking_not_its_nodes_environment(
        ray_session, synthetic_data, tmp_path, monkeypatch):  # fmt: skip
    """VIDTEMPO_STORAGE and VIDTEMPO_MLFLOW_URI set in the driver alone (as a cluster's head
    shell sets them), after Ray started, so no trial process inherits them: the trial still
    checkpoints under the driver's root and logs to the driver's store, because the driver
    resolves both into the config each trial is handed."""
    from vidtempo import tracking
    from vidtempo.tune.sweep import sweep

    uri = f"sqlite:///{tmp_path / 'driver.db'}"
    monkeypatch.setenv("VIDTEMPO_STORAGE", str(tmp_path / "driver-runs"))
    monkeypatch.setenv("VIDTEMPO_MLFLOW_URI", uri)
    cfg = config.load("tin_r18_synthetic", ["train.epochs=1", "train.min_steps=null",
                                            "schedule.warmup_epochs=0",
                                            "run.batch_per_worker=4", "run.num_workers=1",
                                            "run.experiment=trial-settings"])  # fmt: skip
    out = sweep(cfg, synthetic_data, Plan(space={"optim.lr": "choice:0.02"}, samples=1,
                                          scheduler="grid"), name="own")  # fmt: skip
    assert out["rows"][0]["status"] == "done"
    trials = tmp_path / "driver-runs" / "sweeps" / "own" / "trials"
    assert [d.name.startswith("own-") for d in trials.iterdir()] == [True]
    child = next(r for r in tracking.runs(uri, "trial-settings")
                 if r["tags"].get("vidtempo.sweep") == "own" and "holdout/top1" in r["metrics"])  # fmt: skip
    assert child["params"]["run.storage_path"] == str(tmp_path / "driver-runs")
    assert child["params"]["run.mlflow_uri"] == uri


def test_the_printed_final_command_carries_every_flag_the_sweep_was_given():
    import argparse

    from vidtempo.cli.train import tune_command

    args = argparse.Namespace(config="tin_r50_1x1x8_40e_sthv1_rgb", data="s3://b/data/sthv1",
                              workers=8, imagenet="s3://b/resnet50.pth", storage="s3://b/runs",
                              mlflow_uri="http://head:5000", experiment=None, decode_on="decode",
                              node_wait=30.0, gpu=True, verbose=False,
                              overrides=["train.epochs=2", "optim.lr=0.01"])  # fmt: skip
    cmd = tune_command(args, "sthv1-sweep")
    assert cmd[:7] == ["vidtempo", "tune", "tin_r50_1x1x8_40e_sthv1_rgb", "--data",
                       "s3://b/data/sthv1", "--name", "sthv1-sweep"]  # fmt: skip
    for flag, value in (("--imagenet", "s3://b/resnet50.pth"), ("--workers", "8"),
                        ("--decode-on", "decode"), ("--node-wait", "30.0"),
                        ("--storage", "s3://b/runs"), ("--mlflow-uri", "http://head:5000")):  # fmt: skip
        assert cmd[cmd.index(flag) + 1] == value
    assert "--gpu" in cmd and cmd.count("--set") == 2


def test_the_scaling_rule_preset_reports_the_best_effective_lr_per_global_batch():
    from vidtempo.tune import report

    base = config.load("tin_r18_synthetic")
    space = S.parse(file=Path(config.PROJECT_DIR) / "jobs" / "configs" / "spaces" / "scaling_rule.yaml")
    S.check(base, space)
    # one pass over the data per epoch at every batch (the recipe's min_steps would give a
    # larger batch more passes)
    assert space["train.min_steps"] == ("grid", [None]) and base.train.min_steps
    rows = []
    for per_worker, accs in ((4, (20, 40, 30)), (8, (10, 30, 50)), (16, (5, 35, 45))):
        for lr, acc in zip((0.015, 0.03, 0.06), accs):
            cfg = config.override(base, {"optim.lr": lr, "run.batch_per_worker": per_worker}, "t")
            rows.append({"params": {"optim.lr": lr, "run.batch_per_worker": per_worker},
                         "best": float(acc), "lr.effective": cfg.effective_lr,
                         "batch.global": cfg.global_batch})  # fmt: skip
    lines = report.scaling(rows, "holdout/top1", "max")
    # batch 8: best at base 0.03 (effective 0.015); 16: base 0.06 (0.06); 32: base 0.06 (0.12)
    assert lines[2:] == ["| 8 | 40.00 | 0.015 | 1.00 | 1.00 |", "| 16 | 50.00 | 0.06 | 4.00 | 2.00 |",
                         "| 32 | 45.00 | 0.12 | 8.00 | 4.00 |"]  # fmt: skip
    assert report.scaling([{**r, "params": {"optim.lr": 1}} for r in rows], "m", "max") == []


# ---- a real sweep ---------------------------------------------------------------------------


def _progress(trials: Path) -> dict[str, int]:
    """Epochs of each trial in the checkpoint it would resume from."""
    from vidtempo.train import checkpoint as ckpt

    if not trials.is_dir():
        return {}
    return {d.name: ckpt.restored_epochs(str(d)) for d in trials.iterdir()}


@pytest.fixture(scope="module")
def killed_sweep(synthetic_data, tmp_path_factory) -> dict:
    """A TPE + ASHA sweep (3 trials × 2 epochs) whose driver and local Ray were killed with
    SIGKILL once a trial had checkpointed its first epoch, then `--resume --final`."""
    import psutil

    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    vidtempo = str(Path(sys.executable).parent / "vidtempo")
    common = ["tin_r18_synthetic", "--data", str(synthetic_data), "--name", "sw", "--storage",
              str(tmp / "runs"), "--mlflow-uri", uri, "--experiment", "sweeps", "--set",
              "train.epochs=2", "--set", "train.min_steps=null", "--set", "run.batch_per_worker=4",
              "--set", "schedule.warmup_epochs=0"]  # fmt: skip
    first_log = tmp / "first.log"
    trials = tmp / "runs" / "sweeps" / "sw" / "trials"
    with open(first_log, "w") as log:
        first = subprocess.Popen([vidtempo, "tune", *common, "--search", "tpe", "--samples", "3",
                                  "--space", "optim.lr=loguniform:0.01:0.05",
                                  "--space", "model.shift_div=choice:2,4"],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 400
        while not any(_progress(trials).values()):
            assert first.poll() is None and time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(1)
        driver = psutil.Process(first.pid)
        for proc in [driver, *driver.children(recursive=True)]:  # the driver and its local Ray
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    before = _progress(trials)
    done = subprocess.run([vidtempo, "tune", *common, "--resume", "--final"], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    return {"uri": uri, "tmp": tmp, "vidtempo": vidtempo, "before": before,
            "first": first_log.read_text(), "done": done}  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_a_tpe_sweep_killed_with_sigkill_resumes_and_its_final_run_is_the_reported_one(
        killed_sweep):  # fmt: skip
    """TPE + ASHA ranked on the held-out part of train/: the budget printed before the first
    trial; the driver (and its local Ray) killed with SIGKILL after a trial's first epoch;
    `--resume --final` (the space, samples and search read back from the sweep) ends the sweep —
    no checkpointed epoch trained twice — tags the best trial, plots the sweep on the parent run,
    and retrains the best values on all of train/, tested on val/: the one run of the sweep that
    `zoo compare` lists. `vidtempo tune --report` prints the table again from MLflow."""
    from vidtempo import tracking
    from vidtempo.report import zoo_compare
    from vidtempo.tracking import store

    uri, before, text = killed_sweep["uri"], killed_sweep["before"], killed_sweep["first"]
    # the sweep's first minute (until it was killed) reads as what it is: no Ray error-format
    # line, no traceback, not Tune's experiment box nor its TensorBoard hint
    ray_error = re.compile(r"\d\d:\d\d:\d\d,\d{3} E \d+ \d+\] \S+\.(cc|h):\d+")  # Ray's C++ log
    assert not [ln for ln in text.splitlines() if ray_error.search(ln)], text[-3000:]
    for noise in ("Traceback", "Configuration for experiment", "tensorboard", "View run",
                  "PreemptionWatcher", "Set ray log level"):
        assert noise not in text, (noise, text[-3000:])
    budget = text.index("[sw] budget: 3 trials × 2 epochs: at most 6 trial-epochs")
    assert budget < text.index("trial ") < len(text), text[-3000:]
    # 12 held out; the rest in row groups of the seeded order: one step of 4 on each of the 2
    # workers in every epoch (the fewest rows a worker is dealt in an epoch decide)
    assert "a trial-epoch: 8 training clips + 12 clips ranked on" in text
    done = killed_sweep["done"]
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "[sw] resuming: tpe search over optim.lr, model.shift_div (3 trials)" in out, out[-4000:]
    # the rest of the sweep, its ASHA stops and the final run, quiet too: a stop is one line
    # ("stopped at epoch 1 by ASHA"), not Ray Train's placement-group cleaner nor a worker's dump
    assert not [ln for ln in out.splitlines() if ray_error.search(ln)], out[-3000:]
    for noise in ("Traceback", "SIGABRT", "Fatal Python error", "Cleaning up placement group",
                  "View run", "View experiment"):  # fmt: skip
        assert noise not in out, (noise, out[-3000:])
    assert "stopped after epoch" not in out
    # the sweep: three trials ranked on holdout/top1, none of which read val/
    runs = tracking.runs(uri, "sweeps")
    parent = next(r for r in runs if r["tags"].get("vidtempo.kind") == "sweep")
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parent["run_id"]]
    assert len(children) == 3 and parent["status"] == "FINISHED"
    client = store.client(uri)
    for child in children:
        assert "holdout/top1" in child["metrics"] and not any(
            k.startswith(("val/", "test/")) for k in child["metrics"])  # fmt: skip
        assert child["tags"]["vidtempo.ranked_on"].startswith("a held-out 10% of train/")
        assert child["params"]["data.holdout"] == "0.1"
        epochs = [m.step for m in client.get_metric_history(child["run_id"], "epoch")]
        done_before = before.get(child["tags"]["vidtempo.run_name"], 0)
        assert all(epochs.count(e) == 1 for e in range(1, done_before + 1)), (epochs, before)
        assert sorted(set(epochs)) == [1, 2] or child["tags"].get("vidtempo.stopped_by")
    assert any(before.values())
    best = [c for c in children if c["tags"].get("vidtempo.best_trial") == "true"]
    assert len(best) == 1 and parent["tags"]["vidtempo.best_run_id"] == best[0]["run_id"]
    assert parent["tags"]["vidtempo.search"] == "tpe" and parent["metrics"]["budget/trials"] == 3
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"])}
    assert {"sweep.png", "trials.json", "best_config.yaml"} <= artifacts
    # the final run: the best values, all of train/, the test protocol on val/
    final = next(r for r in runs if r["tags"].get("vidtempo.kind") == "sweep-final")
    assert final["name"] == "sw-final" and "test/top1:2x1" in final["metrics"]
    assert final["params"]["data.holdout"] == "0.0"
    assert json.loads(final["tags"]["vidtempo.config_diff"]) == json.loads(
        best[0]["tags"]["vidtempo.trial_params"])  # fmt: skip
    assert [r["run"] for r in zoo_compare.collect(uri, "sweeps")] == ["sw-final"]
    # a zoo training log imported beside this real training run: the same keys at the same steps
    # (step = epoch), so MLflow's charts overlay them (issue 37)
    from vidtempo.report import zoo_log
    from vidtempo.tracking import record

    lines = [json.dumps({"mode": mode, "epoch": e, "iter": 20, "lr": 0.01, "loss": 2.0 - e / 10,
                         "top1_acc": e / 10, "top5_acc": e / 5, "mean_class_accuracy": e / 12})
             for e in (1, 2) for mode in ("train", "val")]  # fmt: skip
    log = zoo_log.parse("\n".join(lines), "20200729_034132.log.json")
    zoo_run, _ = record.zoo_log(uri, "sweeps", "tin_r50_1x1x8_40e_sthv1_rgb", log, log.sha256, {})
    for key in ("epoch", "loss", "lr", "val/top1", "val/top5", "val/mean_class_acc"):
        ours = [m.step for m in client.get_metric_history(final["run_id"], key)]
        theirs = [m.step for m in client.get_metric_history(zoo_run, key)]
        assert ours and set(ours) <= set(theirs) == {1, 2}, (key, ours, theirs)
    # the table again, from MLflow
    png = killed_sweep["tmp"] / "sweep.png"
    shown = subprocess.run([killed_sweep["vidtempo"], "tune", "--report", "sw", "--mlflow-uri",
                            uri, "--plot", str(png)], capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "tpe search, asha, ranked on a held-out 10% of train/" in shown.stdout
    assert shown.stdout.count("| done") + shown.stdout.count("| stopped") == 3, shown.stdout
    assert "← best" in shown.stdout and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.browser
@pytest.mark.ray
@pytest.mark.slow
def test_the_sweeps_plot_and_best_trial_in_the_mlflow_ui(killed_sweep, page_text, screenshot):
    """The sweep's parent run in the MLflow UI (`vidtempo ui` on its store): the best trial named
    on it, the budget, sweep.png among its artifacts; a screenshot of the page is kept."""
    from vidtempo import tracking
    from vidtempo.machine import free_port

    uri = killed_sweep["uri"]
    parent = next(r for r in tracking.runs(uri, "sweeps")
                  if r["tags"].get("vidtempo.kind") == "sweep")  # fmt: skip
    port = free_port()
    ui = subprocess.Popen([killed_sweep["vidtempo"], "ui", "--mlflow-uri", uri, "--experiment",
                           "sweeps", "--port", str(port)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        runs_url = next(line for line in ui.stdout if line.startswith("runs: ")).split()[1]
        page = page_text(f"{runs_url}/{parent['run_id']}")
        assert "vidtempo.best_run_id" in page and parent["tags"]["vidtempo.best_run_id"] in page, page[:3000]
        assert "vidtempo.budget" in page and "budget/typical_trial_epochs" in page, page[:3000]
        artifacts = page_text(f"{runs_url}/{parent['run_id']}/artifacts/sweep.png")
        assert "sweep.png" in artifacts, artifacts[:3000]
        shot = screenshot(f"{runs_url}/{parent['run_id']}/artifacts/sweep.png",
                          killed_sweep["tmp"] / "parent-run.png")  # fmt: skip
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def test_a_space_comes_back_from_the_sweeps_saved_plan_with_its_numbers():
    """The plan is saved as spec strings (vidtempo_sweep.json); `1e-05` must read back as a
    number, which YAML 1.1 alone does not do (the rehearsal's resumed sweep failed on it)."""
    space = S.parse(["optim.lr=grid:0.005,0.00001", "model.shift_div=choice:2,4",
                     "optim.weight_decay=loguniform:1e-5:1e-3"])  # fmt: skip
    back = Plan(space=S.describe(space)).parsed()
    assert back == space and back["optim.lr"][1] == [0.005, 1e-05]
    assert S.parse_value("prob") == "prob" and S.parse_value("4") == 4


def test_random_search_trains_each_point_of_a_finite_space_once():
    from vidtempo.tune.search import distinct_points

    space = S.parse(["optim.lr=choice:0.01,0.02,0.04", "model.shift_div=choice:2,4"])
    points = distinct_points(space, 8, seed=0)
    assert len(points) == 6 and len({json.dumps(p, sort_keys=True) for p in points}) == 6
    assert points == distinct_points(space, 8, seed=0) != distinct_points(space, 8, seed=1)
    assert len(distinct_points(space, 4, seed=0)) == 4
    # a grid axis or a continuous one: Tune's generator as before
    assert distinct_points(S.parse(["optim.lr=loguniform:0.001:0.1"]), 4, 0) == []
    assert distinct_points(S.parse(["optim.lr=grid:0.01,0.02"]), 4, 0) == []


def test_tpe_never_proposes_a_drawn_point_again():
    """DistinctTPE over 2 × 2 points: four suggestions, four different points, even while the
    first trials still run; the fifth (the space spent) may repeat one."""
    import optuna
    from ray import tune

    from vidtempo.tune.search import DistinctTPE

    tpe = DistinctTPE(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=1))
    tpe.set_search_properties("m", "max", {"a": tune.choice([1, 2]), "b": tune.choice([3, 4])})
    seen = []
    for i in range(4):
        params = tpe.suggest(f"t{i}")
        seen.append((params["a"], params["b"]))
        if i % 2:
            tpe.on_trial_complete(f"t{i}", {"m": float(i), "training_iteration": 1})
    assert len(set(seen)) == 4, seen
    assert tpe.suggest("t4") is not None


def test_the_search_seed_defaults_to_run_seed_and_can_be_set_alone():
    from vidtempo.cli import build_parser

    base = config.load("tin_r18_synthetic", ["run.seed=3"])
    plan = Plan(space={"optim.lr": "choice:0.01,0.02"}, search="tpe")
    assert plan.resolved(base).search_seed == 3
    assert Plan(**{**plan.__dict__, "search_seed": 7}).resolved(base).search_seed == 7
    args = build_parser().parse_args(["tune", "tin_r18_synthetic", "--data", "d",
                                      "--search-seed", "5"])  # fmt: skip
    assert args.search_seed == 5


def test_a_final_run_at_another_scale_rescales_the_lr(tmp_path, capsys):
    """`tune --resume --final --workers N --batch B`: the best trial's values, trained at the
    command's scale with the lr the linear scaling rule gives there (the trials' scale kept when
    the command names none)."""
    from vidtempo.tune.sweep import final_config

    where = [f"run.storage_path={tmp_path / 'runs'}", f"run.mlflow_uri=sqlite:///{tmp_path / 'db'}"]
    trials = config.load("tin_r18_synthetic", ["run.num_workers=2", "run.batch_per_worker=4", *where])
    state = {"base": config.to_dict(trials), "best_params": {"optim.lr": 0.01, "model.shift_div": 4}}
    same = final_config(trials, state, "s")
    assert capsys.readouterr().out == ""  # the trials' scale: nothing to say
    # a command that names no scale keeps the trials' (its recipe's default is not a request)
    plain = config.load("tin_r18_synthetic", where)
    kept = final_config(plain, state, "s")
    assert (kept.run.num_workers, kept.batch_per_worker) == (2, 4)
    capsys.readouterr()
    bigger = config.override(trials, {"run.num_workers": 4, "run.batch_per_worker": 8})
    cfg = final_config(bigger, state, "s", {"run.num_workers": 4, "run.batch_per_worker": 8})
    assert (cfg.run.num_workers, cfg.batch_per_worker) == (4, 8)
    assert (cfg.optim.lr, cfg.model.shift_div) == (0.01, 4) == (same.optim.lr, same.model.shift_div)
    assert cfg.effective_lr == pytest.approx(4 * same.effective_lr)  # 32 videos a step, not 8
    said = capsys.readouterr().out
    assert "final run at 4 workers × 8 videos (the trials: 2 × 4)" in said and "not applied" not in said


def test_tune_takes_batch_and_its_resume_command_keeps_it():
    from vidtempo import cli
    from vidtempo.cli.train import tune_command

    args = cli.build_parser().parse_args(["tune", "tin_r18_synthetic", "--data", "d", "--workers",
                                          "4", "--batch", "8", "--final"])  # fmt: skip
    assert args.batch == 8
    assert tune_command(args, "s")[-4:] == ["--workers", "4", "--batch", "8"]
    from vidtempo.cli.train import final_scale

    assert final_scale(args) == {"run.num_workers": 4, "run.batch_per_worker": 8}
    plain = cli.build_parser().parse_args(["tune", "tin_r18_synthetic", "--data", "d", "--set",
                                           "run.use_gpu=true", "--set", "optim.lr=0.1"])  # fmt: skip
    assert final_scale(plain) == {"run.use_gpu": True}
    typed = cli.build_parser().parse_args(["tune", "tin_r18_synthetic", "--data", "d", "--set",
                                           "run.batch_per_worker=4"])  # fmt: skip
    assert final_scale(typed) == {"run.batch_per_worker": 4}  # CI: '4' was refused as a str
