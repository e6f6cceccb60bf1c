"""The shard contract (docs/data.md): manifest.json + part-NNNNN.parquet, one row per video."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from vidtempo import storage
from vidtempo.config import Config

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.json"

_COMMON = [
    ("video_id", pa.string()),
    ("label", pa.int32()),
    ("num_frames", pa.int32()),
    ("fps", pa.float32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
]
FRAMES_SCHEMA = pa.schema(_COMMON + [("frames", pa.list_(pa.binary()))])  # one JPEG per frame
VIDEO_SCHEMA = pa.schema(_COMMON + [("video", pa.binary())])  # the container bytes


def schema_for(storage: str) -> pa.Schema:
    if storage not in ("frames", "video"):
        raise ValueError(f"storage must be 'frames' or 'video', got {storage!r}")
    return FRAMES_SCHEMA if storage == "frames" else VIDEO_SCHEMA


class DataError(ValueError):
    """A problem with a dataset directory the user can fix."""


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a shard folder: a local path or a URI (s3://, gs://, file://). Every
    dataset factory reads it, so the endpoint is probed only when the read fails, to say why."""
    path = storage.join(data_dir, MANIFEST)
    try:
        raw = storage.read_bytes(path)
    except storage.StorageError:
        storage.check_reachable(data_dir, "data")  # names the data folder and its endpoint
        raise
    if raw is None:
        storage.check_reachable(data_dir, "data")  # a missing bucket says so
        if not storage.exists(data_dir):
            raise DataError(f"data directory {storage.where(data_dir)} does not exist; convert a "
                            "dataset into it with `vidtempo prepare …` (see datasets/README.md)")  # fmt: skip
        raise DataError(f"{data_dir} has no {MANIFEST}: it is not a vidtempo shard directory; "
                        "convert the videos with `vidtempo prepare …` first")  # fmt: skip
    manifest = json.loads(raw)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema version {manifest.get('schema_version')}, this "
                        f"vidtempo reads {SCHEMA_VERSION}: convert the dataset again")  # fmt: skip
    if not manifest.get("shards") or sum(s["rows"] for s in manifest["shards"]) == 0:
        raise DataError(
            f"{data_dir} holds no videos (every input was quarantined or the list was empty)"
        )
    return manifest


def shard_paths(data_dir: str | Path, manifest: dict) -> list[str]:
    """Every non-empty shard, as an absolute path or a URI."""
    root = storage.normalize(data_dir)
    return [storage.join(root, s["file"]) for s in manifest["shards"] if s["rows"]]


# ---- the checks a run makes of its --data before anything starts ----


def check_classes(manifest: dict, cfg: Config, data_dir: str | Path) -> None:
    classes = manifest.get("classes") or []
    if len(classes) != cfg.model.num_classes:
        raise DataError(
            f"{data_dir} holds {len(classes)} classes but {cfg.name} is built for "
            f"model.num_classes={cfg.model.num_classes}; convert the right dataset or override "
            f"it with --set model.num_classes={len(classes)}"
        )


def check_data(cfg: Config, data_dir: str) -> None:
    """train/ and val/ shard folders under `data_dir` (a local path or a URI), readable from
    here, with videos, of the config's classes. A URI whose endpoint does not answer or refuses
    the credentials fails here, before anything starts."""
    storage.check_reachable(data_dir, "data")
    for split in ("train", "val"):
        d = storage.join(data_dir, split)
        if not storage.exists(storage.join(d, MANIFEST)) and not storage.exists(d):
            raise DataError(
                f"{storage.where(data_dir)} has no '{split}' folder: --data must hold train/ and "
                f"val/ shard folders (`vidtempo prepare ... --out {data_dir}` writes them)"
            )
        manifest = read_manifest(d)
        if not manifest.get("num_videos"):
            raise DataError(
                f"{d} holds no videos (all quarantined? see its quarantine report); "
                "convert the dataset again"
            )
        check_classes(manifest, cfg, d)


def check_eval_data(cfg: Config, data_dir: str) -> str:
    """The val shard folder an evaluation scores (`data_dir`/val, or `data_dir` itself when it
    is one), of the config's classes."""
    storage.check_reachable(data_dir, "data")
    d = storage.join(data_dir, "val")
    if not storage.exists(storage.join(d, MANIFEST)) and storage.exists(
        storage.join(data_dir, MANIFEST)
    ):
        d = data_dir  # the val shard folder itself
    check_classes(read_manifest(d), cfg, d)
    return d
