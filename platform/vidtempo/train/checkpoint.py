"""Checkpoint contents, the best-K model files and the run's progress marker.

A Ray Train checkpoint (one per epoch, the last `run.keep_last` kept by Ray) holds
    state.pt        model, optimizer, epoch, global iteration, MLflow run id, config (rank 0)
    rng_rank{r}.pt  every worker's torch / numpy / python RNG state
The lr schedule is a pure function of the global iteration, so the iteration is its state.

Beside Ray's checkpoints, under the run directory:
    best/epoch_NNNN.pt  model weights of the best `run.keep_best` epochs by `eval.metric`
    best/index.json     their metric values
    progress.json       epochs finished and the MLflow run id (the dataset factories read it
                        to start streaming at the first unfinished epoch)
Paths may be local or URIs (s3://, gs://): files go through vidtempo.storage.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch

from vidtempo.storage import delete, is_dir, join, normalize, read_bytes, where, write_bytes

# ---- Ray checkpoint directories -------------------------------------------------------------


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(directory: str | Path, rank: int, state: dict | None) -> None:
    """Write this worker's part of a checkpoint into a local directory."""
    directory = Path(directory)
    torch.save(rng_state(), directory / f"rng_rank{rank}.pt")
    if state is not None:
        torch.save(state, directory / "state.pt")


def load_state(directory: str | Path, rank: int) -> tuple[dict, dict | None]:
    """(state.pt, this worker's RNG state or None when the worker count changed) of a
    checkpoint directory: a local one or a URI."""
    state = torch.load(io.BytesIO(read_bytes(join(directory, "state.pt"))), map_location="cpu",
                       weights_only=False)  # fmt: skip
    rng = read_bytes(join(directory, f"rng_rank{rank}.pt"))
    return state, torch.load(io.BytesIO(rng), weights_only=False) if rng is not None else None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a Ray checkpoint directory, a best/*.pt file or an imported
    checkpoint (`vidtempo import-checkpoint`); a local path or a URI (s3://…)."""
    path = normalize(path)
    if is_dir(path):
        path = join(path, "state.pt")
    data = read_bytes(path)
    if data is None:
        raise FileNotFoundError(
            f"no checkpoint at {where(path)}: pass a checkpoint directory "
            "(runs/<name>/checkpoint_*), a best/epoch_*.pt file or a file written by "
            "`vidtempo import-checkpoint`"
        )
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj:
            return obj[key]
    raise ValueError(f"{path} holds no model weights (no 'model' or 'state_dict' entry)")


# ---- the run directory ----------------------------------------------------------------------


def read_progress(run_dir: str) -> dict:
    data = read_bytes(join(run_dir, "progress.json"))
    return json.loads(data) if data else {"epochs_done": 0}


def restored_epochs(run_dir: str) -> int:
    """Epochs done in the checkpoint Ray Train restores from: the latest one its checkpoint
    manager registered (checkpoint_manager_snapshot.json). progress.json can be one epoch ahead
    of it — when a node dies while the workers report, rank 0 may have written the epoch's
    checkpoint and progress that Ray never registered."""
    data = read_bytes(join(run_dir, "checkpoint_manager_snapshot.json"))
    latest = (json.loads(data).get("latest_checkpoint_result") or {}) if data else {}
    return int((latest.get("metrics") or {}).get("epoch", 0))


def write_progress(run_dir: str, **progress) -> None:
    write_bytes(join(run_dir, "progress.json"), json.dumps(progress, indent=2).encode())


class BestK:
    """Keep the model weights of the best k epochs by one metric."""

    def __init__(self, run_dir: str, k: int, metric: str, mode: str = "max"):
        self.root = join(run_dir, "best")
        self.k, self.metric, self.mode = k, metric, mode
        data = read_bytes(join(self.root, "index.json"))
        self.entries: list[dict] = json.loads(data)["entries"] if data else []

    def _key(self, entry: dict) -> float:
        return entry["value"] if self.mode == "max" else -entry["value"]

    def offer(self, epoch: int, value: float, weights: dict, extra: dict) -> bool:
        """Save `weights` if this epoch is among the best k; returns whether it was kept."""
        if self.k <= 0 or value != value:  # NaN never ranks
            return False
        entries = [e for e in self.entries if e["epoch"] != epoch]
        candidate = {"epoch": epoch, "value": value, "file": f"epoch_{epoch:04d}.pt"}
        ranked = sorted([*entries, candidate], key=self._key, reverse=True)
        keep, drop = ranked[: self.k], ranked[self.k :]
        if candidate not in keep:
            return False
        buf = io.BytesIO()
        torch.save({"model": weights, "epoch": epoch, self.metric: value, **extra}, buf)
        write_bytes(join(self.root, candidate["file"]), buf.getvalue())
        for e in drop:
            delete(join(self.root, e["file"]))
        self.entries = keep
        index = {"metric": self.metric, "mode": self.mode, "entries": keep}
        write_bytes(join(self.root, "index.json"), json.dumps(index, indent=2).encode())
        return True
