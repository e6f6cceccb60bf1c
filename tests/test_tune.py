"""Sweeps: search spaces checked before anything starts (no trial, no MLflow run, no sweep
folder when a key or a value is bad), and a real ASHA sweep on the synthetic dataset that is
interrupted, resumed, stops weak trials, and leaves nested MLflow runs and a best config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidtempo import config
from vidtempo.config import ConfigError
from vidtempo.tune import space as S


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
    ("model.shift_div=choice:4,3", "model.shift_div=3 does not divide"),
    ("model.shift_div=choice:4,32", "model.shift_div=32: TIN needs"),
    ("model.shift_div=uniform:2:8", "whole numbers"),
    ("optim.momentum=choice:0.9,1.5", "optim.momentum = 1.5 .* out of range"),
])  # fmt: skip
def test_bad_space_fails_before_any_trial(item, message, tmp_path, synthetic_data):
    from vidtempo.tune.sweep import sweep

    cfg = config.load("tin_r18_synthetic", [f"run.storage_path={tmp_path}",
                                            f"run.mlflow_uri=sqlite:///{tmp_path / 'm.db'}"])  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        sweep(cfg, synthetic_data, S.parse([item]), samples=4)
    assert not list(tmp_path.iterdir())  # no sweep folder, no MLflow store: nothing started


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory):
    """Enough synthetic videos that a good lr is above chance after two epochs."""
    from vidtempo.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("sweep_data")
    prepare_synthetic(out, {"train": 16, "val": 6}, frames=32, size=40, workers=2, progress=False)
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_asha_sweep_interrupted_and_resumed(ray_session, sweep_data, tmp_path):
    """A 2 × 2 grid over lr and shift_div with ASHA (one rung at epoch 2), 2 CPU workers per
    trial, on 2 cores: interrupted after the first trial, resumed, finished. Trials run in grid
    order: the two with lr 0.005 (which learns: well above chance after 2 epochs) first, then
    the two with lr 1e-5 (which barely moves from chance), so the rung holds good results before
    the weak trials come — one of them from before the interruption.
    The suite's own Ray instance stays up beside the sweep's: a stopped trial must still free
    its CPUs (Ray Train's cleaner used to give up when it saw two instances)."""
    assert ray_session.is_initialized()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "vidtempo.cli", "tune", "tin_r18_synthetic",
           f"--data={sweep_data}", "--name=sw", "--grace-period=2", "--reduction-factor=2",
           "--space", "optim.lr=grid:0.005,0.00001", "--space", "model.shift_div=grid:2,4",
           "--set", "train.epochs=3", "--set", "run.batch_per_worker=4", "--set", "train.min_steps=null",
           "--set", "schedule.warmup_epochs=0",
           f"--storage={tmp_path / 'runs'}", f"--mlflow-uri={uri}", "--experiment=sweep"]  # fmt: skip
    env = {**os.environ, "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not any(r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags
                  for r in _runs(uri)):  # fmt: skip
        assert first.poll() is None, "the sweep ended before it was interrupted"
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(2)
    first.send_signal(signal.SIGINT)  # as Ctrl-C: Tune saves its state and stops
    first.wait(timeout=120)
    finished_before = {r.info.run_id for r in _runs(uri) if r.info.status == "FINISHED"
                       and "mlflow.parentRunId" in r.data.tags}  # fmt: skip

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("vidtempo.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials = json.loads(Path(parent.info.artifact_uri.removeprefix("file://"), "trials.json")
                        .read_text())  # fmt: skip
    assert len(trials) == 4 and len(children) == 4  # one child per trial, none twice
    assert finished_before <= {c.info.run_id for c in children}
    assert {t["status"] for t in trials} <= {"done", "stopped"}  # nothing pending or failed
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped, trials  # ASHA stopped some early ...
    assert all(t["epochs"] == 2 for t in stopped)  # ... at its rung
    assert any(t["status"] == "done" and t["epochs"] == 3 for t in trials)
    for c in children:
        p = c.data.params
        # the searched lr is the base lr at the reference batch (2 × 8); this batch is 2 × 4
        assert float(p["lr.effective"]) == pytest.approx(float(p["optim.lr"]) * 8 / 16)
        assert p["batch.global"] == "8" and "val/top1" in c.data.metrics
        diff = json.loads(c.data.tags["vidtempo.config_diff"])
        assert set(diff) <= {"optim.lr", "model.shift_div", "schedule.warmup_epochs"}
        if c.data.tags.get("vidtempo.stopped_by") == "ASHA":
            assert c.info.status == "KILLED"
    assert {c.data.tags.get("vidtempo.stopped_by") for c in children} >= {"ASHA"}
    assert parent.info.status == "FINISHED" and parent.data.tags["space.model.shift_div"]
    best = config.load(tmp_path / "runs" / "sweeps" / "sw" / "best_config.yaml")
    top = max(trials, key=lambda t: t["best"])
    assert best.optim.lr == pytest.approx(top["params"]["optim.lr"])
    assert best.model.shift_div == top["params"]["model.shift_div"]


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
