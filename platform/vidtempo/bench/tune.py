"""`vidtempo bench tune`: ASHA vs the full grid over the same space on the synthetic dataset —
trial-epochs spent (the compute) and the best `val/top1` each finds, in one run."""

from __future__ import annotations

import time
from pathlib import Path

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.demo import prepare
from vidtempo.machine import cpu_name
from vidtempo.tune import space as S
from vidtempo.tune.sweep import sweep

SPACE = ["optim.lr=grid:0.0025,0.005,0.01,0.02", "model.shift_div=grid:2,4,8"]
# no warmup epoch: at 0.1x lr every trial sits at chance after it, and ASHA's first rung would
# compare noise (BENCHMARKS.md, runs 1 and 2); one pass over the data per epoch, so that a
# trial-epoch is the unit of compute the comparison counts (the recipe's train.min_steps would
# repeat this smaller set within each epoch)
OVERRIDES = ["schedule.warmup_epochs=0", "train.min_steps=null"]
# the demo's 32 training videos per class, and 4× its validation set: the best val/top1 of a
# sweep is a maximum over noisy values, and 64 videos moved it by ±10 points between reruns
VIDEOS_PER_CLASS = {"train": 32, "val": 32}


def run(workdir: str, epochs: int = 12, grace: int = 2, reduction: int = 3,
        space: list[str] | None = None, overrides: list[str] | None = None) -> dict:  # fmt: skip
    data = prepare(Path(workdir).resolve(), VIDEOS_PER_CLASS)
    stamp = time.strftime("%H%M%S")
    space = space or SPACE
    overrides = [*OVERRIDES, *(overrides or [])]
    sets = [f"train.epochs={epochs}", "run.experiment=bench-tune", *overrides]
    base = C.load("tin_r18_synthetic", sets)
    out = {"benchmark": "ASHA vs grid", "device": cpu_name(), "space": space, "epochs": epochs,
           "grace_period": grace, "reduction_factor": reduction, "overrides": overrides,
           "rows": []}  # fmt: skip
    for scheduler in ("grid", "asha"):
        t = time.perf_counter()
        res = sweep(base, data, S.parse(space), 1, scheduler, grace, reduction,
                    name=f"bench-{scheduler}-{stamp}")  # fmt: skip
        out["rows"].append({
            "scheduler": scheduler, "trials": len(res["rows"]),
            "trial_epochs": sum(r["epochs"] for r in res["rows"]),
            "best_val_top1": res["best"]["best"] if res["best"] else float("nan"),
            "best_params": res["best"]["params"] if res["best"] else {},
            "minutes": (time.perf_counter() - t) / 60,
        })  # fmt: skip
    grid, asha = out["rows"]
    out["compute_ratio"] = asha["trial_epochs"] / grid["trial_epochs"]
    out["accuracy_ratio"] = asha["best_val_top1"] / grid["best_val_top1"]
    return out


def table(r: dict) -> str:
    sets = f", --set {' '.join(r['overrides'])}" if r.get("overrides") else ""
    lines = [f"space {' '.join(r['space'])}, {r['epochs']} epochs per trial, ASHA grace "
             f"{r['grace_period']} reduction {r['reduction_factor']}{sets}, {r['device']}", "",
             "| scheduler | trials | trial-epochs | best val/top1 | best trial | minutes |",
             "|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for row in r["rows"]:
        lines.append(f"| {row['scheduler']} | {row['trials']} | {row['trial_epochs']} | "
                     f"{row['best_val_top1']:.2f} | {row['best_params']} | {row['minutes']:.1f} |")  # fmt: skip
    lines.append(f"\nASHA / grid: {100 * r['compute_ratio']:.0f}% of the trial-epochs for "
                 f"{100 * r['accuracy_ratio']:.1f}% of the best val/top1")  # fmt: skip
    return "\n".join(lines)


def main(args) -> int:
    result = run(args.workdir, args.epochs, args.grace_period, args.reduction_factor,
                 args.space, args.overrides)  # fmt: skip
    return emit(result, table(result), args.json)
