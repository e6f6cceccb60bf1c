"""Interleaved timing of several candidates, so that machine noise hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

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


def cuda_graph_seconds(candidates: dict[str, Callable[[], object]], inner: int = 20,
                       repeats: int = 20) -> dict[str, float]:  # fmt: skip
    """Median seconds per call of each candidate on the GPU, with the launch overhead taken out:
    `inner` calls are captured into one CUDA graph and replayed, timed by CUDA events, the
    candidates round-robin. For kernels of a few microseconds, where Python and the launch
    would otherwise be what is measured."""
    import torch

    graphs = {}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in candidates.values():  # warm-up outside the capture (allocator, lazy init)
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    for name, fn in candidates.items():
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(inner):
                fn()
        graphs[name] = g
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, g in graphs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / 1e3 / inner)
    return {name: statistics.median(v) for name, v in samples.items()}
