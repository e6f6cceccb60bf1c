"""What every Ray Train worker runs, top to bottom: `train_loop_per_worker(job)` sets up the model
and optimiser (from the recipe or the last checkpoint), then per epoch runs the plain-torch
`train_one_epoch` (loop.py) over its dataset shard, validates when due and reports the metrics
and the checkpoint to Ray Train; then the test protocol. `eval_loop_per_worker` is `vidtempo
evaluate`'s.

Every worker streams its own datasets `train_{rank}`, `val_{rank}`, `test_{rank}`
(vidtempo.data.pipeline.plan); all take the same number of steps per epoch, as DDP requires.
Rank 0 alone logs to MLflow, keeps the best-K weights and prints progress.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from vidtempo import config, metrics, models, verbosity
from vidtempo.config import Config
from vidtempo.data import batches
from vidtempo.models.diagnostics import TemporalProbe, offset_histograms
from vidtempo.tracking import record
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.loop import (
    Worker,
    evaluate,
    freeze_partial_bn,
    numerics_of,
    progress_line,
    say,
    seed_everything,
    sync_bn_buffers,
    train_one_epoch,
)
from vidtempo.train.optim import build_optimizer
from vidtempo.train.step import channels_last, norm_tensors


@dataclass(frozen=True)
class Job:
    """What the driver (run.fit) hands every worker of a training run."""

    cfg: Config
    name: str
    run_dir: str
    mlflow_uri: str
    mlflow_run_id: str
    steps_per_epoch: int
    imagenet: str | None = None  # torchvision ResNet-50 weights for model.pretrained=imagenet
    verbose: bool = False  # Ray's own INFO lines too
    progress: bool = True  # rank 0 prints a line per epoch


@dataclass(frozen=True)
class EvalJob:
    """What run.evaluate hands every worker of `vidtempo evaluate`."""

    cfg: Config
    checkpoint: str
    split: str  # "test" (the config's test protocol) or "val"
    verbose: bool = False


def shard_batches(split: str, rank: int, batch: int):
    """This worker's dataset shard of an evaluated split, as numpy batches of `batch` videos."""
    shard = ray.train.get_dataset_shard(f"{split}_{rank}")
    return shard.iter_batches(batch_size=batch, batch_format="numpy")


def train_loop_per_worker(job: Job) -> None:
    w = setup(job)
    stream = batches.epoch_batches(ray.train.get_dataset_shard(f"train_{w.rank}"),
                                   job.cfg.batch_per_worker, job.steps_per_epoch, w.start_epoch)  # fmt: skip
    for epoch in range(w.start_epoch, w.cfg.train.epochs):
        m = train_one_epoch(w, stream, epoch)
        end_of_epoch(w, epoch, m)
    if w.cfg.data.holdout:  # a sweep's trial: val/ is for the final run, never read by a trial
        w.probe.close()
    else:
        test(w)


def setup(job: Job) -> Worker:
    """The worker's model and optimizer, from the recipe's init or from the last checkpoint,
    wrapped for DDP; the run's tags of where each rank runs and what its numerics depend on."""
    verbosity.quiet_worker(job.verbose)
    cfg = job.cfg
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type != "cuda":
        torch.set_flush_denormal(True)  # denormal floats make CPU kernels many times slower
    seed_everything(cfg.run.seed * 1000 + rank)

    model = models.build(cfg, imagenet=job.imagenet)
    restored = ray.train.get_checkpoint()
    if restored is None and cfg.model.load_from:
        report = models.load_pretrained(model, cfg.model.load_from)
        if rank == 0:
            say(f"[{job.name}] load_from {cfg.model.load_from}: {report}")
    freeze_partial_bn(model, cfg.model)
    model.to(device)
    if device.type == "cuda":
        channels_last(model)  # the 2D convolutions' weights; 3D ones as they are
    optimizer = build_optimizer(model, cfg.optim, cfg.effective_lr)
    start_epoch, it, last = 0, 0, {}
    if restored is not None:
        with restored.as_directory() as d:
            state, rng = ckpt.load_state(d, rank)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, it, last = state["epoch"] + 1, state["iteration"], state.get("metrics", {})
        if rng is not None:
            ckpt.set_rng_state(rng)
        if rank == 0:
            say(f"[{job.name}] resumed after epoch {start_epoch} (step {it})")
            record.resumed(job.mlflow_uri, job.mlflow_run_id, start_epoch, it)
    ddp = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    nodes = metrics.gather(ray.get_runtime_context().get_node_id())  # where each rank runs
    numerics = metrics.gather(numerics_of(device))  # what a run's last bits depend on
    if rank == 0:
        record.placement(job.mlflow_uri, job.mlflow_run_id, nodes, numerics)
    mean, std = norm_tensors(cfg, device)
    return Worker(job=job, config_yaml=config.dump_yaml(cfg), rank=rank, world=world,
                  device=device, model=model, ddp=ddp, optimizer=optimizer,
                  trainable=[p for p in model.parameters() if p.requires_grad],
                  probe=TemporalProbe(model),  # TIN offsets/gates, TAM asymmetry (else no hooks)
                  best=ckpt.BestK(job.run_dir, cfg.run.keep_best, cfg.eval.metric,
                                  cfg.eval.mode),
                  mean=mean, std=std, start_epoch=start_epoch, it=it, last=last)  # fmt: skip


def end_of_epoch(w: Worker, epoch: int, m: dict) -> None:
    """Validate when it is due; rank 0 logs the metrics, offers the weights to the best-K and
    prints progress; then every worker reports its part of the checkpoint."""
    cfg, job, epochs = w.cfg, w.job, w.cfg.train.epochs
    if (epoch + 1) % cfg.train.val_interval == 0 or epoch + 1 == epochs:
        t = time.perf_counter()
        split = "holdout" if cfg.data.holdout else "val"  # the held-out part of train/, or val/
        sync_bn_buffers(w.model)  # every rank scores with the statistics the model saves
        m.update(evaluate(w.model, shard_batches("val", w.rank, cfg.batch_per_worker), cfg,
                          split, cfg.batch_per_worker, w.device, w.bf16))  # fmt: skip
        m["val_s"] = time.perf_counter() - t
    m["epoch_s"] = time.perf_counter() - w.epoch_started
    state = None
    if w.rank == 0:
        record.epoch(job.mlflow_uri, job.mlflow_run_id, epoch + 1, m)
        value = m.get(cfg.eval.metric, float("nan"))
        weights = {k: v.detach().cpu() for k, v in w.model.state_dict().items()}
        w.best.offer(epoch + 1, value, weights, {"config": w.config_yaml})
        state = {"model": weights, "optimizer": w.optimizer.state_dict(), "epoch": epoch,
                 "iteration": w.it, "mlflow_run_id": job.mlflow_run_id,
                 "config": w.config_yaml, "metrics": m}  # fmt: skip
        elapsed = time.perf_counter() - w.started
        eta = elapsed / (epoch + 1 - w.start_epoch) * (epochs - epoch - 1)
        if w.progress:
            say(progress_line(job.name, m, epochs, eta))
        if w.skipped:
            say(f"[{job.name}] skipped {m['bad_clips']} clips this epoch that could not be "
                f"decoded, e.g. {w.skipped[0]}")
        if m["data_wait_frac"] > 0.3 and epoch > w.start_epoch:  # the first: stream start-up
            say(f"[{job.name}] WARNING: training is data-bound: "
                f"{m['data_wait_frac']:.0%} of step time waiting for data; give Ray Data "
                "more CPUs (run.data_cpus_per_worker) or store smaller frames")
    w.last = m
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save_state(tmp, w.rank, state)
        ray.train.report(m, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"epoch_{epoch + 1:04d}")  # fmt: skip
    if w.rank == 0:
        ckpt.write_progress(job.run_dir, epochs_done=epoch + 1,
                            mlflow_run_id=job.mlflow_run_id)  # fmt: skip


def test(w: Worker) -> None:
    """The config's test protocol, once training is done: every view scored, the per-class
    accuracies and TIN's offset histograms logged, the final report."""
    job = w.job
    w.probe.start(collect=True)  # every test view's TIN offsets, for the histograms
    batch = w.cfg.batch_per_worker
    sync_bn_buffers(w.model)
    result = evaluate(w.model, shard_batches("test", w.rank, batch), w.cfg, "test", batch,
                      w.device, w.bf16, per_class=True)  # fmt: skip
    w.probe.stop()
    per_class = result.pop("per_class")
    if w.rank == 0:
        offsets = w.probe.collected_offsets()
        title = f"{job.name}: TIN offsets per block on rank 0's test views (dashed: 0.5)"
        record.test(job.mlflow_uri, job.mlflow_run_id, w.cfg.train.epochs, result, per_class,
                    offset_histograms(offsets, title) if offsets else None)  # fmt: skip
        if w.progress:
            say(f"[{job.name}] test: "
                + "  ".join(f"{k} {v:.2f}" for k, v in result.items() if "/top" in k))
    w.probe.close()
    # the last epoch's metrics ride along: a Tune scheduler expects its metric in every report
    ray.train.report({**w.last, **result})


def eval_loop_per_worker(job: Job) -> None:
    """`vidtempo evaluate`: load weights, score this worker's shard, merge, report."""
    verbosity.quiet_worker(job.verbose)
    cfg = job.cfg
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    model = models.build(cfg)
    weights = ckpt.load_weights(job.checkpoint)
    try:
        model.load_state_dict(weights)
    except RuntimeError:  # an MMAction2 checkpoint: rename strictly, naming what does not fit
        from vidtempo.models.checkpoint import convert_mmaction2

        model.load_state_dict(convert_mmaction2(weights, model))
    model.to(device)
    split = job.split
    bf16 = device.type == "cuda" and cfg.run.precision == "bf16"
    out = evaluate(model, shard_batches(split, rank, cfg.batch_per_worker), cfg, split,
                   cfg.batch_per_worker, device, bf16)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # V2 keeps the metrics of checkpointed reports
        if rank == 0:
            (Path(tmp) / "metrics.json").write_text(json.dumps(out))
        ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(tmp))
