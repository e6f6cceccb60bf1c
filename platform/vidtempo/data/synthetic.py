"""A synthetic temporal dataset: short mp4 clips whose paired classes differ only in the order
of their frames, plus a few classes that differ in appearance.

Each pair is made by rendering one motion and, for the second class, playing an independently
drawn clip of the same motion backwards: the two classes have exactly the same distribution of
frames, so a model that averages per-frame features (TSN) sits at chance on every pair, while a
temporal model (TSM, TIN, TANet, TPN) can tell them apart.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

CLASSES = [
    "square moving left to right",
    "square moving right to left",  # = class 0 played backwards
    "disc approaching",
    "disc receding",  # = class 2 played backwards
    "bar rotating clockwise",
    "bar rotating anticlockwise",  # = class 4 played backwards
    "still square",
    "still disc",
]
TEMPORAL_PAIRS = [(0, 1), (2, 3), (4, 5)]


def _canvas(rng, frames, size):
    base = rng.uniform(40, 120)
    noise = rng.normal(0, 6, size=(frames, size, size, 1))
    return np.clip(base + noise, 0, 255).repeat(3, axis=3)


def _square(img, cx, cy, half, color):
    size = img.shape[0]
    x0, x1 = int(max(0, cx - half)), int(min(size, cx + half))
    y0, y1 = int(max(0, cy - half)), int(min(size, cy + half))
    img[y0:y1, x0:x1] = color


def _disc(img, cx, cy, r, color):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color


def _bar(img, cx, cy, angle, length, width, color):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    img[(np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)] = color


def render(label: int, rng: np.random.Generator, frames: int = 32, size: int = 64) -> np.ndarray:
    """(frames, size, size, 3) uint8 for one clip of class `label`."""
    forward = {1: 0, 3: 2, 5: 4}.get(label, label)
    video = _canvas(rng, frames, size)
    color = rng.uniform(150, 255, size=3) * rng.permutation([1.0, 0.6, 0.3])
    t = np.linspace(0, 1, frames)
    if forward == 0:
        half = rng.uniform(0.08, 0.14) * size
        y = rng.uniform(0.3, 0.7) * size
        x0, x1 = 0.15 * size, 0.85 * size
        for i in range(frames):
            _square(video[i], x0 + (x1 - x0) * t[i], y, half, color)
    elif forward == 2:
        cx, cy = rng.uniform(0.4, 0.6, size=2) * size
        r0, r1 = 0.06 * size, rng.uniform(0.3, 0.4) * size
        for i in range(frames):
            _disc(video[i], cx, cy, r0 + (r1 - r0) * t[i], color)
    elif forward == 4:
        start = rng.uniform(0, np.pi)
        sweep = rng.uniform(0.8, 1.2) * np.pi  # image y points down: + angle turns clockwise
        for i in range(frames):
            _bar(video[i], size / 2, size / 2, start + sweep * t[i], 0.7 * size, 0.12 * size, color)
    else:
        cx, cy = rng.uniform(0.35, 0.65, size=2) * size
        extent = rng.uniform(0.15, 0.25) * size
        for i in range(frames):
            jx, jy = rng.normal(0, 0.5, size=2)
            if forward == 6:
                _square(video[i], cx + jx, cy + jy, extent, color)
            else:
                _disc(video[i], cx + jx, cy + jy, extent, color)
    if forward != label:
        video = video[::-1]
    return np.ascontiguousarray(video.astype(np.uint8))


def encode_mp4(video: np.ndarray, fps: int = 16) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for arr in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def generate(
    root: str | Path,
    videos_per_class: dict[str, int] | None = None,
    frames: int = 32,
    size: int = 64,
    seed: int = 0,
) -> dict[str, Path]:
    """Write videos/<split>/*.mp4, <split>_list.txt (`path label`) and classes.txt under root.
    Returns the list file of each split."""
    root = Path(root)
    per_class = videos_per_class or {"train": 24, "val": 8}
    lists = {}
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for s, (split, n) in enumerate(sorted(per_class.items())):
        folder = root / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for label in range(len(CLASSES)):
            for i in range(n):
                rng = np.random.default_rng([seed, s, label, i])
                name = f"{label}_{i:04d}.mp4"
                path = folder / name
                if not path.exists():
                    path.write_bytes(encode_mp4(render(label, rng, frames, size)))
                lines.append(f"{split}/{name} {label}")
        lists[split] = root / f"{split}_list.txt"
        lists[split].write_text("\n".join(lines) + "\n")
    return lists
