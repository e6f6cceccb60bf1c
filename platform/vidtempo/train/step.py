"""The training step, without Ray: input normalisation on the device, the loss over the rows that
decoded, and `train_step` itself. The per-worker loop (loop.py) and every bench that times a step
(`bench train`, `models`, `step`, `demo`; `bench train` also runs where Ray is not installed, as in
`make gpu-check`) call this one step."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidtempo.config import Config


def norm_tensors(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean/std shaped to broadcast over the channel axis of the inputs' format."""
    shape = (1, 1, 3, 1, 1) if cfg.data.train.format == "NCHW" else (1, 1, 3, 1, 1, 1)
    mean = torch.tensor(cfg.data.mean, device=device).view(shape)
    std = torch.tensor(cfg.data.std, device=device).view(shape)
    return mean, std


def normalise(inputs: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
              channels_last: bool = False) -> torch.Tensor:  # fmt: skip
    """uint8 clips → normalised float32 on the device: (B, V*T, 3, H, W) for 2D models,
    (B, V, 3, T, H, W) for 3D; only the uint8 tensor crosses to the device."""
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    x = inputs.to(device, non_blocking=True)
    x = (x.float() - mean) / std
    if channels_last:  # channels innermost, so the backbone's (B*V*T, 3, H, W) is NHWC
        x = x.movedim(2, -1).contiguous().movedim(-1, 2)
    return x


def channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter and buffer (the 2D convolutions' weights) stored NHWC, in place; 5-D
    ones (SlowOnly's and TPN's 3D convolutions) keep their layout — `model.to(memory_format=
    torch.channels_last)` raises on them ("required rank 4 tensor"). What the GPU path does."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def masked_cross_entropy(scores: torch.Tensor, labels: torch.Tensor, ok: torch.Tensor):
    """Mean cross-entropy over the rows that decoded (bad rows are zeros and do not count;
    every worker still takes the step, so DDP stays in lock-step)."""
    per_row = F.cross_entropy(scores, labels, reduction="none")
    return (per_row * ok).sum() / ok.sum().clamp(min=1)


def train_step(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
               grad_clip: float | None, params, bf16: bool = False) -> torch.Tensor:  # fmt: skip
    """One step: forward (through DDP when `model` is wrapped; bf16 autocast when asked), the
    loss over the rows that decoded plus the model's auxiliary loss, backward, the recipe's
    gradient clipping of `params`, the optimiser's step. `optimizer=None`: forward and backward
    only (the gradients zeroed on `model`), what `bench models` times. Returns the loss, detached
    (on the device: no sync)."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        scores, aux = model(x, y)
    loss = masked_cross_entropy(scores.float(), y, ok) + aux.float() * ok.any()
    if optimizer is None:
        model.zero_grad(set_to_none=True)
    else:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    if optimizer is not None:
        optimizer.step()
    return loss.detach()
