"""`vidtempo prepare …`: the entry points the CLI and the datasets/ scripts call."""

from __future__ import annotations

from pathlib import Path

from vidtempo.data import convert as conv
from vidtempo.data import synthetic


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


def prepare_synthetic(out, videos_per_class: dict[str, int] | None = None, frames: int = 32,
                      size: int = 64, seed: int = 0, workers: int = 2, progress: bool = True) -> dict:  # fmt: skip
    """Generate the synthetic temporal dataset under out/raw and convert each split to out/<split>."""
    out = Path(out)
    lists = synthetic.generate(out / "raw", videos_per_class, frames, size, seed)
    manifests = {}
    for split, list_file in lists.items():
        opts = conv.Options(out=out / split, dataset="synthetic", split=split, storage="video",
                            workers=workers, classes=list(synthetic.CLASSES), progress=progress)  # fmt: skip
        manifests[split] = prepare_videos(list_file, out / "raw" / "videos", opts)
    return manifests
