"""`vidtempo prepare …`: the entry points the CLI and the datasets/ scripts call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vidtempo.data import convert as conv
from vidtempo.data import synthetic
from vidtempo.data.schema import MANIFEST


def _classes(opts: conv.Options, jobs: list[dict], classes_file: str | None) -> list[str]:
    if classes_file:
        return conv.read_class_names(classes_file)
    if opts.classes:
        return opts.classes
    top = max((j["label"] for j in jobs), default=-1)
    return [str(i) for i in range(top + 1)]


def prepare_rawframes(list_file, root, opts: conv.Options, classes_file: str | None = None) -> dict:
    jobs = conv.rawframe_jobs(list_file, root, opts)
    opts.storage = "frames"
    opts.classes = _classes(opts, jobs, classes_file)
    source = {
        "kind": "rawframes",
        "list": str(Path(list_file).resolve()),
        "root": str(Path(root).resolve()),
    }
    return conv.convert(jobs, opts, source)


def prepare_videos(list_file, root, opts: conv.Options, classes_file: str | None = None) -> dict:
    if classes_file:
        opts.classes = conv.read_class_names(classes_file)
    jobs, classes = conv.video_jobs(list_file, root, opts)
    opts.classes = classes or _classes(opts, jobs, None)
    source = {
        "kind": "videos",
        "list": str(Path(list_file).resolve()),
        "root": str(Path(root).resolve()),
    }
    return conv.convert(jobs, opts, source)


def synthetic_ready(out, videos_per_class: dict[str, int], frames: int, size: int,
                    seed: int) -> dict[str, bool]:  # fmt: skip
    """Split → whether out/<split> holds the synthetic split these settings make (this
    generator version, every video converted)."""
    current = synthetic.is_current(Path(out) / "raw", frames, size, seed)
    ready = {}
    for split, n in videos_per_class.items():
        path = Path(out) / split / MANIFEST
        made = json.loads(path.read_text()) if path.exists() else {}
        count = made.get("num_videos", 0) + made.get("num_quarantined", 0)
        ready[split] = current and count == n * len(synthetic.CLASSES)
    return ready


def prepare_synthetic(out, videos_per_class: dict[str, int] | None = None, frames: int = 32,
                      size: int = 64, seed: int = 0, workers: int = 2, progress: bool = True) -> dict:  # fmt: skip
    """Generate the synthetic temporal dataset under out/raw and convert each split to out/<split>.
    A split made by another generator version or with other settings is made again."""
    out = Path(out)
    per_class = videos_per_class or {"train": 24, "val": 8}
    for split, ready in synthetic_ready(out, per_class, frames, size, seed).items():
        if not ready:
            shutil.rmtree(out / split, ignore_errors=True)
    lists = synthetic.generate(out / "raw", per_class, frames, size, seed, workers)
    manifests = {}
    for split, list_file in lists.items():
        opts = conv.Options(out=out / split, dataset="synthetic", split=split, storage="video",
                            workers=workers, classes=list(synthetic.CLASSES), progress=progress)  # fmt: skip
        manifests[split] = prepare_videos(list_file, out / "raw" / "videos", opts)
    return manifests
