"""`vidtempo prepare …`: the entry points the CLI and the datasets/ scripts call."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vidtempo import storage
from vidtempo.data import convert as conv
from vidtempo.data import layouts, synthetic
from vidtempo.data.schema import MANIFEST


def _classes(opts: conv.Options, jobs: list[dict], classes_file: str | None) -> list[str]:
    if classes_file:
        return conv.read_class_names(classes_file)
    if opts.classes:
        return opts.classes
    top = max((j["label"] for j in jobs), default=-1)
    if opts.progress:
        print(f"no class-name file (--classes): the {top + 1} classes are named by their "
              "labels 0, 1, …", flush=True)  # fmt: skip
    return [str(i) for i in range(top + 1)]


def _class_file(opts: conv.Options, list_file, classes_file: str | None) -> str | None:
    """--classes, else the dataset's own label file beside the list (data/layouts.py)."""
    if classes_file:
        return classes_file
    found = layouts.class_file(opts.dataset, str(list_file))
    if found and opts.progress:
        print(f"class names: {storage.where(found)} ({opts.dataset}'s label file)", flush=True)
    return found


def _runner(root, ray_address: str | None, decode_resource: str | None):
    """This machine's process pool, or (with `ray_address`: "" for RAY_ADDRESS or a local
    instance) one Ray task per shard."""
    if ray_address is None:
        return conv.local_chunks
    from vidtempo.data.convert_ray import ray_chunks
    from vidtempo.ray_session import ensure_ray

    ensure_ray(ray_address or None)
    return ray_chunks(root, decode_resource)


def prepare_rawframes(list_file, root, opts: conv.Options, classes_file: str | None = None,
                      ray_address: str | None = None, decode_resource: str | None = None) -> dict:  # fmt: skip
    """Frame folders under `root` (a folder or a URI) → shards in opts.out (a folder or a URI)."""
    root = storage.normalize(root)
    storage.check_reachable(root, "inputs")
    known = layouts.layout(opts.dataset)  # the dataset as distributed, unless the options say
    if opts.filename_tmpl is None:
        opts.filename_tmpl = known.filename_tmpl
    if opts.start_index is None:
        opts.start_index = known.start_index
    jobs = conv.rawframe_jobs(list_file, root, opts)
    layouts.check_matches(jobs, root, str(list_file))
    opts.storage = "frames"
    opts.classes = _classes(opts, jobs, _class_file(opts, list_file, classes_file))
    source = {"kind": "rawframes", "list": storage.normalize(list_file), "root": root}
    return conv.convert(jobs, opts, source, _runner(root, ray_address, decode_resource))


def prepare_videos(list_file, root, opts: conv.Options, classes_file: str | None = None,
                   ray_address: str | None = None, decode_resource: str | None = None) -> dict:  # fmt: skip
    """Videos under `root` (a folder or a URI) → shards in opts.out (a folder or a URI)."""
    root = storage.normalize(root)
    storage.check_reachable(root, "inputs")
    classes_file = _class_file(opts, list_file, classes_file)
    if classes_file:
        opts.classes = conv.read_class_names(classes_file)
    jobs, classes = conv.video_jobs(list_file, root, opts)
    layouts.check_matches(jobs, root, str(list_file))
    opts.classes = classes or _classes(opts, jobs, None)
    source = {"kind": "videos", "list": storage.normalize(list_file), "root": root}
    return conv.convert(jobs, opts, source, _runner(root, ray_address, decode_resource))


# The synthetic set's shards hold JPEG frames by default: 8 of a clip's frames decode in
# ~0.35 ms, against ~3.3 ms to decode the same clip from H.264 (and on 2 cores decoding runs
# beside training, which made it cost twice that; BENCHMARKS.md, "The demo's time"). A frame's
# JPEG depends on that frame alone, so a clip and its reverse hold the same frames, as the
# temporal-order pairs require. `storage="video"` keeps the lossless H.264 of the generator.
SYNTHETIC_STORAGE = "frames"


def synthetic_ready(out, videos_per_class: dict[str, int], frames: int, size: int,
                    seed: int, raw: str | Path | None = None,
                    storage_kind: str = SYNTHETIC_STORAGE,
                    classes: int = len(synthetic.CLASSES)) -> dict[str, bool]:  # fmt: skip
    """Split → whether out/<split> holds the synthetic split these settings make (this
    generator version and class set, this storage, every video converted)."""
    current = synthetic.is_current(raw or raw_dir(out, frames, size, seed), frames, size, seed,
                                   classes)  # fmt: skip
    ready = {}
    for split, n in videos_per_class.items():
        data = storage.read_bytes(storage.join(out, split, MANIFEST))
        made = json.loads(data) if data else {}
        count = made.get("num_videos", 0) + made.get("num_quarantined", 0)
        same = made.get("storage") == storage_kind
        ready[split] = current and same and count == n * classes
    return ready


def raw_dir(out, frames: int, size: int, seed: int) -> Path:
    """Where the synthetic videos are rendered: out/raw for a local `out`; for a URI, a folder
    of this machine's cache (they are then uploaded to out/raw, beside the shards)."""
    if not storage.is_uri(out):
        return Path(storage.normalize(out)) / "raw"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "vidtempo" / "synthetic-raw" / f"{frames}f-{size}px-seed{seed}"


def upload(folder: Path, to: str) -> str:
    """Copy a local folder's files to a URI prefix (a file already there with the same size
    is skipped)."""
    for sub in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        rel = sub.relative_to(folder).as_posix()
        there = storage.join(to, rel) if rel != "." else to
        have = storage.listing(there)
        for p in sorted(sub.iterdir()):
            if p.is_file() and have.get(p.name) != p.stat().st_size:
                storage.write_bytes(storage.join(there, p.name), p.read_bytes())
    return to


def prepare_synthetic(out, videos_per_class: dict[str, int] | None = None, frames: int = 32,
                      size: int = 64, seed: int = 0, workers: int = 2, progress: bool = True,
                      ray_address: str | None = None, decode_resource: str | None = None,
                      videos_per_shard: int = 64, storage_kind: str = SYNTHETIC_STORAGE,
                      classes: int = len(synthetic.CLASSES),
                      node_wait_minutes: float = conv.Options.node_wait_minutes) -> dict:  # fmt: skip
    """Generate the synthetic temporal dataset and convert each split to out/<split> (a folder
    or a URI), as JPEG frames or (storage_kind="video") the generator's lossless H.264. A
    split made by another generator version or with other settings is made again. `classes`:
    12 (the demo's set) or 16 (with the tempo classes, vidtempo.data.synthetic)."""
    out = storage.normalize(out)
    per_class = videos_per_class or {"train": 24, "val": 8}
    raw = raw_dir(out, frames, size, seed)
    made = synthetic_ready(out, per_class, frames, size, seed, raw, storage_kind, classes)
    for split, ready in made.items():
        if not ready:
            storage.delete_tree(storage.join(out, split))
    lists = synthetic.generate(raw, per_class, frames, size, seed, workers, classes)
    videos = str(raw / "videos")
    if storage.is_uri(out):  # where every node of a cluster reads them
        videos = upload(raw / "videos", storage.join(out, "raw", "videos"))
    manifests = {}
    for split, list_file in lists.items():
        opts = conv.Options(out=storage.join(out, split), dataset="synthetic", split=split,
                            storage=storage_kind, workers=workers,
                            classes=synthetic.ALL_CLASSES[:classes],
                            progress=progress, videos_per_shard=videos_per_shard,
                            node_wait_minutes=node_wait_minutes)  # fmt: skip
        manifests[split] = prepare_videos(list_file, videos, opts, ray_address=ray_address,
                                          decode_resource=decode_resource)  # fmt: skip
    return manifests
