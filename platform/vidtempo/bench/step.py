"""`vidtempo bench step`: one training step of the synthetic recipes' models at the demo's
shapes, in this process on one thread, as ratios to TSN's step measured in the same run.

The step is the training loop's (train/step.py's `train_step`: forward, loss, backward, the
recipe's gradient clipping, its SGD), on random clips of the demo's batch (8 clips × 8 frames ×
32², one worker's share). The models take turns: `--rounds` rounds of `--repeats` steps each,
after `--warmup` steps; a model's time is the best of its rounds' medians, so that a burst of
machine noise in one round does not decide the ratio (issue 25: TIN ≤ 1.5× TSN here). The
last column is the median over rounds of each round's ratio: on a host whose speed drifts
between rounds (measured: TSN's round medians 27 and 37-41 ms in one run) the best medians
may come from rounds of different speeds, and that ratio with them.
"""

from __future__ import annotations

import argparse
import statistics
import time

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.machine import cpu_name

RECIPES = {"TSN": "tsn_r18_synthetic", "TSM": "tsm_r18_synthetic",
           "TIN": "tin_r18_synthetic", "TANet": "tanet_r18_synthetic"}  # fmt: skip
SIZE = 32  # the recipes' crop


def _step_fn(name: str, batch: int):
    import torch

    from vidtempo import models
    from vidtempo.train.optim import build_optimizer
    from vidtempo.train.step import train_step

    cfg = C.load(name)
    torch.manual_seed(0)
    model = models.build(cfg).train()
    opt = build_optimizer(model, cfg.optim, cfg.effective_lr)
    x = torch.randn(batch, cfg.model.num_segments, 3, SIZE, SIZE)
    y = torch.arange(batch) % cfg.model.num_classes
    ok = torch.ones(batch, dtype=torch.bool)
    return lambda: train_step(model, opt, x, y, ok, cfg.optim.grad_clip, model.parameters())


def run(batch: int = 8, rounds: int = 3, repeats: int = 15, warmup: int = 3,
        only: list[str] | None = None) -> dict:  # fmt: skip
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fns = {k: _step_fn(v, batch) for k, v in RECIPES.items() if not only or k in only or k == "TSN"}
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        medians: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                medians[k].append(statistics.median(times))
    finally:
        torch.set_num_threads(threads)
    best = {k: min(v) for k, v in medians.items()}
    # the ratio within each round too: when the machine's speed drifts between rounds, the two
    # best medians can come from rounds of different speeds; a round's pair cannot
    paired = {k: statistics.median(m / t for m, t in zip(medians[k], medians["TSN"])) for k in fns}
    rows = [{"model": k, "recipe": RECIPES[k], "ms_per_step": best[k] * 1e3,
             "round_medians_ms": [m * 1e3 for m in medians[k]], "vs_TSN": best[k] / best["TSN"],
             "vs_TSN_per_round": paired[k]}
            for k in fns]  # fmt: skip
    return {"benchmark": "training step at the demo's shapes, one thread", "device": cpu_name(),
            "batch": batch, "frames": 8, "size": SIZE, "rounds": rounds, "repeats": repeats,
            "warmup": warmup, "rows": rows}  # fmt: skip


def table(result: dict) -> str:
    lines = [
        f"training step (forward, backward, clipping, SGD), {result['batch']} clips × "
        f"{result['frames']} frames × {result['size']}², one thread, {result['device']}; best of "
        f"{result['rounds']} round medians of {result['repeats']} steps",
        "",
        "| model | recipe | ms / step | round medians (ms) | vs TSN | vs TSN, median of rounds |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in result["rows"]:
        rounds = ", ".join(f"{m:.1f}" for m in r["round_medians_ms"])
        lines.append(f"| {r['model']} | {r['recipe']} | {r['ms_per_step']:.1f} | {rounds} | "
                     f"{r['vs_TSN']:.2f}x | {r['vs_TSN_per_round']:.2f}x |")  # fmt: skip
    return "\n".join(lines)


HELP = ("the synthetic recipes' training step at the demo's shapes, one thread: TSM, TIN, "
        "TANet vs TSN")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=8, help="clips per step (default 8, the demo's)")
    p.add_argument("--rounds", type=int, default=3, help="rounds the models take turns in")
    p.add_argument("--repeats", type=int, default=15, help="steps per model and round")
    p.add_argument("--only", nargs="+", default=None, choices=list(RECIPES),
                   help="a subset (TSN is always timed: the ratios are to it)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")


def main(args: argparse.Namespace) -> int:
    result = run(args.batch, args.rounds, args.repeats, only=args.only)
    return emit(result, table(result), args.json)
