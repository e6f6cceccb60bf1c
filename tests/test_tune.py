"""Sweeps: search spaces checked before anything starts (no trial, no MLflow run, no sweep
folder when a key or a value is bad), ASHA's rungs across a resume, and a stopped trial's MLflow
run. A real ASHA sweep on the synthetic dataset — stopped, resumed, weak trials stopped, nested
MLflow runs and a best config — is the cluster rehearsal's last step (test_object_storage)."""

from __future__ import annotations

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
