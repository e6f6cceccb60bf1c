"""Sweeps: search spaces are parsed and checked before anything starts (no trial, no MLflow run,
no sweep folder when a key or a value is bad)."""

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
