"""Training: optimizer groups, schedules, metrics, the batch stream, checkpoints, and real Ray
Train runs on the synthetic dataset (failure + retry, re-submission, `ray job submit`)."""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtempo import config, metrics, models, tracking
from vidtempo.config import ConfigError
from vidtempo.data import pipeline
from vidtempo.data.batches import epoch_batches
from vidtempo.data.schema import DataError
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.optim import build_optimizer, param_groups
from vidtempo.train.schedule import lr_at
from vidtempo.train.step import masked_cross_entropy
from vidtempo.train.worker import train_loop_per_worker

ROOT = Path(__file__).resolve().parents[1]
TIN = "tin_r50_1x1x8_40e_sthv1_rgb"


# ---- optimizer groups (TSMOptimWrapperConstructor) ------------------------------------------


def _groups(cfg):
    model = models.build(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return model, {g["name"]: g for g in param_groups(model, cfg.optim)}, names


def test_fc_lr5_groups_and_multipliers():
    cfg = config.load(TIN)
    model, groups, names = _groups(cfg)
    members = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    wd = cfg.optim.weight_decay
    assert members["first_conv_weight"] == {"backbone.conv1.weight"}
    assert "first_conv_bias" not in members  # the stem conv has no bias
    assert members["fc_weight"] == {"head.fc.weight"}
    assert members["fc_bias"] == {"head.fc.bias"}
    assert (groups["fc_weight"]["lr_mult"], groups["fc_weight"]["weight_decay"]) == (5.0, wd)
    assert (groups["fc_bias"]["lr_mult"], groups["fc_bias"]["weight_decay"]) == (10.0, 0.0)
    assert (groups["normal_bias"]["lr_mult"], groups["normal_bias"]["weight_decay"]) == (2.0, 0.0)
    assert (groups["norm"]["lr_mult"], groups["norm"]["weight_decay"]) == (1.0, 0.0)
    assert (groups["normal_weight"]["lr_mult"], groups["normal_weight"]["weight_decay"]) == (1, wd)
    # TIN's OffsetNet / WeightNet fall into the normal groups, BN affine into norm
    assert any(".temporal." in n for n in members["normal_weight"])
    assert "backbone.layer1.0.conv2.weight" in members["normal_weight"]
    assert "backbone.bn1.weight" in members["norm"] and "backbone.bn1.bias" in members["norm"]
    # every parameter exactly once
    all_members = [n for m in members.values() for n in m]
    assert sorted(all_members) == sorted(n for n, _ in model.named_parameters())
    opt = build_optimizer(model, cfg.optim, lr=0.04)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["fc_weight"] == pytest.approx(0.2) and lrs["fc_bias"] == pytest.approx(0.4)
    assert lrs["normal_bias"] == pytest.approx(0.08) and lrs["norm"] == pytest.approx(0.04)


def test_groups_without_fc_lr5_and_plain_sgd():
    cfg = config.load(TIN, ["optim.fc_lr5=false"])
    _, groups, names = _groups(cfg)
    assert "fc_weight" not in groups
    assert "head.fc.weight" in {names[id(p)] for p in groups["normal_weight"]["params"]}
    tpn = config.load("tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb")
    assert tpn.optim.paramwise is False and tpn.optim.nesterov is True
    model = models.build(tpn)
    (only,) = param_groups(model, tpn.optim)
    assert only["weight_decay"] == tpn.optim.weight_decay and only["lr_mult"] == 1.0
    assert len(only["params"]) == len(list(model.parameters()))
    opt = build_optimizer(model, tpn.optim, 0.01)
    assert opt.defaults["nesterov"] is True


def test_partial_bn_freezes_all_but_the_first_bn():
    from vidtempo.train.loop import freeze_partial_bn, set_train_mode

    cfg = config.load(TIN, ["model.partial_bn=true", "model.depth=18", "model.num_classes=8"])
    model = models.build(cfg)
    freeze_partial_bn(model, cfg.model)
    set_train_mode(model, cfg.model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns[0].training and bns[0].weight.requires_grad
    assert not any(b.training or b.weight.requires_grad for b in bns[1:])
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = {names[id(p)] for g in param_groups(model, cfg.optim) for p in g["params"]}
    assert "backbone.bn1.weight" in grouped and "backbone.layer1.0.bn1.weight" not in grouped


# ---- schedules (mmcv's LrUpdaterHook, hand-computed) ---------------------------------------


def test_partial_bn_counts_the_backbones_batchnorm2d_only():
    """As MMAction2's ResNetTSM counts them: a TPN neck's norms keep training."""
    from vidtempo.train.loop import freeze_partial_bn, set_train_mode

    cfg = config.load("tpn_tsm_r18_synthetic", ["model.partial_bn=true"])
    model = models.build(cfg)
    freeze_partial_bn(model, cfg.model)
    set_train_mode(model, cfg.model)
    trunk = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    others = [m for name, m in model.named_modules() if not name.startswith("backbone")
              and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # fmt: skip
    assert others and all(m.training and m.weight.requires_grad for m in others)
    assert trunk[0].training and not any(m.training for m in trunk[1:])


def _bn_sync_worker(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from vidtempo.train.loop import sync_bn_buffers

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                                torch.nn.BatchNorm3d(2))  # fmt: skip
    for b in model.buffers():
        if b.is_floating_point():
            b.fill_(float(rank + 1))  # each rank's own statistics
    sync_bn_buffers(model)
    out.put((rank, [b.tolist() for b in model.buffers() if b.is_floating_point()]))
    dist.destroy_process_group()


def test_bn_statistics_are_rank_0s_on_every_rank_before_an_evaluation():
    import torch.multiprocessing as mp

    from vidtempo.machine import free_port

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_bn_sync_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got[0] == got[1] and all(v == 1.0 for b in got[1] for v in b)


def test_warmup_then_cosine_by_epoch():
    s = config.load(TIN).schedule  # 1 warmup epoch from 0.1x, cosine per epoch to 0.5x
    lr = lambda it: lr_at(s, 0.02, 40, 10, it)  # noqa: E731 - 40 epochs of 10 iterations
    assert lr(0) == pytest.approx(0.002)  # 0.02 · (1 − 1·0.9)
    assert lr(5) == pytest.approx(0.011)  # 0.02 · (1 − 0.5·0.9)
    assert lr(10) == pytest.approx(0.01 + 0.01 * (1 + math.cos(math.pi / 40)) / 2)
    assert lr(19) == lr(10)  # constant within an epoch
    assert lr(399) == pytest.approx(0.01 + 0.01 * (1 + math.cos(math.pi * 39 / 40)) / 2)


def test_cosine_per_iteration_and_step_schedules():
    s = config.load("tin_r50_1x1x8_40e_sthv2_rgb").schedule  # per iteration, min_lr 0
    assert s.by_epoch is False
    assert lr_at(s, 0.02, 40, 10, 200) == pytest.approx(0.01)  # half-way: cos(π/2) = 0
    assert lr_at(s, 0.02, 40, 10, 11) == pytest.approx(0.01 * (1 + math.cos(math.pi * 11 / 400)))
    step = config.load("tanet_r50_1x1x8_50e_sthv1_rgb").schedule  # ×0.1 at 30, 40, 45
    assert step.steps == (30, 40, 45)
    at = lambda epoch: lr_at(step, 0.01, 50, 7, epoch * 7)  # noqa: E731
    assert [at(e) for e in (0, 29, 30, 39, 40, 45, 49)] == pytest.approx(
        [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5, 1e-5]
    )


def test_out_of_range_values_are_named():
    with pytest.raises(ConfigError, match=r"schedule.warmup_epochs = 50.0 .* in \[0, train.epochs=40\)"):
        config.load(TIN, ["schedule.warmup_epochs=50"])
    with pytest.raises(ConfigError, match="run.num_workers = 0"):
        config.load(TIN, ["run.num_workers=0"])
    with pytest.raises(ConfigError, match="model.dropout"):
        config.load(TIN, ["model.dropout=1.5"])


# ---- metrics ----------------------------------------------------------------------------------


def test_topk_and_mean_class_accuracy():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.5, 0.4], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 2, 2])
    acc = metrics.topk_accuracy(scores, labels, (1, 2))
    assert acc == {1: 25.0, 2: 75.0}  # top-1: only row 0; top-2 adds rows 1 and 2, not 3
    per = metrics.per_class_accuracy(scores, labels, 4)
    assert per[:3].tolist() == [100.0, 0.0, 0.0] and math.isnan(per[3])
    assert metrics.mean_class_accuracy(scores, labels, 4) == pytest.approx(100 / 3)


def _worker(rank: int, port: int, out: str) -> None:
    """One of two torch.distributed (gloo) processes holding half of the views."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    acc = metrics.Accumulator(3, (1,))
    if rank == 0:  # video a: one view says class 0 strongly; video b: one clean view of 2
        acc.add(["a", "b"], [1, 2], np.array([[[0.9, 0.1, 0.0]], [[0.0, 0.1, 0.9]]]))
    else:  # video a: two views that say class 1 weakly — the mean over 3 views says 1
        acc.add(["a"], [1], np.array([[[0.2, 0.8, 0.0], [0.3, 0.7, 0.0]]]))
    merged = metrics.merge(metrics.gather(acc.state()))
    if rank == 0:
        Path(out).write_text(json.dumps(metrics.compute(merged, "test", "3x1")))
    dist.destroy_process_group()


def test_video_level_aggregation_across_two_workers(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "m.json"
    torch.multiprocessing.spawn(_worker, args=(port, str(out)), nprocs=2)
    m = json.loads(out.read_text())
    # video a: mean of (0.9,0.1,0), (0.2,0.8,0), (0.3,0.7,0) = (0.47, 0.53, 0) → class 1 ✓
    assert m["test/top1@3x1"] == 100.0 and m["test/videos@3x1"] == 2
    # clips: a/view0 wrong, a/view1 right, a/view2 right, b right → 3 of 4
    assert m["test/clip_top1@3x1"] == 75.0


# ---- the per-worker batch stream -------------------------------------------------------------


class FakeShard:
    """A DataIterator stand-in streaming rows with an epoch number in blocks."""

    def __init__(self, rows_per_epoch: dict[int, int], block: int = 5):
        self.rows = [(e, i) for e, n in rows_per_epoch.items() for i in range(n)]
        self.block = block

    def iter_batches(self, **_):
        for i in range(0, len(self.rows), self.block):
            part = self.rows[i : i + self.block]
            yield {"epoch": np.array([e for e, _ in part]), "label": np.array([r for _, r in part]),
                   "ok": np.ones(len(part), bool)}  # fmt: skip


def test_epoch_batches_take_exactly_steps_per_epoch_and_skip_the_rest():
    shard = FakeShard({0: 13, 1: 11, 2: 12})
    batches = list(epoch_batches(shard, batch_size=4, steps=2, start_epoch=0))
    assert [b["epoch"].tolist() for b in batches] == [[0] * 4] * 2 + [[1] * 4] * 2 + [[2] * 4] * 2
    rows = [r for b in batches[:2] for r in b["label"]]
    assert len(set(rows)) == 8  # no row twice within an epoch
    # resuming at epoch 2 skips the rows of earlier epochs
    resumed = list(epoch_batches(FakeShard({1: 11, 2: 12}), 4, 2, start_epoch=2))
    assert [b["epoch"].tolist() for b in resumed] == [[2] * 4] * 2


def test_epoch_batches_do_not_depend_on_how_many_rows_a_block_brings():
    """Decode tasks may bring 8 or 128 rows at a time (pipeline.VIDEOS_PER_TASK): the batches,
    and so the run, are the same."""
    rows = {0: 150, 1: 150}
    runs = [[b["label"].tolist() for b in epoch_batches(FakeShard(rows, block), 8, 18, 0)]
            for block in (1, 8, 128)]  # fmt: skip
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 36


def test_epoch_batches_raise_when_the_stream_runs_short():
    with pytest.raises(RuntimeError, match="ended inside epoch 1"):
        list(epoch_batches(FakeShard({0: 8, 1: 3}), 4, 2, 0))


def test_masked_cross_entropy_ignores_bad_rows():
    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    labels = torch.tensor([0, 1, 1])
    ok = torch.tensor([True, True, False])
    want = torch.nn.functional.cross_entropy(scores[:2], labels[:2])
    assert masked_cross_entropy(scores, labels, ok) == pytest.approx(want.item())
    assert masked_cross_entropy(scores, labels, torch.zeros(3, dtype=torch.bool)) == 0


def test_plan_deals_val_once_and_train_per_epoch(synthetic_data):
    val = pipeline.plan(synthetic_data / "val", "val", range(1), world=2)
    seen = [(u["path"], u["row_group"]) for rank in val for u in rank]
    assert len(seen) == len(set(seen)) == len(pipeline.row_groups(
        [str(p) for p in sorted((synthetic_data / "val").glob("part-*.parquet"))]))  # fmt: skip
    train = pipeline.plan(synthetic_data / "train", "train", range(3), seed=0, world=2)
    assert {u["epoch"] for u in train[0]} == {0, 1, 2}
    assert pipeline.steps_per_epoch(train, 4) >= 1


# ---- checkpoints ------------------------------------------------------------------------------


def test_best_k_keeps_the_best_and_deletes_the_rest(tmp_path):
    best = ckpt.BestK(str(tmp_path), k=2, metric="val/top1", mode="max")
    w = {"x": torch.zeros(1)}
    assert best.offer(1, 10.0, w, {}) and best.offer(2, 30.0, w, {})
    assert best.offer(3, 20.0, w, {})  # pushes epoch 1 out
    assert not best.offer(4, 5.0, w, {})
    assert sorted(p.name for p in (tmp_path / "best").glob("*.pt")) == [
        "epoch_0002.pt", "epoch_0003.pt"]  # fmt: skip
    again = ckpt.BestK(str(tmp_path), k=2, metric="val/top1")  # reloads its index
    assert [e["epoch"] for e in again.entries] == [2, 3]
    assert torch.load(tmp_path / "best" / "epoch_0002.pt")["val/top1"] == 30.0


def test_load_from_tsm_fills_tin_block_conv1(tmp_path):
    """MMAction2 leaves TIN's block conv1 at ImageNet values when fine-tuning
    from TSM (`net` vs `net2`); this load fills them and says what kept its init."""
    small = ["model.depth=18", "model.num_classes=8"]
    tsm = models.build(config.load(TIN, [*small, "model.arch=tsm_r50"]))
    mm = {}
    for k, v in tsm.state_dict().items():  # rename to MMAction2's TSM names
        k = k.replace("head.fc.", "cls_head.fc_cls.")
        if ".conv1.weight" in k and ".layer" in k:
            k = k.replace(".conv1.weight", ".conv1.conv.net.weight")
        mm[k] = v
    torch.save({"state_dict": mm}, tmp_path / "tsm.pth")
    tin = models.build(config.load(TIN, small))
    report = models.load_pretrained(tin, tmp_path / "tsm.pth")
    block = "backbone.layer2.1.conv1.weight"
    assert torch.equal(tin.state_dict()[block], tsm.state_dict()[block])
    assert "kept their init" in report and ".temporal." in report


def test_missing_data_and_wrong_classes_fail_before_training(tmp_path, synthetic_data):
    from vidtempo.data.schema import check_data

    cfg = config.load("tin_r18_synthetic")
    with pytest.raises(DataError, match="has no 'train' folder"):
        check_data(cfg, tmp_path)
    wrong = config.override(cfg, {"model.num_classes": 10})
    with pytest.raises(DataError, match="12 classes .* model.num_classes=10"):
        check_data(wrong, synthetic_data)


def test_each_rank_makes_only_its_own_units_and_the_driver_counts_rows(synthetic_data):
    """A worker's dataset is built from its own units (plan(..., rank)), the same units the
    whole plan deals it; the driver's steps come from counts alone (rows_per_rank), the same as
    counting the whole plan's units — with repeats and a held-out part too."""
    train = synthetic_data / "train"
    for holdout, repeats, world in ((0.0, 1, 3), (0.25, 2, 2)):
        whole = pipeline.plan(train, "train", range(4), 7, world, repeats, holdout)
        for rank in range(world):
            assert pipeline.plan(train, "train", range(4), 7, world, repeats, holdout, rank) == whole[rank]
        groups = pipeline.split_groups(train, "train", holdout)
        rows = pipeline.rows_per_rank(groups, range(4), 7, world, repeats)
        counted = [[sum(u["rows"] for u in whole[r] if u["epoch"] == e) for r in range(world)]
                   for e in range(4)]  # fmt: skip
        assert rows.tolist() == counted
    val = pipeline.plan(synthetic_data / "val", "val", range(1), 0, 2)
    assert [pipeline.plan(synthetic_data / "val", "val", range(1), 0, 2, rank=r) for r in (0, 1)] == val


def test_too_few_val_row_groups_for_the_workers_fail_on_the_driver(synthetic_data):
    """Each worker validates whole row groups: a val/ with fewer than the workers is refused
    before any worker starts (it failed in every worker as it built its dataset, and the
    restarts ate run.max_failures: the rehearsal's miniature val/ of 6 videos on 2 workers)."""
    from vidtempo.train.run import epoch_plan

    groups = sum(len(rank) for rank in pipeline.plan(synthetic_data / "val", "val", range(1)))
    many = config.load("tin_r18_synthetic", [f"run.num_workers={groups + 1}",
                                             "run.batch_per_worker=1"])  # fmt: skip
    with pytest.raises(DataError, match=f"val has {groups} row groups for {groups + 1} workers "
                                        f".*use at most {groups} workers"):  # fmt: skip
        epoch_plan(many, str(synthetic_data))
    enough = config.override(many, {"run.num_workers": groups})
    assert epoch_plan(enough, str(synthetic_data))["steps"] >= 1


# ---- real runs on Ray Train -------------------------------------------------------------------


def tiny(tmp_path, *extra):
    return config.load("tin_r18_synthetic", [
        "train.epochs=3", "train.min_steps=null", "run.batch_per_worker=4",
        f"run.storage_path={tmp_path / 'runs'}",
        f"run.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}", "run.experiment=test", *extra])  # fmt: skip


def flaky_loop(job) -> None:
    """The real loop; on its first attempt, worker 1 raises in the middle of epoch 2 (at a
    fixed step of its batch stream, so that the failure lands there however fast the steps
    run: the workers' gradients are all-reduced every step, so rank 0 has then written its
    progress after epoch 1)."""
    import ray.train

    from vidtempo.data import batches

    real = batches.epoch_batches
    if ray.train.get_context().get_world_rank() == 1 and ray.train.get_checkpoint() is None:
        at = job.steps_per_epoch + max(1, job.steps_per_epoch // 2)

        def failing(*args, **kwargs):
            for i, batch in enumerate(real(*args, **kwargs)):
                if i == at:
                    raise RuntimeError("injected: worker 1 fails in the middle of epoch 2")
                yield batch

        batches.epoch_batches = failing
    try:
        train_loop_per_worker(job)
    finally:
        batches.epoch_batches = real


def _register_by_value():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _check_finished(cfg, res, uri):
    steps = tracking.get_run(uri, res["mlflow_run_id"])["metrics"]["steps_per_epoch"]
    last = sorted(Path(res["run_dir"]).glob("epoch_*"))[-1]
    state, _ = ckpt.load_state(last, 0)
    assert state["epoch"] == cfg.train.epochs - 1
    assert state["iteration"] == cfg.train.epochs * steps  # no step lost or repeated
    history = tracking.metric_history(uri, res["mlflow_run_id"], "epoch")
    assert sorted({s for s, _ in history}) == [1, 2, 3]
    assert "test/top1:2x1" in res["metrics"]
    assert len(list(Path(res["run_dir"]).glob("epoch_*"))) == cfg.run.keep_last
    assert len(list((Path(res["run_dir"]) / "best").glob("*.pt"))) == cfg.run.keep_best
    # TIN's diagnostics: per stage and epoch, and the offsets' histograms at the end
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for what in ("offset_abs", "gate_std"):
            steps = [s for s, _ in tracking.metric_history(uri, res["mlflow_run_id"],
                                                           f"tin/{what}/{stage}")]  # fmt: skip
            # (an epoch retried after the failure logs its point again, as `epoch` above)
            assert sorted(set(steps)) == [1, 2, 3], (what, stage, steps)
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(res["mlflow_run_id"])}
    assert "tin_offsets.png" in artifacts


def _runs_named(uri, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test")
    return client.search_runs([exp.experiment_id], f"tags.`vidtempo.run_name` = '{name}'")


@pytest.mark.ray
def test_tpn_trains_at_the_synthetic_scale_and_logs_its_diagnostics(ray_session, synthetic_data,
                                                                    tmp_path):  # fmt: skip
    """tpn_tsm_r18_synthetic (the neck as narrow as its R18 trunk) trains on Ray; every epoch
    its auxiliary head's loss and accuracy and its levels' size entering the fusions go to
    MLflow, as TIN's offsets and TAM's asymmetry do."""
    from vidtempo.train.run import fit

    cfg = config.load("tpn_tsm_r18_synthetic", [
        "train.epochs=2", "train.min_steps=null", "run.batch_per_worker=4",
        f"run.storage_path={tmp_path / 'runs'}",
        f"run.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}", "run.experiment=test"])  # fmt: skip
    res = fit(cfg, synthetic_data, name="tpn")
    uri = res["mlflow_uri"]
    keys = ["tpn/aux_loss", "tpn/aux_top1", *(f"tpn/level_rms/{w}{i}" for w in ("td", "bu")
                                               for i in (0, 1))]  # fmt: skip
    for key in keys:
        history = tracking.metric_history(uri, res["mlflow_run_id"], key)
        assert sorted(s for s, _ in history) == [1, 2], key
        assert all(v >= 0 for _, v in history), key
    assert 0 < res["metrics"]["tpn/aux_loss"] < 10 and "test/top1:2x1" in res["metrics"]


@pytest.mark.ray
@pytest.mark.slow
def test_worker_failure_resumes_from_the_last_checkpoint(ray_session, synthetic_data, tmp_path):
    from vidtempo.train.run import fit

    _register_by_value()
    cfg = tiny(tmp_path)
    res = fit(cfg, synthetic_data, name="flaky", train_fn=flaky_loop)
    uri = res["mlflow_uri"]
    _check_finished(cfg, res, uri)
    runs = _runs_named(uri, "flaky")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["lr.effective"] == str(cfg.effective_lr)
    # the seed reproduces the run, and the failure and retry changed nothing: a run that never
    # failed has the same loss and val/top1 in every epoch, to the last bit
    steady = fit(cfg, synthetic_data, name="steady")
    for key in ("loss", "val/top1"):
        assert dict(tracking.metric_history(uri, steady["mlflow_run_id"], key)) == dict(
            tracking.metric_history(uri, res["mlflow_run_id"], key)), key  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_resubmitted_run_resumes_the_same_mlflow_run(ray_session, synthetic_data, tmp_path):
    from vidtempo.train.run import fit

    _register_by_value()
    cfg = tiny(tmp_path, "run.max_failures=0")
    with pytest.raises(Exception):  # noqa: B017 - Ray wraps the worker's error
        fit(cfg, synthetic_data, name="again", train_fn=flaky_loop)
    uri = tracking.resolve_uri(cfg)
    (first,) = _runs_named(uri, "again")
    assert first.info.status == "FAILED"
    assert ckpt.read_progress(str(tmp_path / "runs" / "again"))["epochs_done"] >= 1
    res = fit(cfg, synthetic_data, name="again")
    assert res["mlflow_run_id"] == first.info.run_id
    _check_finished(cfg, res, uri)
    (run,) = _runs_named(uri, "again")
    assert run.info.status == "FINISHED"
    # `vidtempo evaluate` on the last checkpoint reproduces the run's own test numbers
    from vidtempo.cli import main as cli

    last = sorted(Path(res["run_dir"]).glob("epoch_*"))[-1]
    out = tmp_path / "eval.json"
    assert cli(["evaluate", "tin_r18_synthetic", str(last), "--data", str(synthetic_data),
                "--json", str(out), "--set", f"run.storage_path={tmp_path / 'runs'}"]) == 0  # fmt: skip
    again = json.loads(out.read_text())
    assert again["test/top1@2x1"] == pytest.approx(res["metrics"]["test/top1:2x1"])
    assert again["test/videos@2x1"] == 24  # 12 classes × 2
    # with --experiment (and --storage, --mlflow-uri), also a run of its own
    assert cli(["evaluate", "tin_r18_synthetic", str(last), "--data", str(synthetic_data),
                "--storage", str(tmp_path / "runs"), "--mlflow-uri", uri,
                "--experiment", "evals"]) == 0  # fmt: skip
    (logged_eval,) = tracking.runs(uri, "evals")
    assert logged_eval["tags"]["vidtempo.kind"] == "evaluate"
    assert logged_eval["tags"]["vidtempo.checkpoint"] == str(last)
    assert logged_eval["metrics"]["test/top1:2x1"] == pytest.approx(again["test/top1@2x1"])
    # … and its logged val/top1 (two workers, the BN statistics synced from rank 0 first)
    assert cli(["evaluate", "tin_r18_synthetic", str(last), "--data", str(synthetic_data),
                "--protocol", "val", "--json", str(out),
                "--set", f"run.storage_path={tmp_path / 'runs'}"]) == 0  # fmt: skip
    logged = dict(tracking.metric_history(uri, res["mlflow_run_id"], "val/top1"))
    assert json.loads(out.read_text())["val/top1"] == pytest.approx(logged[cfg.train.epochs])
    # finished: submitted again, it returns its result without starting a worker
    done = fit(cfg, synthetic_data, name="again", train_fn=no_worker_may_start)
    assert done["mlflow_run_id"] == res["mlflow_run_id"] and done["metrics"] == res["metrics"]
    # a changed config is refused instead of silently mixing two recipes in one run
    with pytest.raises(ConfigError, match="optim.lr"):
        fit(config.override(cfg, {"optim.lr": 0.5}), synthetic_data, name="again")


def no_worker_may_start(job) -> None:
    raise AssertionError("a finished run started its workers again")


@pytest.mark.ray
def test_too_many_workers_fail_fast(ray_session, synthetic_data, tmp_path):
    from vidtempo.capacity import ResourceError
    from vidtempo.train.run import fit

    cfg = tiny(tmp_path, "run.num_workers=8")
    t = time.monotonic()
    with pytest.raises(ResourceError, match=r"8 workers .* the cluster has 1 node\(s\) with 2 CPUs"):
        fit(cfg, synthetic_data, name="big")
    assert time.monotonic() - t < 30


def test_the_sthv1_job_runs_the_zoo_recipe_and_says_what_is_missing(tmp_path):
    """jobs/tin_sthv1.py is `vidtempo train` with the zoo recipe as its default config (its twin
    jobs/train.py goes through `ray job submit` in the cluster rehearsal): no data, one line."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "tin_sthv1.py"), "--data", str(tmp_path / "none"),
         "--help"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "default: tin_r50_1x1x8_40e_sthv1_rgb" in done.stdout
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "tin_sthv1.py"), "--data",
                           str(tmp_path / "none")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("vidtempo: error:") and str(tmp_path / "none") in line, line


# a line of Ray's C++ log at ERROR level: "[2026-12-07 17:13:14,715 E 22875 22905] core_worker.cc:2465: …"
RAY_ERROR_LINE = re.compile(r"\d\d:\d\d:\d\d,\d{3} E \d+ \d+\] \S+\.(cc|h):\d+")


@pytest.mark.ray
@pytest.mark.slow
def test_quiet_by_default_and_ray_lines_back_with_verbose(synthetic_data, tmp_path):
    """`vidtempo train` prints vidtempo's lines — one per epoch, the test result, the summary —
    and none of Ray Train's per-report or per-checkpoint lines nor Ray Data's per-dataset ones;
    `--verbose` brings those back (counted in each run's output)."""
    noise = ("TrainingReport(", "Checkpoint successfully created", "execution finished in")

    def run(*extra: str) -> str:
        cmd = [str(Path(sys.executable).parent / "vidtempo"), "train", "tin_r18_synthetic",
               "--data", str(synthetic_data), "--name", f"out{len(extra)}",
               "--storage", str(tmp_path / "runs"), "--mlflow-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--set", "train.epochs=2",
               "--set", "train.min_steps=null",
               "--set", "run.batch_per_worker=4", *extra]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    quiet = run()
    assert sum(line.count(n) for line in quiet.splitlines() for n in noise) == 0, quiet
    # nothing failed, and nothing reads as a failure: no line in Ray's error-log format (Ray
    # Train's controller printed "… E … core_worker.cc:…: Actor with class name:
    # 'PreemptionWatcher' … max_restarts > 0" at every run), no traceback, no MLflow URL lines
    assert not [ln for ln in quiet.splitlines() if RAY_ERROR_LINE.search(ln)], quiet
    for noise in ("Traceback", "View run", "PreemptionWatcher", "Set ray log level"):
        assert noise not in quiet, (noise, quiet)
    epoch_lines = [line for line in quiet.splitlines() if "] epoch " in line and "/2  loss" in line]
    assert len(epoch_lines) == 2, quiet
    assert "test/top1:2x1" in quiet and len(quiet.splitlines()) < 60, quiet
    loud = run("--verbose")
    assert loud.count("TrainingReport(") >= 2 and loud.count("Checkpoint successfully created") >= 2


def test_a_driver_on_a_running_cluster_hands_its_quiet_settings_to_what_it_starts(monkeypatch):
    """On a cluster started before the driver (`ray job submit`), the trials and Train's
    controller do not inherit the driver's environment: ray.init's runtime env carries the log
    levels and MLflow's no-URL setting — all but what the submitted job's own env sets."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    from vidtempo import ray_session

    monkeypatch.delenv("VIDTEMPO_VERBOSE", raising=False)
    monkeypatch.delenv(RAY_JOB_CONFIG_JSON_ENV_VAR, raising=False)
    env = ray_session.cluster_runtime_env()["env_vars"]
    assert env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert env["RAY_DATA_LOG_LEVEL"] == "WARNING" and env["VIDTEMPO_VERBOSE"] == "0"
    job = {"runtime_env": {"env_vars": {"VIDTEMPO_VERBOSE": "1", "VIDTEMPO_GIT_COMMIT": "abc"}}}
    monkeypatch.setenv(RAY_JOB_CONFIG_JSON_ENV_VAR, json.dumps(job))
    monkeypatch.setenv("VIDTEMPO_VERBOSE", "1")  # the job's env, in the driver too
    env = ray_session.cluster_runtime_env()["env_vars"]
    assert "VIDTEMPO_VERBOSE" not in env and env["RAY_DATA_LOG_LEVEL"] == "INFO"
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in env


def test_ray_datas_cluster_wide_actors_are_where_vidtempo_creates_them():
    """The functions through which a driver creates Ray Data's detached actors on its own node
    (so that no worker pins them to a GPU node that then never goes idle) exist in this Ray: an
    upgrade that moves one fails here, not as a node left up on a user's cluster."""
    import importlib

    from vidtempo.ray_session import RAY_DATA_ACTORS

    for module, function in RAY_DATA_ACTORS:
        assert callable(getattr(importlib.import_module(module), function)), (module, function)


def test_a_quiet_ray_worker_aborts_without_a_dump(monkeypatch):
    """The setup hook of a quiet run's Ray workers: an abort (a gloo peer gone when Tune stops a
    trial) ends the process without Python's fault dump, and Ray Train's cleaner warnings are
    off; without the hook the same abort prints the dump. --verbose adds no hook."""
    from vidtempo import verbosity

    script = ("import faulthandler, logging, os, sys\n"
              "faulthandler.enable()\n"  # as Ray does in every worker
              "from vidtempo import verbosity\n"
              "if sys.argv[1] == 'hook':\n"
              "    verbosity.quiet_ray_worker()\n"
              "    quiet = logging.getLogger(verbosity.QUIET_LOGGERS[0])\n"
              "    assert not quiet.isEnabledFor(logging.WARNING)\n"
              "os.abort()\n")  # fmt: skip
    for hook, dumped in (("hook", False), ("none", True)):
        done = subprocess.run([sys.executable, "-c", script, hook], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == -signal.SIGABRT, (hook, done.stderr)
        assert ("Fatal Python error: Aborted" in done.stderr) == dumped, (hook, done.stderr)
    monkeypatch.setenv("VIDTEMPO_VERBOSE", "0")
    assert verbosity.worker_runtime_env_extras() == {"worker_process_setup_hook": verbosity.SETUP_HOOK}
    assert verbosity.worker_runtime_env_extras(has_hook=True) == {}
    monkeypatch.setenv("VIDTEMPO_VERBOSE", "1")
    assert verbosity.worker_runtime_env_extras() == {}


def test_min_steps_repeats_a_small_dataset_within_each_epoch(synthetic_data):
    """train.min_steps: an epoch passes over a small dataset several times (each pass dealt
    and augmented afresh), so that a recipe makes its steps whatever the dataset's size."""
    from vidtempo.data.transform import row_rng

    one = pipeline.plan(synthetic_data / "train", "train", range(1), seed=0, world=2)
    steps = pipeline.steps_per_epoch(one, 4)
    assert pipeline.repeats_for(one, 4, 3, None) == 1
    assert pipeline.repeats_for(one, 4, 3, steps * 3) == 1
    reps = pipeline.repeats_for(one, 4, 3, steps * 3 * 4 + 1)
    assert reps == 5
    units = pipeline.plan(synthetic_data / "train", "train", range(3), seed=0, world=2, repeats=reps)
    assert pipeline.steps_per_epoch(units, 4) >= steps * reps
    first = [u for u in units[0] if u["epoch"] == 0]
    assert {u["pass"] for u in first} == set(range(reps))
    assert [u for u in first if u["pass"] == 0] == [  # pass 0 is the plan without repeats
        {**u, "pass": 0} for u in one[0] if u["epoch"] == 0]
    a, b = row_rng(0, 0, "v", 0).random(), row_rng(0, 0, "v", 1).random()
    assert a != b and a == row_rng(0, 0, "v").random()


def test_the_demo_verdict_keeps_its_wording_and_its_table_its_columns():
    from vidtempo import demo

    assert demo.verdict_line(93.3, 50.0).endswith("TIN 93.3% vs TSN 50.0% — TIN beats TSN")
    assert demo.verdict_line(55.0, 50.0).endswith("— TIN does NOT clearly beat TSN")
    assert demo.verdict_line(70.0, 50.0).endswith("TIN does NOT clearly beat TSN")  # not > +20
    per_class = [1.0] * 10 + [0.5, 0.5]
    per_class[8], per_class[9] = 0.0, 1.0  # 8 and 9 are a pair, 10 and 11 too; 6 and 7 still
    assert demo.pairs_accuracy(per_class) == pytest.approx(0.8)  # (6 + 0 + 1 + 0.5 + 0.5) / 10
    assert demo.appearance_accuracy(per_class) == pytest.approx(1.0)
    moved = {"tin/offset_abs/layer1": 0.48, "tin/offset_abs/layer2": 1.31}
    assert demo.offsets_column(moved) == "moved (layer2 0.50→1.31)"
    assert demo.offsets_column({"tin/offset_abs/layer1": 0.52}) == "did not move (layer1 0.50→0.52)"
    assert demo.offsets_column({"loss": 1.0}) == "-"


def test_a_model_that_cannot_be_built_is_refused_before_anything_is_written(synthetic_data, tmp_path):
    """models.check runs in fit before Ray, storage or MLflow: TIN at width 16 with shift_div 8
    interlaces 2 channels, which its 4 offset groups cannot split."""
    from vidtempo.train.run import fit

    with pytest.raises(ConfigError, match="model.shift_div=8: TIN needs"):
        fit(tiny(tmp_path, "model.shift_div=8"), synthetic_data, name="bad")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
