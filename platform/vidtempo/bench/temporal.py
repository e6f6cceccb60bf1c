"""`vidtempo bench temporal`: does each temporal model learn what frame averaging cannot?

TSN, TSM, TIN and TANet, each with its synthetic recipe (jobs/configs/synthetic/), trained on the
demo's synthetic temporal dataset with several seeds (`run.seed`: initialisation, the order of
the clips and their augmentation). Per model: the accuracy on the temporal-order pairs (mean and
min over the seeds; TSN can only be at chance there), on the appearance-only classes, val/top1,
whether TIN's offsets moved, and minutes per run. Every run is an MLflow run of the experiment
`bench-temporal`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.machine import cpu_name

RECIPES = {
    "TSN": "tsn_r18_synthetic",
    "TSM": "tsm_r18_synthetic",
    "TIN": "tin_r18_synthetic",
    "TANet": "tanet_r18_synthetic",
}
SEEDS = (0, 1, 2)


def run(workdir: str, seeds: tuple[int, ...] = SEEDS, only: list[str] | None = None,
        overrides: list[str] | None = None) -> dict:  # fmt: skip
    from vidtempo import demo, tracking
    from vidtempo.train.run import fit

    workdir = Path(workdir).resolve()
    names = only or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise C.ConfigError(f"unknown model(s) {unknown}: choose from {list(RECIPES)}")
    data = demo.prepare(workdir)
    stamp = time.strftime("%H%M%S")
    out = {"benchmark": "temporal", "device": cpu_name(), "seeds": list(seeds),
           "overrides": list(overrides or []), "data": demo.VIDEOS_PER_CLASS, "runs": []}  # fmt: skip
    for model in names:
        for seed in seeds:
            cfg = C.load(RECIPES[model], [
                *(overrides or []), f"run.seed={seed}", "run.experiment=bench-temporal",
                f"run.storage_path={workdir / 'runs'}"])  # fmt: skip
            t = time.perf_counter()
            res = fit(cfg, data, name=f"temporal-{model.lower()}-s{seed}-{stamp}")
            per_class = json.loads(tracking.load_text(
                res["mlflow_uri"], res["mlflow_run_id"], "test_per_class_top1.json"))  # fmt: skip
            m = res["metrics"]
            out["runs"].append({
                "model": model, "config": cfg.name, "seed": seed,
                "pairs_top1": demo.pairs_accuracy(per_class),
                "still_top1": demo.appearance_accuracy(per_class),
                "val_top1": m.get("val/top1", float("nan")),
                "offsets": demo.offsets_column(m),
                "minutes": (time.perf_counter() - t) / 60,
                "mlflow_run_id": res["mlflow_run_id"], "per_class_top1": per_class,
            })  # fmt: skip
    out["summary"] = summarise(out["runs"])
    return out


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per model: pairs and appearance accuracy over the seeds (mean, min, max), mean val/top1
    and minutes per run."""
    import numpy as np

    summary = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == model]
        pairs = [r["pairs_top1"] for r in rs]
        still = [r["still_top1"] for r in rs]
        summary[model] = {
            "seeds": len(rs),
            "pairs_mean": float(np.mean(pairs)), "pairs_min": min(pairs), "pairs_max": max(pairs),
            "still_mean": float(np.mean(still)), "still_min": min(still),
            "val_mean": float(np.mean([r["val_top1"] for r in rs])),
            "minutes": float(np.mean([r["minutes"] for r in rs])),
            "offsets": "; ".join(r["offsets"] for r in rs if r["offsets"] != "-") or "-",
        }  # fmt: skip
    return summary


def table(r: dict) -> str:
    seeds = ", ".join(map(str, r["seeds"]))
    sets = f", --set {' '.join(r['overrides'])}" if r["overrides"] else ""
    lines = [f"seeds {seeds}{sets}; {r['device']}", "",
             "| model | pairs top1 mean | pairs min | pairs max | still top1 mean | still min | "
             "val/top1 mean | min / run | TIN offsets |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for model, s in r["summary"].items():
        lines.append(
            f"| {model} | {s['pairs_mean']:.1f} | {s['pairs_min']:.1f} | {s['pairs_max']:.1f} | "
            f"{s['still_mean']:.1f} | {s['still_min']:.1f} | {s['val_mean']:.1f} | "
            f"{s['minutes']:.1f} | {s['offsets']} |"
        )
    lines += ["", "| model | seed | pairs top1 | still top1 | val/top1 | minutes |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for run in r["runs"]:
        lines.append(f"| {run['model']} | {run['seed']} | {run['pairs_top1']:.1f} | "
                     f"{run['still_top1']:.1f} | {run['val_top1']:.1f} | {run['minutes']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(args) -> int:
    result = run(args.workdir, tuple(args.seeds), args.only, args.overrides)
    return emit(result, table(result), args.json)
