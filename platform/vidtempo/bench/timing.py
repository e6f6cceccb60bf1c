"""Interleaved timing of several candidates, so that machine noise hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare(
    candidates: dict[str, Callable[[], object]],
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    min_time: float = 0.0,
) -> dict[str, float]:
    """Median seconds per call of each candidate, run round-robin `repeats` times."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - start < min_time:
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(v) for name, v in samples.items()}
