"""The zoo's training logs read in each form MMAction2 publishes (the tests write them: 0.x JSON
lines and text, 1.x text and vis_data/scalars.json), resumed, cut off and not a log at all, and
imported once as an MLflow reference run whose curves use our runs' keys and steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidtempo import config
from vidtempo.report import zoo_log
from vidtempo.report.zoo_log import LogError

ITERS, EVERY = 100, 20  # iterations per epoch, and the logging interval
CONFIG = "model = dict(\n    type='Recognizer2D',\n    backbone=dict(type='ResNetTIN', depth=50, shift_div=4))\n"


def curve(epoch: int, it: int) -> tuple[float, float]:
    """(loss, lr) of the made-up run at an iteration."""
    return 5.0 - 0.1 * epoch - 0.001 * it, 0.01 * (0.1 if epoch > 3 else 1.0)


def acc(epoch: int) -> tuple[float, float, float]:
    return 0.1 * epoch, 0.1 * epoch + 0.2, 0.1 * epoch - 0.02


def lines_0x_json(epochs, val_hook: bool = True) -> list[str]:
    out = [json.dumps({"env_info": "sys.platform: linux\nPython: 3.7.7", "config": CONFIG,
                       "seed": 0, "exp_name": "tin.py"})]  # fmt: skip
    for e in epochs:
        for it in range(EVERY, ITERS + 1, EVERY):
            loss, lr = curve(e, it)
            out.append(json.dumps({"mode": "train", "epoch": e, "iter": it, "lr": lr, "memory": 6181,
                                   "data_time": 0.2, "top1_acc": 0.01, "top5_acc": 0.05,
                                   "loss_cls": loss, "loss": loss, "grad_norm": 3.4, "time": 0.7}))  # fmt: skip
        t1, t5, m = acc(e)
        val = ({"mean_class_accuracy": m} if val_hook else {"loss_cls": 2.5, "loss": 2.5})
        out.append(json.dumps({"mode": "val", "epoch": e, "iter": ITERS, "lr": curve(e, ITERS)[1],
                               "top1_acc": t1, "top5_acc": t5, **val}))  # fmt: skip
    return out


def lines_0x_text(epochs) -> list[str]:
    out = ["2020-07-29 03:41:32,123 - mmaction - INFO - Environment info:",
           "------------------------------------------------------------",
           "sys.platform: linux", "------------------------------------------------------------",
           "2020-07-29 03:41:32,124 - mmaction - INFO - Distributed training: True",
           "2020-07-29 03:41:33,000 - mmaction - INFO - Config: " + CONFIG.rstrip("\n")]  # fmt: skip
    for e in epochs:
        for it in range(EVERY, ITERS + 1, EVERY):
            loss, lr = curve(e, it)
            out.append(f"2020-07-29 04:00:00,000 - mmaction - INFO - Epoch [{e}][{it}/{ITERS}]\t"
                       f"lr: {lr:.3e}, eta: 1 day, 0:13:23, time: 0.707, data_time: 0.233, "
                       f"memory: 6181, top1_acc: 0.0031, top5_acc: 0.0188, loss_cls: {loss:.4f}, "
                       f"loss: {loss:.4f}, grad_norm: 3.4000")  # fmt: skip
        t1, t5, m = acc(e)
        out.append(f"2020-07-29 05:00:00,000 - mmaction - INFO - Epoch(val) [{e}][{ITERS}]\t"
                   f"top1_acc: {t1:.4f}, top5_acc: {t5:.4f}, mean_class_accuracy: {m:.4f}")  # fmt: skip
    return out


def lines_1x_text(epochs) -> list[str]:
    out = ["2023/02/21 12:00:00 - mmengine - INFO - ",
           "------------------------------------------------------------", "System environment:",
           "    sys.platform: linux",
           "2023/02/21 12:00:01 - mmengine - INFO - Config:", *CONFIG.rstrip("\n").split("\n"),
           "2023/02/21 12:00:02 - mmengine - WARNING - The prefix is not set in metric class."]  # fmt: skip
    for e in epochs:
        for it in range(EVERY, ITERS + 1, EVERY):
            loss, lr = curve(e, it)
            out.append(f"2023/02/21 12:01:00 - mmengine - INFO - Epoch(train)   [{e}][{it:>4}/{ITERS}]"
                       f"  base_lr: 1.0000e-02 lr: {lr:.4e}  eta: 1 day, 2:03:04  time: 0.7000  "
                       f"data_time: 0.2000  memory: 8828  grad_norm: 3.4000  loss: {loss:.4f}  "
                       f"top1_acc: 0.0000  top5_acc: 0.0000  loss_cls: {loss:.4f}")  # fmt: skip
        t1, t5, m = acc(e)
        out.append(f"2023/02/21 13:00:00 - mmengine - INFO - Epoch(val) [{e}][8/8]    "
                   f"acc/top1: {t1:.4f}  acc/top5: {t5:.4f}  acc/mean1: {m:.4f}  data_time: 0.0100  "
                   f"time: 0.2000")  # fmt: skip
    return out


def lines_1x_scalars(epochs) -> list[str]:
    out = []
    for e in epochs:
        for it in range(EVERY, ITERS + 1, EVERY):
            loss, lr = curve(e, it)
            step = (e - 1) * ITERS + it
            out.append(json.dumps({"lr": lr, "data_time": 0.2, "loss": loss, "top1_acc": 0.0,
                                   "loss_cls": loss, "time": 0.7, "epoch": e, "iter": step,
                                   "memory": 8828, "step": step}))  # fmt: skip
        t1, t5, m = acc(e)
        out.append(json.dumps({"acc/top1": t1, "acc/top5": t5, "acc/mean1": m, "data_time": 0.01,
                               "time": 0.2, "step": e}))  # fmt: skip
    return out


WRITERS = {"0.x json": lines_0x_json, "0.x text": lines_0x_text, "1.x text": lines_1x_text,
           "1.x scalars": lines_1x_scalars}  # fmt: skip


@pytest.mark.parametrize("form", list(WRITERS))
def test_each_form_reads_into_our_epoch_curves(form, tmp_path):
    path = tmp_path / "log"
    path.write_text("\n".join(WRITERS[form](range(1, 6))) + "\n")
    log = zoo_log.read(str(path))
    assert log.format == form and sorted(log.epochs) == [1, 2, 3, 4, 5]
    assert log.iters_per_epoch == ITERS and not log.unread and not log.notes, log.summary()
    for e in range(1, 6):
        m = log.epochs[e]
        losses = [curve(e, it)[0] for it in range(EVERY, ITERS + 1, EVERY)]
        assert m["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-4)
        assert m["lr"] == pytest.approx(curve(e, ITERS)[1], rel=1e-3)
        t1, t5, mean1 = acc(e)
        assert m["val/top1"] == pytest.approx(100 * t1, abs=1e-2)  # percent, as ours
        assert m["val/top5"] == pytest.approx(100 * t5, abs=1e-2)
        assert m["val/mean_class_acc"] == pytest.approx(100 * mean1, abs=1e-2)
    steps = [s for s, _ in log.iterations]
    assert steps == [(e - 1) * ITERS + it for e in range(1, 6) for it in range(EVERY, ITERS + 1, EVERY)]
    if form != "1.x scalars":  # scalars.json holds no config
        assert log.config_text == CONFIG


def test_validation_from_a_workflow_step_and_lines_that_do_not_read(tmp_path):
    lines = lines_0x_json(range(1, 3), val_hook=False)
    lines.insert(3, '{"mode": "train", "epoch": 1, "iter": ')  # a line cut in half
    lines.insert(5, '{"mode": "test", "x": 1}')
    path = tmp_path / "x.log.json"
    path.write_text("\n".join(lines))
    log = zoo_log.read(str(path))
    assert log.epochs[1]["val/loss"] == 2.5 and "val/mean_class_acc" not in log.epochs[1]
    assert [no for no, _ in log.unread] == [4, 6]
    assert "2 line(s) not read" in log.summary() and "line 4" in log.summary()


@pytest.mark.parametrize("form", list(WRITERS))
def test_resumed_several_times_and_cut_off_logs_are_read_as_far_as_they_go(form, tmp_path):
    writer = WRITERS[form]
    # a run resumed from epoch 3: this file starts there
    later = tmp_path / "later"
    later.write_text("\n".join(writer(range(3, 6))))
    log = zoo_log.read(str(later))
    assert sorted(log.epochs) == [3, 4, 5] and "starts at epoch 3" in log.summary()
    # resumed twice within one file: epochs 1-3, back to 2, 2-4, back to 4, 4-5
    body = writer(range(1, 4)) + writer(range(2, 5))[(1 if form == "0.x json" else 0):]
    body += [ln for ln in writer(range(4, 6)) if not ln.startswith("{\"env_info")]
    twice = tmp_path / "twice"
    twice.write_text("\n".join(body))
    log = zoo_log.read(str(twice))
    assert sorted(log.epochs) == [1, 2, 3, 4, 5] and "resumed 2 time(s)" in log.summary()
    assert len(log.iterations) == 5 * ITERS // EVERY  # each (epoch, iteration) once
    # cut off in epoch 4 after 2 of its 5 logged iterations
    lines = writer(range(1, 5))
    cut_at = max(i for i, ln in enumerate(lines) if f"[4][{2 * EVERY:>4}/" in ln
                 or f"[4][{2 * EVERY}/" in ln or f'"epoch": 4, "iter": {3 * ITERS + 2 * EVERY}' in ln
                 or f'"epoch": 4, "iter": {2 * EVERY},' in ln)  # fmt: skip
    cut = tmp_path / "cut"
    cut.write_text("\n".join(lines[: cut_at + 1]) + '\n{"mode": "tr')
    log = zoo_log.read(str(cut))
    assert sorted(log.epochs) == [1, 2, 3, 4] and "val/top1" not in log.epochs[4]
    assert f"cut off in epoch 4 at iteration {2 * EVERY}/{ITERS}" in log.summary(), log.summary()


def test_a_file_that_is_no_mmaction2_log_is_refused(tmp_path):
    for name, text in (("notes.txt", "hello\nworld\n"), ("data.json", '{"a": 1}\n{"b": 2}\n'),
                       ("empty.log", "")):  # fmt: skip
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(LogError, match="no MMAction2 training log|none of an MMAction2"):
            zoo_log.read(str(path))
    with pytest.raises(FileNotFoundError, match="no log at"):
        zoo_log.read(str(tmp_path / "missing.log"))


def test_imported_once_with_our_runs_keys_and_steps(tmp_path, capsys):
    """The reference run's curves under the keys and steps a training run logs (the loop's
    epoch keys, the evaluation's val/ keys, at step = epoch); a second import makes no run."""
    import numpy as np

    from vidtempo import metrics, tracking
    from vidtempo.cli import main as cli
    from vidtempo.tracking import record, store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # ours: what the worker logs each epoch (train_one_epoch's keys, evaluate's val/ keys)
    cfg = config.load("tin_r50_1x1x8_40e_sthv1_rgb", ["run.experiment=repro"])
    ours = record.start_run(cfg, "ours", uri)
    acc_ = metrics.Accumulator(4, (1, 5))
    acc_.add(np.array(["a", "b"]), np.array([0, 1]), np.eye(4, dtype=np.float32)[[0, 2]][:, None])
    val = metrics.compute(metrics.merge([acc_.state()]), "val", None)
    for e in (1, 2):
        record.epoch(uri, ours, e, {"epoch": e, "loss": 1.0, "lr": 0.01, **val})
    log_path = tmp_path / "20200729_034132.log.json"
    log_path.write_text("\n".join(lines_0x_json(range(1, 3))))
    args = ["zoo", "import-log", "tin_r50_1x1x8_40e_sthv1_rgb", str(log_path), "--mlflow-uri", uri,
            "--experiment", "repro"]  # fmt: skip
    assert cli(args) == 0 and "logged as MLflow run" in capsys.readouterr().out
    assert cli(args) == 0 and "already imported" in capsys.readouterr().out
    runs = tracking.runs(uri, "repro")
    zoo = [r for r in runs if r["tags"].get("vidtempo.kind") == "zoo-log"]
    assert len(zoo) == 1 and zoo[0]["tags"]["zoo.config"] == "tin_r50_1x1x8_40e_sthv1_rgb"
    c = store.client(uri)
    for key in ("epoch", "loss", "lr", "val/top1", "val/top5", "val/mean_class_acc"):
        theirs = [m.step for m in c.get_metric_history(zoo[0]["run_id"], key)]
        mine = [m.step for m in c.get_metric_history(ours, key)]
        assert sorted(theirs) == sorted(mine) == [1, 2], key
    assert 0 <= zoo[0]["metrics"]["val/top1"] <= 100
    assert len(c.get_metric_history(zoo[0]["run_id"], "loss_iter")) == 2 * ITERS // EVERY
    assert {"zoo_config.py", "recipe_diff.md"} <= {a.path for a in c.list_artifacts(zoo[0]["run_id"])}
    diff_text = c.download_artifacts(zoo[0]["run_id"], "recipe_diff.md", str(tmp_path))
    assert "| model.shift_div | 4 | 4 | equal |" in Path(diff_text).read_text()


def _zoo_and_ours(tmp_path) -> tuple[str, str]:
    """An imported zoo log of 40 epochs (val top-1 2% per epoch) and a 4-epoch run of ours of the
    same zoo config, in experiment "c"; returns (uri, our run id)."""
    from vidtempo import tracking
    from vidtempo.cli import main as cli

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines = [json.dumps({"config": CONFIG})]
    for e in range(1, 41):
        lines.append(json.dumps({"mode": "train", "epoch": e, "iter": 20, "lr": 0.01, "loss": 2.0}))
        lines.append(json.dumps({"mode": "val", "epoch": e, "iter": 20, "top1_acc": e / 50,
                                 "top5_acc": 0.9, "mean_class_accuracy": e / 60}))  # fmt: skip
    log_path = tmp_path / "20200729_034132.log.json"
    log_path.write_text("\n".join(lines))
    assert cli(["zoo", "import-log", "tin_r50_1x1x8_40e_sthv1_rgb", str(log_path),
                "--mlflow-uri", uri, "--experiment", "c"]) == 0  # fmt: skip
    cfg = config.load("tin_r50_1x1x8_40e_sthv1_rgb", ["run.experiment=c", "train.epochs=4"])
    run_id = tracking.start_run(cfg, "short", uri)
    for e, v in ((1, 20.0), (2, 39.0), (3, 55.0), (4, 75.0)):  # at the zoo's epochs 10 … 40
        tracking.log_metrics(uri, run_id, {"epoch": e, "val/top1": v}, step=e)
    tracking.log_metrics(uri, run_id, {"test/top1@1x1": 75.0, "test/top5@1x1": 90.0}, step=4)
    tracking.end_run(uri, run_id)
    return uri, run_id


def test_zoo_compare_reads_the_curves(tmp_path):
    """A run of the zoo recipe with a tenth of the zoo's 40 epochs, against the zoo's imported
    log: the gap at each of its validations at the same fraction of the schedule, the first
    epoch more than the margin behind, and the chart of both curves."""
    from vidtempo.report.zoo_compare import compare

    uri, _ = _zoo_and_ours(tmp_path)
    found = compare(uri, ["c"], log=False, out_dir=tmp_path / "out")["c"]
    assert [r["run"] for r in found["rows"]] == ["short"]  # the log's run is no row of its own
    curve = found["curves"][0]
    assert curve["run"] == "short" and curve["scale"] == 10.0
    assert [(p[1], round(p[3], 6), round(p[4], 6)) for p in curve["points"]] == [
        (10.0, 20.0, 0.0), (20.0, 40.0, -1.0), (30.0, 60.0, -5.0), (40.0, 80.0, -5.0)]  # fmt: skip
    assert curve["first_behind"] == 3 and curve["worst"][0] == 3
    assert "| tin_r50_1x1x8_40e_sthv1_rgb | short | 4 | -2.75 | -5.00 (3) | epoch 3 (> 2 points) |" \
        in found["markdown"], found["markdown"]  # fmt: skip
    assert (tmp_path / "out" / "c" / "zoo_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.browser
@pytest.mark.slow
def test_the_zoo_log_and_our_run_overlaid_in_the_mlflow_ui(tmp_path, page_text, screenshot):
    """`zoo import-log` → `zoo compare` → `vidtempo ui`: MLflow's chart of val/top1 for our run
    and the zoo's log draws both curves on one axis by step (a screenshot is kept)."""
    import signal
    import subprocess
    import sys
    import urllib.parse
    from pathlib import Path

    from vidtempo import tracking
    from vidtempo.machine import free_port
    from vidtempo.report.zoo_compare import compare

    uri, ours = _zoo_and_ours(tmp_path)
    compare(uri, ["c"])
    zoo = next(r for r in tracking.runs(uri, "c") if r["tags"].get("vidtempo.kind") == "zoo-log")
    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "vidtempo"), "ui", "--mlflow-uri", uri,
                           "--experiment", "c", "--port", str(port)], stdout=subprocess.PIPE,
                          text=True)  # fmt: skip
    try:
        runs_url = next(line for line in ui.stdout if line.startswith("runs: ")).split()[1]
        query = urllib.parse.urlencode({
            "runs": json.dumps([ours, zoo["run_id"]]), "metric": json.dumps("val/top1"),
            "experiments": json.dumps([tracking.experiment_id(uri, "c")]),
            "plot_metric_keys": json.dumps(["val/top1"]), "x_axis": "step"})  # fmt: skip
        url = f"{runs_url.split('#')[0]}#/metric?{query}"  # MLflow's chart of one metric, by step
        page = page_text(url)
        assert "short (val/top1)" in page and "zoo-log tin_r50_1x1x8_40e_sthv1_rgb (val/top1)" in page, page[:3000]
        assert "75 (step=4)" in page and "80 (step=40)" in page, page[:3000]
        shot = screenshot(url, tmp_path / "overlay.png")
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
