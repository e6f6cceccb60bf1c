"""Shard rows → model inputs: sample → decode → augment, for one pipeline (train/val/test).

Pure code (no Ray): pipeline.py runs it inside Ray Data `map_batches`, the DataLoader baseline
of `vidtempo bench data` runs it in a torch Dataset. Randomness is drawn per row from
(seed, epoch, video_id), so every epoch differs and a seed reproduces a run. A row that cannot
be decoded comes out with ok = False, zero frames and the reason in `error`, so that the
consumer counts and skips it.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from vidtempo.config import DataConfig, PipelineConfig
from vidtempo.data.augment import apply_pipeline
from vidtempo.data.decode import decode_jpegs, decode_video
from vidtempo.data.sampling import frames_per_clip, output_shape, sample_indices


def row_rng(seed: int, epoch: int, video_id: str, rep: int = 0) -> np.random.Generator:
    """The randomness of one video in one epoch (and pass over the data, when an epoch repeats
    a small dataset)."""
    key = [seed, epoch, zlib.crc32(video_id.encode())]
    return np.random.default_rng(key if rep == 0 else [*key, rep])


class VideoTransform:
    def __init__(self, pipe: PipelineConfig, data: DataConfig, storage: str, seed: int = 0,
                 epoch: int = 0, backend: str = "decord"):  # fmt: skip
        self.pipe = pipe
        self.data = data
        self.storage = storage
        self.seed = seed
        self.epoch = epoch
        self.backend = backend
        self.frames_per_clip = frames_per_clip(pipe)
        self.shape = output_shape(pipe, self.frames_per_clip)
        # ColorJitter's order is fixed once per pipeline, as MMAction2 fixes it at construction
        self.jitter_order = tuple(np.random.default_rng(seed).permutation(4).tolist())

    def one(self, row: dict, epoch: int | None = None, rep: int = 0) -> tuple[torch.Tensor, int]:
        rng = row_rng(self.seed, self.epoch if epoch is None else epoch, row["video_id"], rep)
        inds = sample_indices(int(row["num_frames"]), self.pipe.sampler, rng)  # (clips, L)
        flat = inds.reshape(-1)
        if self.storage == "frames":
            frames = decode_jpegs(row["frames"], flat)
        else:
            frames = decode_video(row["video"], flat, self.backend)
        return apply_pipeline(frames, inds.shape[0], self.pipe, int(row["label"]), rng,
                              self.data.flip_label_map, self.jitter_order)  # fmt: skip

    def __call__(self, batch: dict) -> dict:
        n = len(batch["video_id"])
        inputs = np.zeros((n, *self.shape), dtype=np.uint8)
        labels = np.asarray(batch["label"], dtype=np.int64).copy()
        ok = np.ones(n, dtype=bool)
        errors = [""] * n
        payload = batch["frames"] if self.storage == "frames" else batch["video"]
        epochs = batch.get("epoch")  # one dataset may stream several epochs (pipeline.py)
        passes = batch.get("pass")  # … and pass several times over the data in each
        for i in range(n):
            row = {"video_id": str(batch["video_id"][i]), "num_frames": batch["num_frames"][i],
                   "label": labels[i], self.storage: payload[i]}  # fmt: skip
            try:
                x, labels[i] = self.one(row, None if epochs is None else int(epochs[i]),
                                        0 if passes is None else int(passes[i]))
                inputs[i] = x.numpy()
            except Exception as exc:  # noqa: BLE001 - a bad row is counted downstream, never fatal
                ok[i] = False
                errors[i] = f"{type(exc).__name__}: {exc}"[:300]
        out = {
            "inputs": inputs,
            "label": labels,
            "video_id": np.asarray(batch["video_id"]),
            "ok": ok,
            "error": np.asarray(errors, dtype=object),
        }
        if epochs is not None:
            out["epoch"] = np.asarray(epochs, dtype=np.int64)
        return out
