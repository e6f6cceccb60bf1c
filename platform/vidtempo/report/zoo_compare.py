"""`vidtempo zoo compare`: our runs next to the model zoo's numbers, one table per zoo config.

    rows = collect(uri, experiment)      # every run that names a zoo config and has test results
    text = markdown(rows); chart(rows, "zoo_compare.png")

A run is comparable with its zoo config when it trained on the same dataset with the same
frames per clip and crop size, and was tested under one of the zoo's protocols (views). A run
that is not comparable is listed with the reasons and no difference, and its bar is hatched:
never mixed in with the comparable ones.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from vidtempo import config as C
from vidtempo import tracking
from vidtempo.tracking import record, store

REPORT_KIND = "zoo-compare"


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _frames(get) -> str:
    """Frames per clip as `clip_len x num_clips x frame_interval` of the training sampler."""
    return f"{get('data.train.sampler.clip_len')}x{get('data.train.sampler.num_clips')}x" \
           f"{get('data.train.sampler.frame_interval')}"  # fmt: skip


def _zoo_facts(name: str) -> dict | None:
    if name not in C.zoo_names():
        return None
    cfg = C.load(name)
    flat = dict(C.flatten(cfg))
    return {"dataset": cfg.data.dataset, "frames": _frames(lambda k: flat.get(k)),
            "crop": flat.get("data.test.crop.size"), "epochs": cfg.train.epochs}  # fmt: skip


def collect(uri: str, experiment: str) -> list[dict]:
    """One row per run of `experiment` that names a zoo config and has test metrics."""
    rows, facts = [], {}
    for run in tracking.runs(uri, experiment):
        t, p, m = run["tags"], run["params"], run["metrics"]
        if t.get("vidtempo.kind") in ("sweep", "zoo-log", REPORT_KIND):
            continue
        if t.get("vidtempo.sweep") and t.get("vidtempo.kind") != "sweep-final":
            continue  # a sweep's trial: its final run (the best config retrained) stands for it
        zoo = t.get("zoo.config") or (t.get("vidtempo.config") if "zoo.top1" in t else None)
        ours = {k.split(":", 1)[1]: v for k, v in m.items() if k.startswith("test/top1:")}
        if not zoo or not ours:
            continue
        if zoo not in facts:
            facts[zoo] = _zoo_facts(zoo)
        zf = facts[zoo]
        zoo_views = [k.split(":", 1)[1] for k in t if k.startswith("zoo.top1:")]
        main = t.get("zoo.protocol") or (zoo_views[0] if zoo_views else "")
        shared = [v for v in [main, *zoo_views] if v in ours]
        protocol = shared[0] if shared else sorted(ours)[0]
        reasons = []
        if not shared:
            reasons.append(f"tested {', '.join(sorted(ours))} (zoo: {', '.join(zoo_views) or '?'})")
        if zf is None:
            reasons.append(f"zoo config {zoo} is not in this checkout")
        else:
            if p.get("data.dataset") != zf["dataset"]:
                reasons.append(f"dataset {p.get('data.dataset')} (zoo: {zf['dataset']})")
            frames = _frames(p.get)
            if frames != zf["frames"]:
                reasons.append(f"frames {frames} (zoo: {zf['frames']})")
            if p.get("data.test.crop.size") != str(zf["crop"]):
                reasons.append(f"crop {p.get('data.test.crop.size')} (zoo: {zf['crop']})")
        zoo_view = protocol if shared else main
        top1, top5 = ours[protocol], m.get(f"test/top5:{protocol}")
        zoo_top1 = _float(t.get(f"zoo.top1:{zoo_view}", t.get("zoo.top1")))
        workers = p.get("run.num_workers", "?")
        rows.append({
            "zoo_config": zoo, "run": run["name"], "run_id": run["run_id"],
            "status": run["status"], "protocol": protocol,
            "top1": top1, "top5": top5,
            "zoo_top1": zoo_top1,
            "zoo_top5": _float(t.get(f"zoo.top5:{zoo_view}", t.get("zoo.top5"))),
            "zoo_protocol": zoo_view,
            "reference_top1": _float(t.get("zoo.original_top1")),
            "reference_top5": _float(t.get("zoo.original_top5")),
            "diff_top1": (top1 - zoo_top1) if not reasons and zoo_top1 is not None else None,
            "epochs": int(m.get("epoch", _float(p.get("train.epochs")) or 0)),
            "zoo_epochs": zf["epochs"] if zf else None,
            "gpus": f"{workers} GPU" if p.get("run.use_gpu") == "True" else f"{workers} CPU workers",
            # the arithmetic: run.precision on a GPU (the zoo trained in fp32); a CPU is fp32
            "precision": (p.get("run.precision", "bf16 (before run.precision)")
                          if p.get("run.use_gpu") == "True" else "fp32"),
            "zoo_gpus": t.get("zoo.gpus", "?"),
            "comparable": not reasons, "not_comparable": "; ".join(reasons),
        })  # fmt: skip
    return rows


def _num(v, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(rows: list[dict], experiment: str) -> str:
    out = [f"# Zoo comparison: experiment `{experiment}`", ""]
    if not rows:
        return "\n".join([*out, "No run with test results names a zoo config.", ""])
    for zoo in sorted({r["zoo_config"] for r in rows}):
        group = [r for r in rows if r["zoo_config"] == zoo]
        first = group[0]
        out += [f"## {zoo}", "",
                f"zoo: top-1 {_num(first['zoo_top1'])} / top-5 {_num(first['zoo_top5'])} "
                f"({first['zoo_protocol']}); reference (original code): top-1 "
                f"{_num(first['reference_top1'])} / top-5 {_num(first['reference_top5'])}", "",
                "| run | top-1 | top-5 | protocol | zoo top-1 | zoo top-5 | reference top-1 | "
                "reference top-5 | Δ top-1 vs zoo | epochs (zoo) | GPUs (zoo) | precision | "
                "comparable |",
                "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|---|---|"]  # fmt: skip
        for r in sorted(group, key=lambda r: (not r["comparable"], -r["top1"])):
            diff = "–" if r["diff_top1"] is None else f"{r['diff_top1']:+.2f}"
            mark = "yes" if r["comparable"] else f"**no**: {r['not_comparable']}"
            out.append(
                f"| {r['run']} | {_num(r['top1'])} | {_num(r['top5'])} | {r['protocol']} | "
                f"{_num(r['zoo_top1'])} | {_num(r['zoo_top5'])} | {_num(r['reference_top1'])} | "
                f"{_num(r['reference_top5'])} | {diff} | {r['epochs']} ({r['zoo_epochs'] or '?'}) "
                f"| {r['gpus']} ({r['zoo_gpus']}) | {r['precision']} | {mark} |"
            )
        out.append("")
    return "\n".join(out)


def chart(rows: list[dict], path: str | Path, experiment: str) -> Path:
    """Top-1 bars per zoo config: the zoo, the original code, then our runs (hatched and grey
    when not comparable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoos = sorted({r["zoo_config"] for r in rows}) or ["(none)"]
    fig, axes = plt.subplots(len(zoos), 1, figsize=(9, 1.2 + 0.45 * max(
        (sum(r["zoo_config"] == z for r in rows) + 2 for z in zoos), default=3) * len(zoos)),
        squeeze=False)  # fmt: skip
    for ax, zoo in zip(axes[:, 0], zoos):
        group = [r for r in rows if r["zoo_config"] == zoo]
        labels, values, colors, hatches = [], [], [], []
        if group:
            for label, v, c in (("zoo", group[0]["zoo_top1"], "#4c72b0"),
                                ("reference", group[0]["reference_top1"], "#8172b2")):  # fmt: skip
                if v is not None:
                    labels.append(f"{label} ({group[0]['zoo_protocol']})")
                    values.append(v), colors.append(c), hatches.append("")
        for r in sorted(group, key=lambda r: (not r["comparable"], -r["top1"])):
            note = "" if r["comparable"] else " — not comparable"
            labels.append(f"{r['run']} ({r['protocol']}){note}")
            values.append(r["top1"])
            colors.append("#55a868" if r["comparable"] else "#bbbbbb")
            hatches.append("" if r["comparable"] else "//")
        y = range(len(values))
        bars = ax.barh(list(y), values, color=colors)
        for b, h, v in zip(bars, hatches, values):
            b.set_hatch(h)
            ax.text(v + 0.5, b.get_y() + b.get_height() / 2, f"{v:.1f}", va="center", fontsize=8)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("top-1 (%)")
        ax.set_title(zoo, fontsize=9)
    return _save(fig, f"vidtempo vs the model zoo — experiment {experiment}", path)


# ---- the curves: ours against the zoo's training log (`vidtempo zoo import-log`) -------------

MARGIN = 2.0  # points of val/top1 behind the zoo's curve that count as falling behind


def zoo_at(points: list[tuple[int, float]], epoch: float) -> float | None:
    """The zoo curve's value at a (fractional) epoch: linear between its validations, None
    outside them."""
    for (e0, v0), (e1, v1) in zip(points, points[1:]):
        if e0 <= epoch <= e1:
            return v0 + (v1 - v0) * (epoch - e0) / (e1 - e0)
    return points[0][1] if points and points[0][0] == epoch else None


def curve_gaps(ours: list[tuple[int, float]], ours_epochs: int, zoo: list[tuple[int, float]],
               zoo_epochs: int, margin: float = MARGIN) -> dict:  # fmt: skip
    """Our val/top1 against the zoo's at each of our validation epochs: at the same epoch when
    the schedules are as long, else at the same fraction of the schedule (epoch × zoo epochs /
    ours). {"points": [(our epoch, zoo epoch, ours, zoo, gap)], "mean_gap", "worst",
    "first_behind": our first epoch more than `margin` behind, or None}."""
    scale = zoo_epochs / ours_epochs if ours_epochs and zoo_epochs else 1.0
    points = []
    for e, v in ours:
        z = zoo_at(zoo, e * scale)
        if z is not None:
            points.append((e, e * scale, v, z, v - z))
    worst = min(points, key=lambda p: p[4], default=None)
    return {"points": points, "scale": scale,
            "mean_gap": sum(p[4] for p in points) / len(points) if points else None,
            "worst": worst, "first_behind": next((p[0] for p in points if p[4] < -margin), None)}  # fmt: skip


def curves(uri: str, experiment: str, rows: list[dict], margin: float = MARGIN) -> list[dict]:
    """For each comparable run whose zoo config has an imported training log in the experiment:
    the gaps along the curve (curve_gaps)."""
    logs = {}
    for run in tracking.runs(uri, experiment):
        t = run["tags"]
        if t.get("vidtempo.kind") == "zoo-log" and t.get("zoo.config") not in logs:
            logs[t["zoo.config"]] = run  # the newest import of each
    out = []
    for r in rows:
        zoo_run = logs.get(r["zoo_config"])
        if not zoo_run or not r["comparable"]:
            continue
        zoo = store.history(uri, zoo_run["run_id"], "val/top1")
        ours = store.history(uri, r["run_id"], "val/top1")
        zoo_epochs = r["zoo_epochs"] or int(zoo_run["metrics"].get("epoch", 0))
        gaps = curve_gaps(ours, r["epochs"], zoo, zoo_epochs, margin)
        out.append({"zoo_config": r["zoo_config"], "run": r["run"], "ours": ours, "zoo": zoo,
                    "zoo_log_run_id": zoo_run["run_id"], "margin": margin, **gaps})  # fmt: skip
    return out


def curves_markdown(found: list[dict]) -> str:
    if not found:
        return ""
    out = ["## Along the training curve (the zoo's own training log)", "",
           "Our val/top1 at each validation epoch against the zoo's log at the same point of "
           "the schedule (epochs scaled when the schedules differ in length).", "",
           "| zoo config | run | validations compared | mean gap | worst gap (our epoch) | "
           "first behind by more than the margin |", "|---|---|---:|---:|---|---|"]  # fmt: skip
    for c in found:
        worst = f"{c['worst'][4]:+.2f} ({c['worst'][0]})" if c["worst"] else "–"
        first = (f"epoch {c['first_behind']} (> {c['margin']:g} points)" if c["first_behind"]
                 else f"never (margin {c['margin']:g})")  # fmt: skip
        mean_gap = "–" if c["mean_gap"] is None else f"{c['mean_gap']:+.2f}"
        out.append(f"| {c['zoo_config']} | {c['run']} | {len(c['points'])} | {mean_gap} | "
                   f"{worst} | {first} |")  # fmt: skip
    return "\n".join([*out, ""])


def curves_chart(found: list[dict], path: str | Path, experiment: str) -> Path:
    """One panel per zoo config: the zoo's val/top1 over its epochs, ours on the same axis (our
    epochs scaled to the zoo's schedule), the first epoch behind marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoos = sorted({c["zoo_config"] for c in found})
    fig, axes = plt.subplots(len(zoos), 1, figsize=(8, 3.2 * len(zoos)), squeeze=False)
    for ax, zoo in zip(axes[:, 0], zoos):
        group = [c for c in found if c["zoo_config"] == zoo]
        ze, zv = zip(*group[0]["zoo"]) if group[0]["zoo"] else ((), ())
        ax.plot(ze, zv, "k-", lw=2, label="zoo (its training log)")
        for c in group:
            xs = [e * c["scale"] for e, _ in c["ours"]]
            line = ax.plot(xs, [v for _, v in c["ours"]], "o-", ms=3, label=c["run"])[0]
            if c["first_behind"]:
                ax.axvline(c["first_behind"] * c["scale"], color=line.get_color(), ls=":", lw=1)
        ax.set_xlabel("epoch of the zoo's schedule")
        ax.set_ylabel("val/top1 (%)")
        ax.set_title(zoo, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, f"val/top1 along the schedule — experiment {experiment}", path)


def _save(fig, title: str, path: str | Path) -> Path:
    """A report figure: its title, laid out, written as a PNG, closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(uri: str, experiments: list[str] | None = None, log: bool = True,
            out_dir: str | Path | None = None, margin: float = MARGIN) -> dict[str, dict]:  # fmt: skip
    """The report for each experiment (all that hold comparable runs when none is named):
    {experiment: {"rows", "markdown", "report_run_id"}}; each is logged as a run of its
    experiment with zoo_compare.md, .png and .json artifacts."""
    names = experiments or tracking.experiments(uri)
    reports = {}
    for exp in names:
        rows = collect(uri, exp)
        if not rows and not experiments:
            continue
        along = curves(uri, exp, rows, margin)
        text = markdown(rows, exp) + ("\n" + curves_markdown(along) if along else "")
        entry = {"rows": rows, "markdown": text, "report_run_id": None, "curves": along}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir) / exp if out_dir else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "zoo_compare.md").write_text(text)
            (folder / "zoo_compare.json").write_text(json.dumps(rows, indent=2))
            chart(rows, folder / "zoo_compare.png", exp)
            files = ["zoo_compare.md", "zoo_compare.png", "zoo_compare.json"]
            if along:
                (folder / "zoo_curves.json").write_text(json.dumps(along, indent=2))
                curves_chart(along, folder / "zoo_curves.png", exp)
                files += ["zoo_curves.json", "zoo_curves.png"]
            if log:
                entry["report_run_id"] = record.report_run(
                    uri, exp, f"zoo-compare-{time.strftime('%Y%m%d-%H%M%S')}",
                    {"vidtempo.kind": REPORT_KIND}, files=[folder / f for f in files])  # fmt: skip
        reports[exp] = entry
    return reports
