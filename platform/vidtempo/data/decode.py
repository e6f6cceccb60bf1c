"""Decoding the frames a sampler picked, from JPEG lists or container bytes, to uint8."""

from __future__ import annotations

import io

import numpy as np
import torch
from torchvision.io import decode_jpeg

BACKENDS = ("decord", "pyav")


def decode_jpegs(frames: list[bytes], indices: np.ndarray) -> torch.Tensor:
    """(F, 3, H, W) uint8 from one JPEG per frame; indices are 0-based positions in the list."""
    data = [torch.frombuffer(bytearray(frames[int(i)]), dtype=torch.uint8) for i in indices]
    return torch.stack(decode_jpeg(data))


def decode_video(data: bytes, indices: np.ndarray, backend: str = "decord") -> torch.Tensor:
    """(F, 3, H, W) uint8 at the given 0-based frame indices of container bytes. decord falls
    back to PyAV on the streams it cannot read (e.g. decord 0.6.0 fails on some small widths)."""
    if backend == "decord":
        import decord

        try:
            vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
            arr = vr.get_batch([int(i) for i in indices]).asnumpy()  # (F, H, W, 3)
        except decord.DECORDError:
            arr = _decode_pyav(data, indices)
    elif backend == "pyav":
        arr = _decode_pyav(data, indices)
    else:
        raise ValueError(f"decoder backend must be one of {BACKENDS}, got {backend!r}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _decode_pyav(data: bytes, indices: np.ndarray) -> np.ndarray:
    import av

    wanted = sorted(set(int(i) for i in indices))
    last = wanted[-1]
    frames = {}
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in frames or i not in wanted:
                if i > last:
                    break
                continue
            frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise ValueError(f"the video has fewer frames than index {missing[0]}")
    return np.stack([frames[int(i)] for i in indices])
