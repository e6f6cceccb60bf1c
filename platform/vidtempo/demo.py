"""`make demo` / `vidtempo demo`: the main job, end to end, on the synthetic temporal dataset.

    generate + convert the synthetic dataset (once) → train TSN and TIN on a local Ray with two
    CPU workers → evaluate the test protocol → MLflow (SQLite) → a table and the UI command

Ten of the synthetic dataset's twelve classes are five pairs, each one clip and the same clip
played backwards (vidtempo.data.synthetic): only a temporal model tells them apart. "pairs top1"
is the accuracy on those ten classes — 50% is what a model gets that knows the motion but not its
direction — and "still top1" on the two appearance-only classes, which any model should get.
"TIN offsets" says whether TIN's learned temporal offsets moved from where they start (±0.5).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vidtempo import config, machine, tracking
from vidtempo.data import synthetic
from vidtempo.data.prepare import prepare_synthetic, synthetic_ready
from vidtempo.models.diagnostics import offsets_moved

CONFIGS = ("tsn_r18_synthetic", "tin_r18_synthetic")
# 24 validation videos per class: 240 on the pairs, so a model at chance scores 50% ± 3.2
VIDEOS_PER_CLASS = {"train": 96, "val": 24}
FRAMES, SIZE = 32, 40


def pairs_accuracy(per_class: list[float | None]) -> float:
    """Mean per-class top-1 over the classes of the temporal-order pairs."""
    return _mean([per_class[c] for pair in synthetic.TEMPORAL_PAIRS for c in pair])


def appearance_accuracy(per_class: list[float | None]) -> float:
    """Mean per-class top-1 over the appearance-only classes."""
    return _mean([per_class[c] for c in synthetic.APPEARANCE_CLASSES])


def _mean(values: list[float | None]) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def prepare(workdir: Path, videos_per_class: dict[str, int] | None = None,
            classes: int = len(synthetic.CLASSES)) -> Path:  # fmt: skip
    """The demo's synthetic dataset under `workdir`/data (made once, and again when the
    generator or its settings changed); with classes=16, the tempo classes too."""
    data = workdir / "data"
    per_class = videos_per_class or VIDEOS_PER_CLASS
    if not all(synthetic_ready(data, per_class, FRAMES, SIZE, seed=0, classes=classes).values()):
        print(f"generating the synthetic temporal dataset in {data} ...", flush=True)
        prepare_synthetic(data, per_class, FRAMES, SIZE, seed=0, workers=2, classes=classes)
    return data


def main(workdir: str | Path | None = None, epochs: int | None = None) -> int:
    from vidtempo.train.run import fit

    started = time.perf_counter()
    workdir = Path(workdir) if workdir else machine.home() / "demo"
    data = prepare(workdir.resolve())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for name in CONFIGS:
        overrides = {"train.epochs": epochs} if epochs else {}
        cfg = config.load(name, overrides)
        t = time.perf_counter()
        res = fit(cfg, data, name=f"demo-{cfg.model.arch.split('_')[0]}-{stamp}")
        per_class = json.loads(
            tracking.load_text(res["mlflow_uri"], res["mlflow_run_id"], "test_per_class_top1.json")
        )
        m = res["metrics"]
        protocol = config.protocol(cfg.data.test)
        rows.append({
            "model": cfg.model.arch.split("_")[0].upper(),
            "val/top1": m.get("val/top1", float("nan")),
            f"test/top1@{protocol}": m.get(tracking.key(f"test/top1@{protocol}"), float("nan")),
            "pairs top1": pairs_accuracy(per_class),
            "still top1": appearance_accuracy(per_class),
            "TIN offsets": offsets_column(m),
            "clips/s": m.get("clips_per_s", float("nan")),
            "minutes": (time.perf_counter() - t) / 60,
            "MLflow run": res["mlflow_run_id"],
            "uri": res["mlflow_uri"],
        })  # fmt: skip
    print(table(rows))
    print(verdict_line(rows[1]["pairs top1"], rows[0]["pairs top1"]))
    print(f"total {(time.perf_counter() - started) / 60:.1f} min; the runs in the MLflow UI: "
          f"{tracking.ui_command(rows[0]['uri'], cfg.run.experiment)}")  # fmt: skip
    return 0


def verdict_line(tin: float, tsn: float) -> str:
    """The demo's verdict: TIN clearly beats TSN when it is 20 points above it on the pairs."""
    verdict = "TIN beats TSN" if tin > tsn + 20 else "TIN does NOT clearly beat TSN"
    return (f"on the temporal-order pairs (chance within a pair: 50%): TIN {tin:.1f}% vs "
            f"TSN {tsn:.1f}% — {verdict}")  # fmt: skip


def offsets_column(metrics: dict) -> str:
    """'moved (layer2 0.50→1.27)', 'did not move (…)', or '-' for a model without TIN."""
    moved, where = offsets_moved(metrics)
    if not where:
        return "-"
    return f"{'moved' if moved else 'did not move'} ({where})"


def table(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c != "uri"]
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*cols), "-+-".join("-" * w for w in widths)]
    out += [line.format(*row) for row in cells]
    return "\n" + "\n".join(out)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
