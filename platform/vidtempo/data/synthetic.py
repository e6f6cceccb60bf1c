"""A synthetic temporal dataset: short clips whose paired classes differ only in the order of
their frames, plus classes that differ only in appearance.

Each pair is made by rendering one motion or sequence of events and, for the second class,
playing an independently drawn clip of it backwards: the two classes have exactly the same
distribution of frames (`render(b, rng)` is `render(a, rng)` reversed, for the same draws), so a
model that averages per-frame features (TSN) sits at chance on every pair, while a temporal
model (TSM, TIN, TANet, TPN) can tell them apart. Five families of pairs:

    translation   a square crossing the frame left → right / right → left
    scale         a disc growing / shrinking
    rotation      a bar turning clockwise / anticlockwise (no single frame shows which way)
    event order   a square flashes, then a disc / the disc, then the square
    texture flow  a full-frame texture expanding / contracting (no object, no edge)

and two appearance-only classes (a still ring, a still cross: shapes no other class shows) that any
model, TSN included, should get right. These twelve (`CLASSES`) are the demo's set.

Four more classes (`TEMPO_CLASSES`, labels 12–15; `generate(..., classes=16)`) are about speed:

    tempo          a dot circling once per clip / three times per clip. The fast clip is the
                   slow clip's frames reordered (frame k of the fast clip is frame 3k mod T of
                   the slow one, T coprime with 3): the circle's starting angle is uniform, so
                   every frame has the same distribution in both classes, and the two clips hold
                   the very same frames; only how far the dot moves from frame to frame differs.
    varied order   stripes drifting right / left at a random speed, 0.5x–3x of a base rate
                   (0.35–2.1 stripe periods per clip): an order pair whose speed varies, the case
                   TPN's temporal pyramid was designed for; "left" is "right" played backwards.
"""

from __future__ import annotations

import io
import json
import shutil
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
    "still ring",  # shapes no other class shows: appearance alone tells these two
    "still cross",
    "square flashes, then disc",
    "disc flashes, then square",  # = class 8 played backwards
    "texture expanding",
    "texture contracting",  # = class 10 played backwards
]
TEMPO_CLASSES = [
    "dot circling slowly",
    "dot circling fast",  # = class 12's frames reordered: three turns per clip instead of one
    "stripes drifting right at a random speed",
    "stripes drifting left at a random speed",  # = class 14 played backwards
]
ALL_CLASSES = CLASSES + TEMPO_CLASSES
TEMPORAL_PAIRS = [(0, 1), (2, 3), (4, 5), (8, 9), (10, 11)]  # the order pairs
APPEARANCE_CLASSES = [6, 7]
TEMPO_PAIRS = [(12, 13)]
VARIED_ORDER_PAIRS = [(14, 15)]
BACKWARDS = {b: a for a, b in TEMPORAL_PAIRS + VARIED_ORDER_PAIRS}  # class → its forward class
FASTER = {b: a for a, b in TEMPO_PAIRS}  # class → the class whose frames it reorders
FAST_TURNS = 3  # turns per clip of the fast circling dot (the slow one makes one)
VARIED_SPEED = (0.5, 3.0)  # the varied-order stripes' speed, times STRIPE_RATE
STRIPE_RATE = 0.7  # stripe periods per clip at 1x: at 3x, 8 of 32 frames still step < 1/2 period
# Bumped whenever a class renders differently: clips and shards of another version (or of other
# frames/size/seed) are made again instead of being reused under the new class names.
GENERATOR_VERSION = 4
STAMP = "generator.json"


def stamp(frames: int, size: int, seed: int, classes: int = len(CLASSES)) -> dict:
    return {"version": GENERATOR_VERSION, "classes": ALL_CLASSES[:classes], "frames": frames,
            "size": size, "seed": seed}  # fmt: skip


def is_current(root: str | Path, frames: int, size: int, seed: int,
               classes: int = len(CLASSES)) -> bool:  # fmt: skip
    """Were the clips under root made by this generator with these settings?"""
    path = Path(root) / STAMP
    return path.exists() and json.loads(path.read_text()) == stamp(frames, size, seed, classes)


def fast_order(frames: int, turns: int = FAST_TURNS) -> np.ndarray:
    """Frame k of the fast clip is frame turns·k mod frames of the slow one: with `turns`
    coprime with `frames`, a reordering of the same frames that goes round `turns` times."""
    if np.gcd(turns, frames) != 1:
        raise ValueError(f"the tempo classes need a frame count coprime with {turns}, got {frames}")
    return (turns * np.arange(frames)) % frames


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


def _ring(img, cx, cy, r, color):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    img[(d2 <= r * r) & (d2 >= (0.55 * r) ** 2)] = color


def _cross(img, cx, cy, half, color):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = np.abs(xx - cx), np.abs(yy - cy)
    arm = 0.3 * half
    img[((dx <= half) & (dy <= arm)) | ((dy <= half) & (dx <= arm))] = color


def _bar(img, cx, cy, angle, length, width, color):
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    img[(np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)] = color


def _events(video, rng, color, t):
    """A square visible during one stretch of the clip, then a disc during a later one, each
    at its own random place; the background is the same before, between and after."""
    size = video.shape[1]
    a0 = rng.uniform(0.05, 0.15)
    a1 = a0 + rng.uniform(0.25, 0.35)
    b0 = a1 + rng.uniform(0.1, 0.2)
    b1 = min(b0 + rng.uniform(0.25, 0.35), 0.95)
    (sx, sy), (dx, dy) = rng.uniform(0.25, 0.75, size=(2, 2)) * size
    other = rng.uniform(150, 255, size=3) * rng.permutation([1.0, 0.6, 0.3])
    half, r = rng.uniform(0.12, 0.18) * size, rng.uniform(0.12, 0.18) * size
    for i in range(len(video)):
        if a0 <= t[i] <= a1:
            _square(video[i], sx, sy, half, color)
        if b0 <= t[i] <= b1:
            _disc(video[i], dx, dy, r, other)


def _texture_flow(video, rng, color, t):
    """A sum of random gratings seen through a zoom that grows from 1x to 2-2.5x about a random
    centre: the texture flows outwards (played backwards: inwards)."""
    frames, size = video.shape[:2]
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.35, 0.65, size=2)
    end_zoom = rng.uniform(2.0, 2.5)
    waves = [(rng.uniform(2, 5), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    dark = rng.uniform(20, 90, size=3)
    for i in range(frames):
        zoom = end_zoom ** t[i]
        u, v = (xx - cx) / zoom, (yy - cy) / zoom
        f = sum(np.cos(2 * np.pi * fr * (u * np.cos(th) + v * np.sin(th)) + ph)
                for fr, th, ph in waves) / 3  # fmt: skip
        mix = (0.5 + 0.5 * f)[..., None]
        video[i] = np.clip(dark + (color - dark) * mix + rng.normal(0, 4, size=mix.shape), 0, 255)


def _circling_dot(video, rng, color, t):
    """A dot going once round a circle about the centre, clockwise, from a uniformly random
    starting angle (the last frame is one step short of the first: the motion wraps around)."""
    frames, size = video.shape[:2]
    start = rng.uniform(0, 1)
    radius, dot = rng.uniform(0.24, 0.3) * size, rng.uniform(0.09, 0.12) * size
    for i in range(frames):
        angle = 2 * np.pi * (start + i / frames)
        _disc(video[i], size / 2 + radius * np.cos(angle), size / 2 + radius * np.sin(angle), dot,
              color)  # fmt: skip


def _drifting_stripes(video, rng, color, t):
    """Vertical stripes drifting right at a random speed (VARIED_SPEED × STRIPE_RATE periods
    per clip), from a random phase."""
    frames, size = video.shape[:2]
    period = rng.uniform(0.3, 0.45) * size
    periods = rng.uniform(*VARIED_SPEED) * STRIPE_RATE  # the drift over the clip
    phase = rng.uniform(0, 1)
    dark = rng.uniform(20, 90, size=3)
    xx = np.arange(size)[None, :, None] / period
    for i in range(frames):
        mix = 0.5 + 0.5 * np.cos(2 * np.pi * (xx - phase - periods * t[i]))
        video[i] = np.clip(dark + (color - dark) * mix + rng.normal(0, 4, size=(size, size, 1)), 0, 255)


def render(label: int, rng: np.random.Generator, frames: int = 32, size: int = 64) -> np.ndarray:
    """(frames, size, size, 3) uint8 for one clip of class `label`. A backwards class is its
    forward class rendered from the same draws of `rng`, frames reversed; the fast circling dot
    is the slow one rendered from the same draws, frames reordered (`fast_order`)."""
    if not 0 <= label < len(ALL_CLASSES):
        raise ValueError(f"label must be in [0, {len(ALL_CLASSES)}), got {label}")
    forward = BACKWARDS.get(label, FASTER.get(label, label))
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
    elif forward == 8:
        _events(video, rng, color, t)
    elif forward == 10:
        _texture_flow(video, rng, color, t)
    elif forward == 12:
        _circling_dot(video, rng, color, t)
    elif forward == 14:
        _drifting_stripes(video, rng, color, t)
    else:
        cx, cy = rng.uniform(0.4, 0.6, size=2) * size
        extent = rng.uniform(0.28, 0.36) * size  # larger than the moving shapes, so the shape
        for i in range(frames):  # shows even at the 1/4 resolution of a ResNet stem
            jx, jy = rng.normal(0, 0.5, size=2)
            if forward == 6:
                _ring(video[i], cx + jx, cy + jy, extent, color)
            else:
                _cross(video[i], cx + jx, cy + jy, extent, color)
    if label in BACKWARDS:
        video = video[::-1]
    elif label in FASTER:
        video = video[fast_order(frames)]
    return np.ascontiguousarray(video.astype(np.uint8))


def encode_mp4(video: np.ndarray, fps: int = 16) -> bytes:
    """Lossless H.264 (qp 0) in yuv420p: the decoded frames are the rendered frames in 4:2:0,
    whatever x264 decides. Lossy x264 (crf, with its macroblock-tree lookahead) gave different
    bytes — and pixels off by up to 36 — for the same frames from one encode to the next, and
    its errors depend on the order of the frames, which the backwards classes must not leak."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for arr in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _write_clip(job: tuple) -> None:
    path, label, key, frames, size = job
    Path(path).write_bytes(encode_mp4(render(label, np.random.default_rng(key), frames, size)))


def generate(
    root: str | Path,
    videos_per_class: dict[str, int] | None = None,
    frames: int = 32,
    size: int = 64,
    seed: int = 0,
    workers: int = 1,
    classes: int = len(CLASSES),
) -> dict[str, Path]:
    """Write videos/<split>/*.mp4, <split>_list.txt (`path label`) and classes.txt under root,
    rendering and encoding in `workers` processes. Returns the list file of each split. Every
    clip is drawn from its own generator, seeded by (seed, split, label, index). `classes`: the
    first twelve (the demo's), or all sixteen with the tempo classes."""
    if classes not in (len(CLASSES), len(ALL_CLASSES)):
        raise ValueError(f"classes must be {len(CLASSES)} or {len(ALL_CLASSES)}, got {classes}")
    root = Path(root)
    per_class = videos_per_class or {"train": 24, "val": 8}
    lists = {}
    if (root / "videos").exists() and not is_current(root, frames, size, seed, classes):
        shutil.rmtree(root / "videos")  # another generator's clips: not reusable
    root.mkdir(parents=True, exist_ok=True)
    (root / STAMP).write_text(json.dumps(stamp(frames, size, seed, classes)))
    (root / "classes.txt").write_text("\n".join(ALL_CLASSES[:classes]) + "\n")
    jobs = []
    for s, (split, n) in enumerate(sorted(per_class.items())):
        folder = root / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for label in range(classes):
            for i in range(n):
                name = f"{label}_{i:04d}.mp4"
                if not (folder / name).exists():
                    jobs.append((str(folder / name), label, [seed, s, label, i], frames, size))
                lines.append(f"{split}/{name} {label}")
        lists[split] = root / f"{split}_list.txt"
        lists[split].write_text("\n".join(lines) + "\n")
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: the caller may hold torch's OpenMP threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_clip, jobs, chunksize=8))
    else:
        for job in jobs:
            _write_clip(job)
    return lists
