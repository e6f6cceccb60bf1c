"""`vidtempo bench op`: tin_shift forward+backward, native kernel vs the pure-PyTorch reference.

The shapes are the ones TIN-R50 really sees: each of its 16 Bottlenecks interlaces F = C_in/4
channels of the block input, as 4 groups, at the block's input resolution, for a batch of
8 videos × 8 frames; the linear sampler calls tin_shift twice per block (floor and floor + 1).
"""

from __future__ import annotations

import argparse
from collections import Counter

from vidtempo.bench import emit
from vidtempo.bench.timing import compare, cuda_graph_seconds
from vidtempo.machine import cpu_name

# (conv1 input channels, input side) of the 16 Bottlenecks of ResNet-50 at 224²
TIN_R50_BLOCKS = (
    [(64, 56), (256, 56), (256, 56)]
    + [(256, 56), (512, 28), (512, 28), (512, 28)]
    + [(512, 28)] + [(1024, 14)] * 5
    + [(1024, 14), (2048, 7), (2048, 7)]
)  # fmt: skip
GROUPS = 4
CALLS_PER_BLOCK = 2


def _shapes(videos: int, frames: int) -> list[tuple[tuple[int, int, int, int], int]]:
    """Distinct [N, T, F, HW] shapes with how many blocks use each."""
    counts = Counter((videos, frames, c // 4, side * side) for c, side in TIN_R50_BLOCKS)
    return sorted(counts.items(), key=lambda kv: -kv[0][3])


def _fwd_bwd(fn, x, shift, grad):
    def run():
        x.grad = None
        fn(x, shift).backward(grad)

    return run


def _copies(x, grad):
    def run():
        return x.detach().clone(), grad.clone()

    return run


def _kernels_and_copy(x, grad, shift, device: str, repeats: int) -> tuple[float, float]:
    """Seconds of tin_shift + tin_shift_backward, and of one same-shape device copy."""
    import torch

    out = torch.empty_like(x)

    def kernels():
        torch.ops.vidtempo.tin_shift(x, shift)
        torch.ops.vidtempo.tin_shift_backward(grad, shift)

    def copy():
        out.copy_(x)

    candidates = {"kernels": kernels, "copy": copy}
    if device.startswith("cuda"):
        secs = cuda_graph_seconds(candidates, repeats=repeats)
    else:
        secs = compare(candidates, device=device, repeats=repeats)
    return secs["kernels"], secs["copy"]


def run(
    device: str = "cpu",
    dtype: str = "float32",
    videos: int = 8,
    frames: int = 8,
    repeats: int = 20,
    threads: int | None = None,
) -> dict:
    import torch

    from vidtempo.ops import native
    from vidtempo.ops.reference import tin_shift_reference

    if native.load() is None:
        raise SystemExit(f"cannot benchmark the native op: {native.why_not()}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device here")
    if threads:
        torch.set_num_threads(threads)
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    rows = []
    totals = {"native": 0.0, "reference": 0.0, "copy": 0.0}
    for (n, t, f, hw), blocks in _shapes(videos, frames):
        x = torch.randn(n, t, f, hw, generator=gen).to(device=device, dtype=dt).requires_grad_()
        grad = torch.randn(n, t, f, hw, generator=gen).to(device=device, dtype=dt)
        # offsets in (-2, 2) floored, as the linear sampler produces them
        shift = torch.randint(-2, 2, (n, GROUPS), generator=gen, dtype=torch.int32).to(device)
        secs = compare(
            {
                "native": _fwd_bwd(torch.ops.vidtempo.tin_shift, x, shift, grad),
                "reference": _fwd_bwd(tin_shift_reference, x, shift, grad),
                # the floor of any out-of-place fwd+bwd: allocate and write two tensors
                "copy": _copies(x, grad),
            },
            device=device,
            repeats=repeats,
        )
        # the two kernels alone (no autograd), against a device-to-device copy of the same tensor
        # as the bandwidth ceiling, measured here in the same run; on a GPU through CUDA graphs
        kernels, ceiling = _kernels_and_copy(x.detach(), grad, shift, device, repeats)
        # bytes a fwd+bwd must move at least: read x, write out, read grad_out, write grad_in
        nbytes = 4 * x.numel() * x.element_size()
        for k in totals:
            totals[k] += secs[k] * blocks * CALLS_PER_BLOCK
        rows.append(
            {
                "shape": [n, t, f, hw],
                "side": int(round(hw**0.5)),
                "blocks": blocks,
                "native_ms": secs["native"] * 1e3,
                "reference_ms": secs["reference"] * 1e3,
                "copy_floor_ms": secs["copy"] * 1e3,
                "speedup": secs["reference"] / secs["native"],
                "native_GBps": nbytes / secs["native"] / 1e9,
                "reference_GBps": nbytes / secs["reference"] / 1e9,
                "kernels_ms": kernels * 1e3,
                "kernels_GBps": nbytes / kernels / 1e9,
                # a copy reads and writes one tensor: 2 passes
                "copy_GBps": 2 * x.numel() * x.element_size() / ceiling / 1e9,
            }
        )
        rows[-1]["kernels_vs_copy"] = rows[-1]["kernels_GBps"] / rows[-1]["copy_GBps"]
    return {
        "benchmark": "tin_shift forward+backward",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": dtype,
        "torch": torch.__version__,
        "videos": videos,
        "frames": frames,
        "repeats": repeats,
        "rows": rows,
        "tin_r50_total": {
            "native_ms": totals["native"] * 1e3,
            "reference_ms": totals["reference"] * 1e3,
            "copy_floor_ms": totals["copy"] * 1e3,
            "speedup": totals["reference"] / totals["native"],
        },
    }


def table(result: dict) -> str:
    lines = [
        f"tin_shift fwd+bwd on {result['device']} ({result['threads']} threads, "
        f"{result['dtype']}, N={result['videos']} videos x T={result['frames']} frames, "
        f"median of {result['repeats']})",
        "",
        "| [N, T, F, HW] | blocks | native ms | reference ms | speedup | native GB/s "
        "| reference GB/s | 2x clone() ms | kernels ms | kernels GB/s | copy GB/s "
        "| kernels / copy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['shape']} ({r['side']}²) | {r['blocks']} | {r['native_ms']:.3f} | "
            f"{r['reference_ms']:.3f} | {r['speedup']:.2f}x | {r['native_GBps']:.1f} | "
            f"{r['reference_GBps']:.1f} | {r['copy_floor_ms']:.3f} | {r['kernels_ms']:.4f} | "
            f"{r['kernels_GBps']:.1f} | {r['copy_GBps']:.1f} | {r['kernels_vs_copy']:.0%} |"
        )
    tot = result["tin_r50_total"]
    lines.append(
        f"| all 16 blocks x {CALLS_PER_BLOCK} calls (TIN-R50 step) | 16 | {tot['native_ms']:.2f} | "
        f"{tot['reference_ms']:.2f} | {tot['speedup']:.2f}x | | | {tot['copy_floor_ms']:.2f} "
        "| | | | |"
    )
    lines.append("\nkernels: tin_shift + tin_shift_backward called directly (on a GPU timed "
                 "through CUDA graphs, without launch overhead); copy: a device-to-device copy "
                 "of the same tensor, the bandwidth ceiling, in the same run")  # fmt: skip
    return "\n".join(lines)


HELP = "tin_shift fwd+bwd: native kernel vs pure-PyTorch reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float16", "bfloat16", "float64"])  # fmt: skip
    p.add_argument("--videos", type=int, default=8, help="videos per batch (N)")
    p.add_argument("--frames", type=int, default=8, help="frames per video (T)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds per shape")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def main(args: argparse.Namespace) -> int:
    result = run(args.device, args.dtype, args.videos, args.frames, args.repeats, args.threads)
    return emit(result, table(result), args.json)
