"""`vidtempo bench temporal`: does each temporal model learn what frame averaging cannot?

TSN, TSM, TIN, TANet and TPN-TSM, each with its synthetic recipe (jobs/configs/synthetic/),
trained on the synthetic temporal dataset with its tempo classes (16 classes) over several seeds
(`run.seed`: initialisation, the order of the clips and their augmentation). Per model and class
family (vidtempo.data.synthetic), the test accuracy over the seeds (mean and min):

    order        the five temporal-order pairs (a clip and its reverse): TSN can only be at chance
    tempo        the circling dot, slow or fast (the same frames, reordered): TSN at chance too
    varied order stripes drifting right or left at a random speed (0.5x–3x)
    appearance   the two still shapes: every model should get them

plus val/top1, whether TIN's offsets moved, and minutes per run. Every run is an MLflow run of the
experiment `bench-temporal` (TPN's auxiliary head and levels among its metrics).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.data import synthetic
from vidtempo.machine import cpu_name

RECIPES = {
    "TSN": "tsn_r18_synthetic",
    "TSM": "tsm_r18_synthetic",
    "TIN": "tin_r18_synthetic",
    "TANet": "tanet_r18_synthetic",
    "TPN-TSM": "tpn_tsm_r18_synthetic",
}
SEEDS = (0, 1, 2)
FAMILIES = {
    "order": [c for pair in synthetic.TEMPORAL_PAIRS for c in pair],
    "tempo": [c for pair in synthetic.TEMPO_PAIRS for c in pair],
    "varied order": [c for pair in synthetic.VARIED_ORDER_PAIRS for c in pair],
    "appearance": synthetic.APPEARANCE_CLASSES,
}
CLASSES = len(synthetic.ALL_CLASSES)


def family_accuracy(per_class: list[float | None]) -> dict[str, float]:
    """Family → mean per-class test top-1 over its classes."""
    out = {}
    for family, classes in FAMILIES.items():
        values = [per_class[c] for c in classes if per_class[c] is not None]
        out[family] = sum(values) / len(values) if values else float("nan")
    return out


def run(workdir: str, seeds: tuple[int, ...] = SEEDS, only: list[str] | None = None,
        overrides: list[str] | None = None) -> dict:  # fmt: skip
    from vidtempo import demo, tracking
    from vidtempo.train.run import fit

    workdir = Path(workdir).resolve()
    names = only or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise C.ConfigError(f"unknown model(s) {unknown}: choose from {list(RECIPES)}")
    data = demo.prepare(workdir, classes=CLASSES)
    stamp = time.strftime("%H%M%S")
    out = {"benchmark": "temporal", "device": cpu_name(), "seeds": list(seeds),
           "overrides": list(overrides or []), "data": demo.VIDEOS_PER_CLASS,
           "classes": CLASSES, "runs": []}  # fmt: skip
    for model in names:
        for seed in seeds:
            cfg = C.load(RECIPES[model], [
                f"model.num_classes={CLASSES}", *(overrides or []), f"run.seed={seed}",
                "run.experiment=bench-temporal", f"run.storage_path={workdir / 'runs'}"])  # fmt: skip
            t = time.perf_counter()
            res = fit(cfg, data, name=f"temporal-{model.lower()}-s{seed}-{stamp}")
            per_class = json.loads(tracking.load_text(
                res["mlflow_uri"], res["mlflow_run_id"], "test_per_class_top1.json"))  # fmt: skip
            m = res["metrics"]
            out["runs"].append({
                "model": model, "config": cfg.name, "seed": seed,
                "families": family_accuracy(per_class),
                "val_top1": m.get("val/top1", float("nan")),
                "offsets": demo.offsets_column(m),
                "tpn_aux_top1": m.get("tpn/aux_top1"),
                "minutes": (time.perf_counter() - t) / 60,
                "mlflow_run_id": res["mlflow_run_id"], "per_class_top1": per_class,
            })  # fmt: skip
    out["summary"] = summarise(out["runs"])
    return out


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per model: each family's accuracy over the seeds (mean, min, max), mean val/top1 and
    minutes per run."""
    import numpy as np

    summary = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == model]
        s = {"seeds": len(rs), "val_mean": float(np.mean([r["val_top1"] for r in rs])),
             "minutes": float(np.mean([r["minutes"] for r in rs])),
             "offsets": "; ".join(r["offsets"] for r in rs if r["offsets"] != "-") or "-"}  # fmt: skip
        for family in FAMILIES:
            values = [r["families"][family] for r in rs]
            s[family] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        summary[model] = s
    return summary


def table(r: dict) -> str:
    seeds = ", ".join(map(str, r["seeds"]))
    sets = f", --set {' '.join(r['overrides'])}" if r["overrides"] else ""
    fams = list(FAMILIES)
    lines = [f"seeds {seeds}{sets}; {r['classes']} classes; {r['device']}", "",
             "| model | " + " | ".join(f"{f} mean | {f} min" for f in fams)
             + " | val/top1 mean | min / run | TIN offsets |",
             "|---|" + "---:|---:|" * len(fams) + "---:|---:|---|"]  # fmt: skip
    for model, s in r["summary"].items():
        cells = [f"{s[f]['mean']:.1f} | {s[f]['min']:.1f}" for f in fams]
        lines.append(f"| {model} | " + " | ".join(cells)
                     + f" | {s['val_mean']:.1f} | {s['minutes']:.1f} | {s['offsets']} |")  # fmt: skip
    lines += ["", "| model | seed | " + " | ".join(fams) + " | val/top1 | minutes |",
              "|---|---:|" + "---:|" * len(fams) + "---:|---:|"]  # fmt: skip
    for run in r["runs"]:
        cells = " | ".join(f"{run['families'][f]:.1f}" for f in fams)
        lines.append(f"| {run['model']} | {run['seed']} | {cells} | {run['val_top1']:.1f} | "
                     f"{run['minutes']:.1f} |")  # fmt: skip
    return "\n".join(lines)


HELP = ("TSN/TSM/TIN/TANet/TPN-TSM on the synthetic temporal set with its tempo classes "
        "over several seeds: accuracy on the order pairs, the tempo pair, the varied-speed "
        "order pair and the appearance classes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="bench/temporal", help="where the data and runs go")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="run.seed values")
    p.add_argument("--only", nargs="+", default=None, choices=list(RECIPES), help="a subset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of every recipe, e.g. --set train.epochs=8")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.add_argument("--verbose", action="store_true", help="also print Ray Train's and Ray "
                   "Data's INFO lines (or set VIDTEMPO_VERBOSE=1)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    result = run(args.workdir, tuple(args.seeds), args.only, args.overrides)
    return emit(result, table(result), args.json)
