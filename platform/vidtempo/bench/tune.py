"""`vidtempo bench tune`: the full grid against random + ASHA and TPE + ASHA over the same lr ×
shift_div space on the synthetic dataset, each searcher with several seeds, in one run.

The figure of merit: the trial-epochs a search spent (in the order Tune received the results)
until one of its trials came within `--within` (98%) of the grid's best value of the ranking
metric, as a share of the grid's trial-epochs. Every sweep ranks on the same split: val/ by
default here (`--rank-on`), 32 videos a class — the bench measures how fast each searcher finds a
good trial, and 384 videos are a steadier yardstick than the held-out 10% of this small train/
(3 videos a class) that a user's sweep ranks on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.machine import cpu_name
from vidtempo.tune import space as S

# 12 points around the synthetic recipe's lr 0.03; shift_div 8 no longer fits its width-16 TIN
# (16 / 8 channels are not a multiple of TIN's 4 groups)
SPACE = ["optim.lr=grid:0.00375,0.0075,0.015,0.03,0.06,0.12", "model.shift_div=grid:2,4"]
# no warmup epoch: at 0.1x lr every trial sits at chance after it, and ASHA's first rung would
# compare noise (BENCHMARKS.md, runs 1 and 2); one pass over the data per epoch, so that a
# trial-epoch is the unit of compute the comparison counts (the recipe's train.min_steps would
# repeat this smaller set within each epoch)
OVERRIDES = ["schedule.warmup_epochs=0", "train.min_steps=null"]
# the demo's 32 training videos per class, and 4× its validation set: the best value of a
# sweep is a maximum over noisy values, and 64 videos moved it by ±10 points between reruns
VIDEOS_PER_CLASS = {"train": 32, "val": 32}
SEARCHERS = ("grid", "random+asha", "tpe+asha")


def searched_space(space: list[str], searcher: str) -> list[str]:
    """The grid's points for the grid; the same values as choices for random and TPE, so every
    searcher draws from the same points."""
    if searcher == "grid":
        return space
    return [item.replace("=grid:", "=choice:") for item in space]


def spent_until(timeline: list[dict], target: float, mode: str = "max") -> int | None:
    """Trial-epochs received (in time order) until the first result at or past `target`."""
    for n, row in enumerate(sorted(timeline, key=lambda r: r["time"]), start=1):
        if row["value"] == row["value"] and (row["value"] >= target if mode == "max"
                                             else row["value"] <= target):  # fmt: skip
            return n
    return None


def run(workdir: str, epochs: int = 12, grace: int = 2, reduction: int = 3,
        space: list[str] | None = None, overrides: list[str] | None = None,
        seeds: tuple[int, ...] = (0, 1), samples: int | None = None, within: float = 0.98,
        searchers: tuple[str, ...] = SEARCHERS, rank_on: str = "val") -> dict:  # fmt: skip
    from vidtempo.demo import prepare
    from vidtempo.tune.sweep import Plan, sweep

    data = prepare(Path(workdir).resolve(), VIDEOS_PER_CLASS)
    stamp = time.strftime("%H%M%S")
    space = space or SPACE
    overrides = [*OVERRIDES, *(overrides or [])]
    grid_points = 1
    for _, values in S.parse(space).values():
        grid_points *= len(values)
    samples = samples or max(2, grid_points // 2)  # half the grid's trials each
    out = {"benchmark": "grid vs random + ASHA vs TPE + ASHA", "device": cpu_name(),
           "space": space, "epochs": epochs, "grace_period": grace,
           "reduction_factor": reduction, "overrides": overrides, "samples": samples,
           "within": within, "rank_on": rank_on, "rows": []}  # fmt: skip
    for searcher in searchers:
        for seed in seeds if searcher != "grid" else seeds[:1]:
            # the seed draws the search only: every trial trains with run.seed 0, so that a point
            # gives the same value in every sweep and the grid's best is a target each can reach
            base = C.load("tin_r18_synthetic", [f"train.epochs={epochs}", "run.seed=0",
                                                "run.experiment=bench-tune", *overrides])  # fmt: skip
            search = "tpe" if searcher.startswith("tpe") else "random"
            plan = Plan(space=S.describe(S.parse(searched_space(space, searcher))),
                        samples=1 if searcher == "grid" else samples, search=search,
                        scheduler="grid" if searcher == "grid" else "asha", grace_period=grace,
                        reduction_factor=reduction, rank_on=rank_on, search_seed=seed)  # fmt: skip
            t = time.perf_counter()
            res = sweep(base, data, plan, name=f"bench-{searcher.replace('+', '-')}-{seed}-{stamp}")
            out["rows"].append({
                "searcher": searcher, "seed": seed, "metric": res["metric"],
                "trials": len(res["rows"]),
                "trial_epochs": sum(r["epochs"] for r in res["rows"]),
                "best": res["best"]["best"] if res["best"] else float("nan"),
                "best_params": res["best"]["params"] if res["best"] else {},
                "timeline": res["timeline"], "minutes": (time.perf_counter() - t) / 60,
            })  # fmt: skip
    grid = next(r for r in out["rows"] if r["searcher"] == "grid")
    target = within * grid["best"]
    for row in out["rows"]:
        spent = spent_until(row["timeline"], target)
        row["epochs_to_target"] = spent
        row["share_of_grid"] = spent / grid["trial_epochs"] if spent else None
    return out


def table(r: dict) -> str:
    sets = f", --set {' '.join(r['overrides'])}" if r.get("overrides") else ""
    metric = r["rows"][0]["metric"] if r["rows"] else "?"
    lines = [f"space {' '.join(r['space'])}, {r['epochs']} epochs per trial, {r['samples']} "
             f"samples for random and TPE, ASHA grace {r['grace_period']} reduction "
             f"{r['reduction_factor']}{sets}, ranked on {metric}, {r['device']}", "",
             f"| searcher | seed | trials | trial-epochs | best {metric} | trial-epochs to "
             f"{100 * r['within']:.0f}% of the grid's best | share of the grid's | minutes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in r["rows"]:
        share = f"{100 * row['share_of_grid']:.0f}%" if row["share_of_grid"] else "not reached"
        lines.append(f"| {row['searcher']} | {row['seed']} | {row['trials']} | "
                     f"{row['trial_epochs']} | {row['best']:.2f} | "
                     f"{row['epochs_to_target'] or '–'} | {share} | {row['minutes']:.1f} |")  # fmt: skip
    return "\n".join(lines)


HELP = ("the full grid vs random + ASHA vs TPE + ASHA on the synthetic dataset: "
        "trial-epochs to 98%% of the grid's best")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="bench/tune", help="where the synthetic data is made")
    p.add_argument("--epochs", type=int, default=12, help="per trial (default 12)")
    p.add_argument("--grace-period", type=int, default=2,
                   help="ASHA's first rung, in epochs (default 2)")
    p.add_argument("--reduction-factor", type=int, default=3,
                   help="ASHA keeps 1/rf of the trials at each rung (default 3)")
    p.add_argument("--space", action="append", default=None, metavar="KEY=grid:A,B",
                   help="the space (default: lr 0.00375 … 0.12, ×2 steps × shift_div 2/4)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the base recipe tin_r18_synthetic (after the "
                   "bench's own schedule.warmup_epochs=0 train.min_steps=null)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="the search seed of each random and TPE sweep (default 0 1; every "
                   "trial trains with run.seed 0)")
    p.add_argument("--samples", type=int, default=None,
                   help="trials of each random and TPE sweep (default: half the grid's)")
    p.add_argument("--within", type=float, default=0.98,
                   help="the target: this share of the grid's best (default 0.98)")
    p.add_argument("--searchers", nargs="+", default=list(SEARCHERS), choices=list(SEARCHERS),
                   help="a subset (grid first)")
    p.add_argument("--rank-on", choices=["val", "holdout"], default="val",
                   help="the split every sweep ranks on (default val: 384 videos here)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")


def main(args: argparse.Namespace) -> int:
    result = run(args.workdir, args.epochs, args.grace_period, args.reduction_factor,
                 args.space, args.overrides, tuple(args.seeds), args.samples, args.within,
                 tuple(args.searchers), args.rank_on)  # fmt: skip
    for row in result["rows"]:
        row.pop("timeline")
    return emit(result, table(result), args.json)
