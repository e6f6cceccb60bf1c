"""The converter behind `vidtempo prepare`: annotation list → validated Parquet shards.

Each input is decoded once, in a worker process with a timeout (a native decoder that hangs is
killed and the input quarantined), in parallel. Inputs are cut into chunks of `videos_per_shard`
in list order; chunk k becomes part-k.parquet, written atomically, so a re-run skips the shards
that exist. Every input that fails lands in quarantine.json with its reason.
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

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from vidtempo.data import convert_worker
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
    filename_tmpl: str = "img_{:05}.jpg"
    start_index: int = 1
    classes: list[str] = field(default_factory=list)
    progress: bool = True


# ----------------------------------------------------------------------------------------------
# annotation lists


def read_class_names(path: str | Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def rawframe_jobs(list_file: str | Path, root: str | Path, opts: Options) -> list[dict]:
    """MMAction2 rawframes list: `frame_dir num_frames label` per line."""
    jobs = []
    for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3:
            raise DataError(f"{list_file}:{n}: expected 'frame_dir num_frames label', got {line!r}")
        jobs.append({
            "kind": "rawframes", "dir": str(Path(root) / parts[0]), "video_id": parts[0],
            "expected_frames": int(parts[1]), "label": int(parts[2]),
            "filename_tmpl": opts.filename_tmpl, "start_index": opts.start_index,
            "short_side": opts.short_side, "storage": "frames",
        })  # fmt: skip
    return jobs


def _find_video(root: Path, stem: str) -> Path:
    p = root / stem
    if p.suffix in VIDEO_EXTENSIONS:
        return p
    for ext in VIDEO_EXTENSIONS:
        if (root / f"{stem}{ext}").exists():
            return root / f"{stem}{ext}"
    return root / f"{stem}.mp4"


def video_jobs(
    list_file: str | Path, root: str | Path, opts: Options
) -> tuple[list[dict], list[str]]:
    """Video lists: `path label` lines; `video_id,num_frames,label` lines (the Kinetics-400 val
    list); or the Kinetics CSV with a header `label,youtube_id,time_start,time_end,…` (class
    names: sorted, unless Options.classes gives them). Returns the jobs and the class names."""
    root = Path(root)
    text = Path(list_file).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows: list[tuple[Path, str, int | None, int]] = []  # path, video_id, frames, label
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
            rows.append((_find_video(root / r["label"], stem), stem, None, index[r["label"]]))
    else:
        for n, line in enumerate(lines, 1):
            parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
            try:
                if len(parts) == 3:
                    rows.append(
                        (_find_video(root, parts[0]), parts[0], int(parts[1]), int(parts[2]))
                    )
                elif len(parts) == 2:
                    rows.append((root / parts[0], Path(parts[0]).stem, None, int(parts[1])))
                else:
                    raise ValueError
            except ValueError:
                raise DataError(
                    f"{list_file}:{n}: expected 'path label' or 'video_id,num_frames,label', got {line!r}"
                ) from None
    jobs = [
        {"kind": "video", "path": str(p), "video_id": vid, "expected_frames": frames, "label": label,
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


def _write_shard(rows: list[dict], path: Path, storage: str) -> int:
    table = pa.Table.from_pylist(rows, schema=schema_for(storage))
    tmp = path.with_suffix(".parquet.tmp")
    # video rows are large binaries: small row groups keep reads and memory bounded
    pq.write_table(
        table, tmp, row_group_size=8, compression="none" if storage == "video" else "snappy"
    )
    os.replace(tmp, path)
    return path.stat().st_size


def convert(jobs: list[dict], opts: Options, source: dict) -> dict:
    """Convert `jobs` into opts.out; returns the manifest."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / ".progress.json"
    state = (
        json.loads(state_path.read_text())
        if state_path.exists()
        else {"shards": {}, "quarantine": []}
    )
    chunks = [
        jobs[i : i + opts.videos_per_shard] for i in range(0, len(jobs), opts.videos_per_shard)
    ]
    quarantine = [q for q in state["quarantine"]]
    pool = _Pool(opts.workers, opts.timeout)
    bar = tqdm(total=len(jobs), unit="video", desc=f"prepare {opts.dataset}/{opts.split}",
               disable=not opts.progress, smoothing=0.1)  # fmt: skip
    try:
        for k, chunk in enumerate(chunks):
            name = f"part-{k:05d}.parquet"
            if name in state["shards"] and (out / name).exists():
                bar.update(len(chunk))  # finished in an earlier run
                continue
            rows: list[dict | None] = [None] * len(chunk)
            bad = []

            def done(i, status, payload, rows=rows, bad=bad, chunk=chunk):
                if status == "ok":
                    rows[i] = payload
                else:
                    job = chunk[i]
                    bad.append({"input": job.get("path") or job.get("dir"), "video_id": job["video_id"],
                                "reason": payload})  # fmt: skip
                bar.update(1)

            pool.run(chunk, done)
            good = [r for r in rows if r is not None]
            size = _write_shard(good, out / name, opts.storage)  # an empty chunk: an empty file
            state["shards"][name] = {"file": name, "rows": len(good), "bytes": size}
            quarantine.extend(bad)
            state["quarantine"] = quarantine
            state_path.write_text(json.dumps(state))
    finally:
        bar.close()
        pool.close()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "dataset": opts.dataset,
        "split": opts.split,
        "classes": list(opts.classes),
        "storage": opts.storage,
        "num_videos": sum(s["rows"] for s in state["shards"].values()),
        "num_quarantined": len(quarantine),
        "shards": [state["shards"][k] for k in sorted(state["shards"])],
        "source": source,
        "options": {"short_side": opts.short_side, "keyint": opts.keyint,
                    "videos_per_shard": opts.videos_per_shard, "timeout": opts.timeout,
                    "filename_tmpl": opts.filename_tmpl, "start_index": opts.start_index},
    }  # fmt: skip
    (out / QUARANTINE).write_text(json.dumps(quarantine, indent=1))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
