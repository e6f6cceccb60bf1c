"""Learning-rate schedules as mmcv 1.x's LrUpdaterHook computes them
(mmcv/runner/hooks/lr_updater.py).

`lr_at(schedule, lr0, epochs, iters_per_epoch, it)` is the lr of global iteration `it`
(0-based); the loop calls it before every optimizer step.

- cosine, by epoch:      lr(e) = η_min + (lr0 − η_min)·(1 + cos(π·e/E))/2, e = epoch index
- cosine, by iteration:  the same with e/E replaced by it/(E·W)
- step:                  lr0 · gamma^(number of steps ≤ e)
- linear warmup over the first warmup_epochs·W iterations, on top of the regular lr:
                         lr = regular · (1 − (1 − i/Wₜ)·(1 − warmup_ratio))
η_min is min_lr_ratio·lr0 when min_lr_ratio is set, else min_lr.
"""

from __future__ import annotations

import math

from vidtempo.config import ScheduleConfig


def regular_lr(s: ScheduleConfig, lr0: float, epochs: int, iters_per_epoch: int, it: int) -> float:
    epoch = it // iters_per_epoch
    if s.kind == "step":
        return lr0 * s.gamma ** sum(1 for step in s.steps if epoch >= step)
    eta_min = s.min_lr_ratio * lr0 if s.min_lr_ratio is not None else s.min_lr
    progress = epoch / epochs if s.by_epoch else it / (epochs * iters_per_epoch)
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * progress)) / 2


def lr_at(s: ScheduleConfig, lr0: float, epochs: int, iters_per_epoch: int, it: int) -> float:
    lr = regular_lr(s, lr0, epochs, iters_per_epoch, it)
    warmup_iters = round(s.warmup_epochs * iters_per_epoch)
    if it < warmup_iters:
        lr *= 1 - (1 - it / warmup_iters) * (1 - s.warmup_ratio)
    return lr
