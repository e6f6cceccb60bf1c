"""The training loop in plain PyTorch, as torchvision's video reference writes it:
`train_one_epoch` and `evaluate` over batches of numpy rows, with the one `train_step`
(step.py). No Ray here: worker.py is what each Ray Train worker runs — it builds the `Worker`
state, feeds these functions its dataset shard and reports their metrics.

    batches → device → normalise → model → loss (+ TPN aux) → backward → clip → step → lr
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vidtempo import config, metrics
from vidtempo.config import Config, ModelConfig
from vidtempo.models.diagnostics import TemporalProbe
from vidtempo.models.recognizer import Recognizer3D
from vidtempo.train import checkpoint as ckpt
from vidtempo.train.optim import set_lr
from vidtempo.train.schedule import lr_at
from vidtempo.train.step import norm_tensors, normalise, train_step

if TYPE_CHECKING:
    from vidtempo.train.worker import Job

PROGRESS_EVERY_S = 30.0


@dataclass
class Worker:
    """What one worker's run holds between its steps: the run it belongs to (`job`, what the
    driver handed it), its model, optimiser and the lr schedule's clock."""

    job: Job
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
    def cfg(self) -> Config:
        return self.job.cfg

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        """bf16 autocast: run.precision bf16, on a GPU (the CPU path is fp32)."""
        return self.cuda and self.cfg.run.precision == "bf16"

    @property
    def progress(self) -> bool:
        """One line per epoch, from rank 0."""
        return self.rank == 0 and self.job.progress


def train_one_epoch(w: Worker, batches: Iterator[dict], epoch: int) -> dict:
    """One epoch's steps; its metrics summed over the workers (loss, clips/s, data wait,
    skipped clips) and the temporal modules' diagnostics."""
    cfg, job, device = w.cfg, w.job, w.device
    steps, batch, lr0 = job.steps_per_epoch, cfg.batch_per_worker, cfg.effective_lr
    set_train_mode(w.model, cfg.model)
    w.epoch_started = t_epoch = time.perf_counter()
    waited, seen, bad = 0.0, 0, 0
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    reasons: list[str] = []
    last_print = t_epoch
    w.probe.start()
    for step in range(steps):
        t = time.perf_counter()
        b = next(batches)
        waited += time.perf_counter() - t
        x = normalise(b["inputs"], w.mean, w.std, device, channels_last=w.cuda)
        y = torch.as_tensor(b["label"], device=device)
        ok = torch.as_tensor(b["ok"], device=device)
        lr = lr_at(cfg.schedule, lr0, cfg.train.epochs, steps, w.it)
        set_lr(w.optimizer, lr)
        loss = train_step(w.ddp, w.optimizer, x, y, ok, cfg.optim.grad_clip, w.trainable,
                          bf16=w.bf16)  # fmt: skip
        w.it += 1
        loss_sum, seen = loss_sum + loss * len(y), seen + len(y)
        if not b["ok"].all():
            bad += int((~b["ok"]).sum())
            reasons += [f"{v}: {e}" for v, e in zip(b["video_id"][~b["ok"]], b["error"][~b["ok"]])]
        if w.progress and time.perf_counter() - last_print > PROGRESS_EVERY_S:
            last_print = time.perf_counter()
            rate = w.world * seen / (last_print - t_epoch)
            left = (steps - step - 1) * w.world * batch / rate
            say(f"[{job.name}] epoch {epoch + 1}/{cfg.train.epochs} step {step + 1}/{steps}  "
                f"loss {loss_sum.item() / seen:.3f}  {rate:.1f} clips/s  "
                f"epoch ETA {fmt_time(left)}")
    train_s = time.perf_counter() - t_epoch
    loss_sum, seen, bad, waited = all_reduce_sum([loss_sum.item(), seen, bad, waited])
    w.skipped = reasons
    return {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "lr": lr, "clips_per_s": seen / train_s,
            "data_wait_frac": waited / w.world / train_s, "bad_clips": bad,
            **w.probe.stop()}  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], cfg: Config, split: str, batch: int,
             device: torch.device, bf16: bool, per_class: bool = False) -> dict:  # fmt: skip
    """The split's protocol over this worker's batches (numpy rows, `batch` videos each),
    merged across workers by video_id:
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
    for b in batches:
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
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
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
    norm_eval (running statistics kept), the backbone's but its first with partial_bn
    (original TIN)."""
    model.train()
    norms = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if m.norm_eval:
        frozen = norms
    elif m.partial_bn:
        frozen = partial_bn_frozen(model)
    else:
        frozen = []
    for mod in frozen:
        mod.eval()


def partial_bn_frozen(model: nn.Module) -> list[nn.Module]:
    """What partial BN freezes: the backbone's BatchNorm2d layers but the first, as MMAction2's
    ResNetTSM counts them (a TPN neck's or a head's norms are not the backbone's)."""
    trunk = getattr(model, "backbone", model)
    return [mod for mod in trunk.modules() if isinstance(mod, nn.BatchNorm2d)][1:]


def freeze_partial_bn(model: nn.Module, m: ModelConfig) -> None:
    """Partial BN also stops training the affine parameters of those BN layers."""
    if not m.partial_bn:
        return
    for mod in partial_bn_frozen(model):
        for p in mod.parameters():
            p.requires_grad_(False)


def sync_bn_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm running statistics on every rank, before a validation or the test.
    DDP broadcasts them at the start of each training forward, then every rank's own batches
    update its copy: an evaluation on those would score each rank's shard with other statistics
    than the model saved (rank 0's), as MMAction2 avoids (0.x DistEvalHook's
    broadcast_bn_buffer, 1.x SyncBuffersHook)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
            dist.broadcast(mod.running_mean, 0)
            dist.broadcast(mod.running_var, 0)


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
