"""The per-worker training loop: what every Ray Train worker runs, top to bottom.

    dataset shard → device → normalise → model → loss (+ TPN aux) → backward → clip → step → lr

`job` (built by vidtempo.train.run.fit) holds the resolved config as a dict, the run directory,
the MLflow run, the steps per epoch and the ImageNet weights file. Every worker streams its own
datasets `train_{rank}`, `val_{rank}`, `test_{rank}` (vidtempo.data.pipeline.plan); all take the
same number of steps per epoch, as DDP requires. Rank 0 alone logs to MLflow, keeps the best-K
weights and prints progress.
"""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from vidtempo import config, metrics, models, verbosity
from vidtempo.config import Config, ModelConfig
from vidtempo.models.diagnostics import TemporalProbe, offset_histograms
from vidtempo.models.recognizer import Recognizer3D
from vidtempo.tracking import record
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.optim import build_optimizer, set_lr
from vidtempo.train.schedule import lr_at
from vidtempo.train.step import masked_cross_entropy, norm_tensors, normalise

PROGRESS_EVERY_S = 30.0


@dataclass
class Worker:
    """What one worker's run holds between its steps (`train_loop_per_worker`'s state)."""

    job: dict
    cfg: Config
    config_yaml: str  # the resolved config, as every checkpoint and best-K file records it
    rank: int
    world: int
    device: torch.device
    model: nn.Module
    ddp: nn.Module  # the model as DDP wraps it (the model itself on one worker)
    optimizer: torch.optim.Optimizer
    trainable: list
    probe: TemporalProbe
    best: ckpt.BestK
    mean: torch.Tensor
    std: torch.Tensor
    start_epoch: int = 0
    it: int = 0  # optimizer steps taken, over the whole run: the lr schedule's clock
    last: dict = field(default_factory=dict)  # the last epoch's metrics
    epoch_started: float = 0.0  # this epoch's start (perf_counter), for epoch_s
    skipped: list = field(default_factory=list)  # this epoch's undecodable clips, with why
    started: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def progress(self) -> bool:
        """One line per epoch, from rank 0."""
        return self.rank == 0 and self.job.get("progress", True)


def train_loop_per_worker(job: dict) -> None:
    w = setup(job)
    stream = epoch_batches(ray.train.get_dataset_shard(f"train_{w.rank}"),
                           job["batch_per_worker"], job["steps_per_epoch"], w.start_epoch)  # fmt: skip
    for epoch in range(w.start_epoch, w.cfg.train.epochs):
        m = train_one_epoch(w, stream, epoch)
        end_of_epoch(w, epoch, m)
    if w.cfg.data.holdout:  # a sweep's trial: val/ is for the final run, never read by a trial
        w.probe.close()
    else:
        test(w)


def setup(job: dict) -> Worker:
    """The worker's model and optimizer, from the recipe's init or from the last checkpoint,
    wrapped for DDP; the run's tags of where each rank runs and what its numerics depend on."""
    verbosity.quiet_worker(job.get("verbose", False))
    cfg = config.from_dict(job["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type != "cuda":
        torch.set_flush_denormal(True)  # denormal floats make CPU kernels many times slower
    seed_everything(cfg.run.seed * 1000 + rank)

    model = models.build(cfg, imagenet=job.get("imagenet"))
    restored = ray.train.get_checkpoint()
    if restored is None and cfg.model.load_from:
        report = models.load_pretrained(model, cfg.model.load_from)
        if rank == 0:
            say(f"[{job['name']}] load_from {cfg.model.load_from}: {report}")
    freeze_partial_bn(model, cfg.model)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
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
            say(f"[{job['name']}] resumed after epoch {start_epoch} (step {it})")
    ddp = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    nodes = metrics.gather(ray.get_runtime_context().get_node_id())  # where each rank runs
    numerics = metrics.gather(numerics_of(device))  # what a run's last bits depend on
    if rank == 0:
        record.placement(job["mlflow_uri"], job["mlflow_run_id"], nodes, numerics)
    mean, std = norm_tensors(cfg, device)
    return Worker(job=job, cfg=cfg, config_yaml=config.dump_yaml(cfg), rank=rank, world=world,
                  device=device, model=model, ddp=ddp, optimizer=optimizer,
                  trainable=[p for p in model.parameters() if p.requires_grad],
                  probe=TemporalProbe(model),  # TIN offsets/gates, TAM asymmetry (else no hooks)
                  best=ckpt.BestK(job["run_dir"], cfg.run.keep_best, cfg.eval.metric,
                                  cfg.eval.mode),
                  mean=mean, std=std, start_epoch=start_epoch, it=it, last=last)  # fmt: skip


def train_one_epoch(w: Worker, stream: Iterator[dict], epoch: int) -> dict:
    """One epoch's steps; its metrics summed over the workers (loss, clips/s, data wait,
    skipped clips) and the temporal modules' diagnostics."""
    cfg, job, device = w.cfg, w.job, w.device
    steps, batch, lr0 = job["steps_per_epoch"], job["batch_per_worker"], cfg.effective_lr
    set_train_mode(w.model, cfg.model)
    w.epoch_started = t_epoch = time.perf_counter()
    waited, seen, bad = 0.0, 0, 0
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    reasons: list[str] = []
    last_print = t_epoch
    w.probe.start()
    for step in range(steps):
        t = time.perf_counter()
        b = next(stream)
        waited += time.perf_counter() - t
        x = normalise(b["inputs"], w.mean, w.std, device, channels_last=w.cuda)
        y = torch.as_tensor(b["label"], device=device)
        ok = torch.as_tensor(b["ok"], device=device)
        lr = lr_at(cfg.schedule, lr0, cfg.train.epochs, steps, w.it)
        set_lr(w.optimizer, lr)
        with torch.autocast(device.type, torch.bfloat16, enabled=w.cuda):
            scores, aux = w.ddp(x, y)
        loss = masked_cross_entropy(scores.float(), y, ok) + aux.float() * ok.any()
        w.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(w.trainable, cfg.optim.grad_clip)
        w.optimizer.step()
        w.it += 1
        loss_sum, seen = loss_sum + loss.detach() * len(y), seen + len(y)
        if not b["ok"].all():
            bad += int((~b["ok"]).sum())
            reasons += [f"{v}: {e}" for v, e in zip(b["video_id"][~b["ok"]], b["error"][~b["ok"]])]
        if w.progress and time.perf_counter() - last_print > PROGRESS_EVERY_S:
            last_print = time.perf_counter()
            rate = w.world * seen / (last_print - t_epoch)
            left = (steps - step - 1) * w.world * batch / rate
            say(f"[{job['name']}] epoch {epoch + 1}/{cfg.train.epochs} step {step + 1}/{steps}  "
                f"loss {loss_sum.item() / seen:.3f}  {rate:.1f} clips/s  "
                f"epoch ETA {fmt_time(left)}")
    train_s = time.perf_counter() - t_epoch
    loss_sum, seen, bad, waited = all_reduce_sum([loss_sum.item(), seen, bad, waited])
    w.skipped = reasons
    return {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "lr": lr, "clips_per_s": seen / train_s,
            "data_wait_frac": waited / w.world / train_s, "bad_clips": bad,
            **w.probe.stop()}  # fmt: skip


def end_of_epoch(w: Worker, epoch: int, m: dict) -> None:
    """Validate when it is due; rank 0 logs the metrics, offers the weights to the best-K and
    prints progress; then every worker reports its part of the checkpoint."""
    cfg, job, epochs = w.cfg, w.job, w.cfg.train.epochs
    if (epoch + 1) % cfg.train.val_interval == 0 or epoch + 1 == epochs:
        t = time.perf_counter()
        split = "holdout" if cfg.data.holdout else "val"  # the held-out part of train/, or val/
        m.update(evaluate(w.model, ray.train.get_dataset_shard(f"val_{w.rank}"), cfg, split,
                          job["batch_per_worker"], w.device, w.cuda))  # fmt: skip
        m["val_s"] = time.perf_counter() - t
    m["epoch_s"] = time.perf_counter() - w.epoch_started
    state = None
    if w.rank == 0:
        record.epoch(job["mlflow_uri"], job["mlflow_run_id"], epoch + 1, m)
        value = m.get(cfg.eval.metric, float("nan"))
        weights = {k: v.detach().cpu() for k, v in w.model.state_dict().items()}
        w.best.offer(epoch + 1, value, weights, {"config": w.config_yaml})
        state = {"model": weights, "optimizer": w.optimizer.state_dict(), "epoch": epoch,
                 "iteration": w.it, "mlflow_run_id": job["mlflow_run_id"],
                 "config": w.config_yaml, "metrics": m}  # fmt: skip
        elapsed = time.perf_counter() - w.started
        eta = elapsed / (epoch + 1 - w.start_epoch) * (epochs - epoch - 1)
        if w.progress:
            say(progress_line(job["name"], m, epochs, eta))
        if w.skipped:
            say(f"[{job['name']}] skipped {m['bad_clips']} clips this epoch that could not be "
                f"decoded, e.g. {w.skipped[0]}")
        if m["data_wait_frac"] > 0.3 and epoch > w.start_epoch:  # the first: stream start-up
            say(f"[{job['name']}] WARNING: training is data-bound: "
                f"{m['data_wait_frac']:.0%} of step time waiting for data; give Ray Data "
                "more CPUs (run.data_cpus_per_worker) or store smaller frames")
    w.last = m
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save_state(tmp, w.rank, state)
        ray.train.report(m, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"epoch_{epoch + 1:04d}")  # fmt: skip
    if w.rank == 0:
        ckpt.write_progress(job["run_dir"], epochs_done=epoch + 1,
                            mlflow_run_id=job["mlflow_run_id"])  # fmt: skip


def test(w: Worker) -> None:
    """The config's test protocol, once training is done: every view scored, the per-class
    accuracies and TIN's offset histograms logged, the final report."""
    job = w.job
    w.probe.start(collect=True)  # every test view's TIN offsets, for the histograms
    result = evaluate(w.model, ray.train.get_dataset_shard(f"test_{w.rank}"), w.cfg, "test",
                      job["batch_per_worker"], w.device, w.cuda, per_class=True)  # fmt: skip
    w.probe.stop()
    per_class = result.pop("per_class")
    if w.rank == 0:
        offsets = w.probe.collected_offsets()
        title = f"{job['name']}: TIN offsets per block on rank 0's test views (dashed: 0.5)"
        record.test(job["mlflow_uri"], job["mlflow_run_id"], w.cfg.train.epochs, result, per_class,
                    offset_histograms(offsets, title) if offsets else None)  # fmt: skip
        if w.progress:
            say(f"[{job['name']}] test: "
                + "  ".join(f"{k} {v:.2f}" for k, v in result.items() if "/top" in k))
    w.probe.close()
    # the last epoch's metrics ride along: a Tune scheduler expects its metric in every report
    ray.train.report({**w.last, **result})


def eval_loop_per_worker(job: dict) -> None:
    """`vidtempo evaluate`: load weights, score this worker's shard, merge, report."""
    verbosity.quiet_worker(job.get("verbose", False))
    cfg = config.from_dict(job["config"])
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    model = models.build(cfg)
    weights = ckpt.load_weights(job["checkpoint"])
    try:
        model.load_state_dict(weights)
    except RuntimeError:  # an MMAction2 checkpoint: rename strictly, naming what does not fit
        from vidtempo.models.checkpoint import convert_mmaction2

        model.load_state_dict(convert_mmaction2(weights, model))
    model.to(device)
    split = job["split"]
    out = evaluate(model, ray.train.get_dataset_shard(f"{split}_{rank}"), cfg, split,
                   job["batch"], device, device.type == "cuda")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # V2 keeps the metrics of checkpointed reports
        if rank == 0:
            (Path(tmp) / "metrics.json").write_text(json.dumps(out))
        ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ---- the pieces ----------------------------------------------------------------------------


def say(line: str) -> None:
    """One line on the driver's console (Ray Train's patched print would log it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def numerics_of(device: torch.device) -> str:
    """What decides a run's floating-point results besides its config and seed: the device
    (CPU model and the instruction set torch's kernels dispatch to, or the GPU), the threads
    of this worker's torch, and the versions of torch and of the video decoder."""
    from vidtempo.machine import cpu_name

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} cuda {torch.version.cuda}"
    else:
        where = f"{cpu_name()} {torch.backends.cpu.get_cpu_capability()}"
    try:
        import decord

        decoder = f"decord {decord.__version__}"
    except ImportError:
        decoder = "no decord"
    return f"{where}; {torch.get_num_threads()} threads; torch {torch.__version__}; {decoder}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_train_mode(model: nn.Module, m: ModelConfig) -> None:
    """train(), then BN layers the recipe keeps frozen back in eval mode: all of them with
    norm_eval (running statistics kept), all but the first with partial_bn (original TIN)."""
    model.train()
    norms = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if m.norm_eval:
        frozen = norms
    elif m.partial_bn:
        frozen = norms[1:]
    else:
        frozen = []
    for mod in frozen:
        mod.eval()


def freeze_partial_bn(model: nn.Module, m: ModelConfig) -> None:
    """Partial BN also stops training the affine parameters of every BN but the first."""
    if not m.partial_bn:
        return
    norms = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    for mod in norms[1:]:
        for p in mod.parameters():
            p.requires_grad_(False)


def epoch_batches(shard, batch_size: int, steps: int, start_epoch: int) -> Iterator[dict]:
    """Batches of `batch_size` rows, exactly `steps` per epoch from `start_epoch` on.

    The shard streams the rows of every epoch with their epoch number. Rows of one epoch are
    mixed in a bounded buffer (units are row groups of neighbouring videos, often one class),
    drawn with a seeded generator; rows of an epoch that is already done (the dropped remainder,
    or epochs before a resume point) are skipped."""
    buffer_rows = max(8 * batch_size, 64)
    epoch, done = start_epoch, 0
    pending: dict[int, list[dict]] = {}  # epoch → rows
    rng = np.random.default_rng(epoch)

    def take(rows: list[dict]) -> dict:
        idx = sorted(rng.choice(len(rows), batch_size, replace=False).tolist(), reverse=True)
        picked = [rows.pop(i) for i in idx]
        return {k: np.stack([r[k] for r in picked]) for k in picked[0]}

    def drain(stream_ended: bool) -> Iterator[dict]:
        # a batch is drawn once the buffer is full, or when no more rows of this epoch can come
        nonlocal epoch, done, rng
        while True:
            rows = pending.get(epoch, [])
            finished = stream_ended or any(e > epoch for e in pending)
            if not (len(rows) >= buffer_rows or (len(rows) >= batch_size and finished)):
                return
            yield take(rows)
            done += 1
            if done == steps:
                pending.pop(epoch, None)
                epoch, done = epoch + 1, 0
                rng = np.random.default_rng(epoch)

    for b in shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for i in range(len(b["label"])):
            e = int(b["epoch"][i])
            if e >= epoch:
                pending.setdefault(e, []).append({k: b[k][i] for k in b})
                # row by row: the mix does not depend on how many rows a block brings
                yield from drain(stream_ended=False)
    yield from drain(stream_ended=True)
    if done or epoch in pending:
        raise RuntimeError(f"the data stream ended inside epoch {epoch} after {done} steps")


@torch.no_grad()
def evaluate(model: nn.Module, shard, cfg: Config, split: str, batch: int,
             device: torch.device, cuda: bool, per_class: bool = False) -> dict:  # fmt: skip
    """The split's protocol over this worker's shard, merged across workers by video_id:
    `val/top1`, ... for val, `test/top1@2x3`, ... for test (every view scored on its own);
    `holdout/top1`, ... for the held-out part of train/ (under the val protocol)."""
    single = split in ("val", "holdout")  # the val protocol
    pipe = cfg.data.val if single else cfg.data.test
    clips, crops = config.views(pipe)
    nviews = clips * crops
    mean, std = norm_tensors(cfg, device)
    is3d = isinstance(model, Recognizer3D)
    model.eval()
    acc = metrics.Accumulator(cfg.model.num_classes, cfg.eval.topk)
    bad, reason = 0, ""
    for b in shard.iter_batches(batch_size=batch, batch_format="numpy"):
        ok = b["ok"]
        if not ok.all():
            bad += int((~ok).sum())
            reason = reason or f"{b['video_id'][~ok][0]}: {b['error'][~ok][0]}"
        if not ok.any():
            continue
        x = normalise(b["inputs"][ok], mean, std, device)
        n = x.shape[0]
        # every view a video of its own: (n*V, T, 3, H, W) or (n*V, 1, 3, T, H, W)
        views = x.view(n * nviews, 1, *x.shape[2:]) if is3d else x.view(
            n * nviews, -1, *x.shape[2:])  # fmt: skip
        outs = []
        for chunk in views.split(max(batch, 1)):
            with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
                outs.append(model(chunk).float().reshape(len(chunk), -1))
        scores = torch.cat(outs).view(n, nviews, -1).cpu().numpy()
        acc.add(b["video_id"][ok], b["label"][ok], scores)
    merged = metrics.merge(metrics.gather(acc.state()))
    proto = None if single else config.protocol(pipe)
    out = metrics.compute(merged, split, proto)
    out[f"{split}/bad_clips"] = float(sum(metrics.gather(bad)))
    if reason:
        say(f"{split}: skipped {bad} clips on this worker that could not be decoded, e.g. {reason}")
    if per_class:
        _, scores, labels = merged.video_scores()
        acc_c = metrics.per_class_accuracy(scores, labels, cfg.model.num_classes)
        out["per_class"] = [None if math.isnan(v) else v for v in acc_c.tolist()]
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def progress_line(name: str, m: dict, epochs: int, eta: float) -> str:
    val = f"  val/top1 {m['val/top1']:.2f}" if "val/top1" in m else ""
    return (f"[{name}] epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f}  lr {m['lr']:.3g}{val}  "
            f"{m['clips_per_s']:.1f} clips/s  data wait {m['data_wait_frac']:.0%}  "
            f"ETA {fmt_time(eta)}")  # fmt: skip
