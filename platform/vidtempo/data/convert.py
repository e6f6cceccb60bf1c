"""The converter behind `vidtempo prepare`: annotation list → validated Parquet shards.

Each input is decoded once, in a worker process with a timeout (a native decoder that hangs is
killed and the input quarantined), in parallel. Inputs are cut into chunks of `videos_per_shard`
in list order; chunk k becomes part-k.parquet, written whole or not at all, so a re-run skips
the shards that exist. Every input that fails lands in quarantine.json with its reason. Inputs
and output may be local folders or URIs (vidtempo.storage).
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from vidtempo import storage
from vidtempo.config import RunConfig
from vidtempo.data import convert_worker
from vidtempo.data.layouts import parse_class_names
from vidtempo.data.schema import MANIFEST, QUARANTINE, SCHEMA_VERSION, DataError, schema_for

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


@dataclass
class Options:
    out: Path
    dataset: str
    split: str
    storage: str = "video"  # "video" (container bytes) or "frames" (one JPEG per frame)
    short_side: int | None = None
    keyint: int | None = None
    videos_per_shard: int = 64
    workers: int = max(1, (os.cpu_count() or 2))
    timeout: float = 120.0
    # rawframes: None takes the dataset's layout as distributed (data/layouts.py)
    filename_tmpl: str | None = None
    start_index: int | None = None
    classes: list[str] = field(default_factory=list)
    progress: bool = True
    # with --ray on an autoscaling cluster: how long to wait for a node the tasks can run on
    node_wait_minutes: float = RunConfig.node_wait_minutes
    # the videos' order in the shards: a permutation of the list seeded by this (lists are
    # often grouped by class, and training reads whole row groups of neighbouring videos);
    # None keeps the list's order
    order_seed: int | None = 0


# ----------------------------------------------------------------------------------------------
# annotation lists


def read_text(location: str | Path) -> str:
    """A list or class file: a local path or a URI."""
    data = storage.read_bytes(location)
    if data is None:
        raise FileNotFoundError(f"{storage.where(location)} does not exist")
    return data.decode()


def read_class_names(path: str | Path) -> list[str]:
    """Class names in label order: one per line, `index name` lines or a JSON name → index."""
    return parse_class_names(read_text(path), storage.where(path))


def rawframe_jobs(list_file: str | Path, root: str | Path, opts: Options) -> list[dict]:
    """MMAction2 rawframes list: `frame_dir num_frames label` per line."""
    jobs = []
    for n, line in enumerate(read_text(list_file).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3:
            raise DataError(f"{list_file}:{n}: expected 'frame_dir num_frames label', got {line!r}")
        jobs.append({
            "kind": "rawframes", "dir": storage.join(root, parts[0]), "video_id": parts[0],
            "expected_frames": int(parts[1]), "label": int(parts[2]),
            "filename_tmpl": opts.filename_tmpl, "start_index": opts.start_index,
            "short_side": opts.short_side, "storage": "frames",
        })  # fmt: skip
    return jobs


class _Finder:
    """A video's file from its stem, with any of VIDEO_EXTENSIONS: each folder (local or in a
    bucket) is listed once, not probed once per video and extension."""

    def __init__(self):
        self.listed: dict[str, set[str]] = {}

    def __call__(self, folder: str, stem: str) -> str:
        if stem.endswith(VIDEO_EXTENSIONS):
            return storage.join(folder, stem)
        if "/" in stem:  # a list entry with sub-folders
            sub, stem = stem.rsplit("/", 1)
            folder = storage.join(folder, sub)
        if folder not in self.listed:
            self.listed[folder] = set(storage.listdir(folder))
        names = self.listed[folder]
        ext = next((e for e in VIDEO_EXTENSIONS if f"{stem}{e}" in names), ".mp4")
        return storage.join(folder, f"{stem}{ext}")


def video_jobs(
    list_file: str | Path, root: str | Path, opts: Options
) -> tuple[list[dict], list[str]]:
    """Video lists: `path label` lines; `video_id,num_frames,label` lines (the Kinetics-400 val
    list); or the Kinetics CSV with a header `label,youtube_id,time_start,time_end,…` (class
    names: sorted, unless Options.classes gives them). Returns the jobs and the class names."""
    root = str(root)
    find = _Finder()
    lines = [ln for ln in read_text(list_file).splitlines() if ln.strip()]
    rows: list[tuple[str, str, int | None, int]] = []  # path, video_id, frames, label
    classes = list(opts.classes)
    if lines and lines[0].replace(" ", "").startswith("label,youtube_id"):
        records = list(csv.DictReader(lines))
        if not classes:
            classes = sorted({r["label"] for r in records})
        index = {c: i for i, c in enumerate(classes)}
        for r in records:
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            if r["label"] not in index:
                raise DataError(f"{list_file}: class {r['label']!r} is not in the class list")
            rows.append((find(storage.join(root, r["label"]), stem), stem, None, index[r["label"]]))
    else:
        for n, line in enumerate(lines, 1):
            parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
            try:
                if len(parts) == 3:
                    rows.append((find(root, parts[0]), parts[0], int(parts[1]), int(parts[2])))
                elif len(parts) == 2:
                    rows.append((storage.join(root, parts[0]), Path(parts[0]).stem, None,
                                 int(parts[1])))  # fmt: skip
                else:
                    raise ValueError
            except ValueError:
                raise DataError(
                    f"{list_file}:{n}: expected 'path label' or 'video_id,num_frames,label', got {line!r}"
                ) from None
    jobs = [
        {"kind": "video", "path": p, "video_id": vid, "expected_frames": frames, "label": label,
         "storage": opts.storage, "short_side": opts.short_side, "keyint": opts.keyint}
        for p, vid, frames, label in rows
    ]  # fmt: skip
    return jobs, classes


# ----------------------------------------------------------------------------------------------
# worker processes with timeouts


class _Pool:
    """N spawned worker processes; a job that outlives `timeout` gets its worker killed."""

    def __init__(self, workers: int, timeout: float):
        self.ctx = mp.get_context("spawn")
        self.timeout = timeout
        self.size = workers
        self.workers: list[tuple] = []  # (process, conn)

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=convert_worker.worker_loop, args=(child,), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, jobs: list[dict], on_done) -> None:
        """Call on_done(index, status, payload) for every job; status is ok | bad | timeout."""
        todo = list(enumerate(jobs))[::-1]
        busy: dict = {}  # conn -> (proc, index, deadline)
        idle = [w for w in self.workers]
        self.workers = []
        while len(idle) + len(busy) < min(self.size, len(jobs)):
            idle.append(self._spawn())
        while todo or busy:
            while todo and idle:
                proc, conn = idle.pop()
                index, job = todo.pop()
                conn.send(job)
                busy[conn] = (proc, index, time.monotonic() + self.timeout)
            ready = wait(list(busy), timeout=0.5)
            for conn in ready:
                proc, index, _ = busy.pop(conn)
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError):  # the worker died (a native crash)
                    status, payload = (
                        "bad",
                        f"unreadable: the decoder crashed (exit code {proc.exitcode})",
                    )
                    proc.join(timeout=1)
                    proc, conn = self._spawn()
                on_done(index, status, payload)
                idle.append((proc, conn))
            now = time.monotonic()
            for conn in [c for c, (_, _, deadline) in busy.items() if deadline < now]:
                proc, index, _ = busy.pop(conn)
                proc.kill()
                proc.join()
                on_done(index, "timeout", f"decode timeout: no result after {self.timeout:g} s")
                idle.append(self._spawn())
        self.workers = idle

    def close(self) -> None:
        for proc, conn in self.workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self.workers = []


# ----------------------------------------------------------------------------------------------
# shards


ROW_GROUP = 8  # videos per Parquet row group: video rows are large binaries


def write_shard(rows: list[dict], location: str, kind: str) -> dict:
    """One shard, whole or not at all (vidtempo.storage.open_output); its manifest entry."""
    table = pa.Table.from_pylist(rows, schema=schema_for(kind))
    with storage.open_output(location) as f:
        # small row groups keep reads and memory bounded
        pq.write_table(table, f, row_group_size=ROW_GROUP,
                       compression="none" if kind == "video" else "snappy")  # fmt: skip
        size = f.tell()
    groups = [min(ROW_GROUP, len(rows) - i) for i in range(0, len(rows), ROW_GROUP)]
    return {"file": storage.name(location), "rows": len(rows), "bytes": size, "row_groups": groups}


def convert_chunk(chunk: list[dict], location: str, kind: str, pool: _Pool,
                  on_video=None) -> tuple[dict, list[dict]]:  # fmt: skip
    """Decode and validate one shard's inputs with `pool`, write the shard; returns its manifest
    entry and the quarantined inputs (in list order). An empty chunk makes an empty shard."""
    rows: list[dict | None] = [None] * len(chunk)
    bad: list[tuple[int, dict]] = []

    def done(i, status, payload):
        if status == "ok":
            rows[i] = payload
        else:
            job = chunk[i]
            bad.append((i, {"input": job.get("path") or job.get("dir"),
                            "video_id": job["video_id"], "reason": payload}))  # fmt: skip
        if on_video:
            on_video()

    pool.run(chunk, done)
    entry = write_shard([r for r in rows if r is not None], location, kind)
    return entry, [b for _, b in sorted(bad, key=lambda b: b[0])]


def local_chunks(todo: list[tuple[str, list[dict]]], opts: Options, out: str, bar):
    """Shards one after another on this machine, each decoded by `opts.workers` processes:
    yields (shard name, manifest entry, quarantined) as each is written."""
    pool = _Pool(opts.workers, opts.timeout)
    try:
        for name, chunk in todo:
            entry, bad = convert_chunk(chunk, storage.join(out, name), opts.storage, pool,
                                       on_video=lambda: bar.update(1))  # fmt: skip
            yield name, entry, bad
    finally:
        pool.close()


def in_order(jobs: list[dict], seed: int | None) -> list[dict]:
    """The inputs in the order the shards hold them: a permutation seeded by `seed` (the same
    on every machine and re-run), or the list's order with None."""
    if seed is None:
        return list(jobs)
    return [jobs[i] for i in np.random.default_rng(seed).permutation(len(jobs))]


def convert(jobs: list[dict], opts: Options, source: dict, run_chunks=local_chunks) -> dict:
    """Convert `jobs` into opts.out (a local folder or a URI); returns the manifest.

    Inputs are put in a seeded random order (opts.order_seed; the manifest's "order" says which)
    and cut into shards of `videos_per_shard`. `.progress.json` records
    each shard once it is completely written, so a re-run after a crash skips those and redoes
    the rest; manifest.json and quarantine.json are written when every shard is.
    `run_chunks(todo, opts, out, bar)` converts the shards still to do (this machine's process
    pool, or Ray tasks across a cluster: vidtempo.data.convert_ray)."""
    out = storage.normalize(opts.out)
    storage.check_reachable(out, "output")
    state_path = storage.join(out, ".progress.json")
    state = json.loads(storage.read_bytes(state_path) or b'{"shards": {}, "quarantined": {}}')
    order = {"kind": "list"} if opts.order_seed is None else {"kind": "shuffled",
                                                              "seed": opts.order_seed}  # fmt: skip
    if state.get("order", {"kind": "list"}) != order:
        # shards written in another order hold other videos: none of them is this run's
        state = {"shards": {}, "quarantined": {}}
    state["order"] = order
    jobs = in_order(jobs, opts.order_seed)
    chunks = [
        jobs[i : i + opts.videos_per_shard] for i in range(0, len(jobs), opts.videos_per_shard)
    ]
    names = [f"part-{k:05d}.parquet" for k in range(len(chunks))]
    quarantined = state.setdefault("quarantined", {})
    bar = tqdm(total=len(jobs), unit="video", desc=f"prepare {opts.dataset}/{opts.split}",
               disable=not opts.progress, smoothing=0.1)  # fmt: skip
    todo = []
    for name, chunk in zip(names, chunks):
        if name in state["shards"] and storage.exists(storage.join(out, name)):
            bar.update(len(chunk))  # finished in an earlier run
        else:
            todo.append((name, chunk))
    try:
        for name, entry, bad in run_chunks(todo, opts, out, bar):
            state["shards"][name] = entry
            quarantined[name] = bad
            storage.write_bytes(state_path, json.dumps(state).encode())
    finally:
        bar.close()
    # an earlier run's extra shards (a longer list, other options) are not this dataset's
    shards = [state["shards"][n] for n in names]
    quarantine = [q for n in names for q in quarantined.get(n, [])]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "dataset": opts.dataset,
        "split": opts.split,
        "classes": list(opts.classes),
        "storage": opts.storage,
        "num_videos": sum(s["rows"] for s in shards),
        "num_quarantined": len(quarantine),
        "shards": shards,
        "order": order,
        "source": source,
        "options": {"short_side": opts.short_side, "keyint": opts.keyint,
                    "videos_per_shard": opts.videos_per_shard, "timeout": opts.timeout,
                    "filename_tmpl": opts.filename_tmpl, "start_index": opts.start_index},
    }  # fmt: skip
    storage.write_bytes(storage.join(out, QUARANTINE), json.dumps(quarantine, indent=1).encode())
    storage.write_bytes(storage.join(out, MANIFEST), json.dumps(manifest, indent=1).encode())
    return manifest
