"""Spatial augmentation exactly as MMAction2's transforms
(mmaction/datasets/transforms/processing.py), on uint8 frames.

Frames stay uint8 (F, 3, H, W) torch tensors until the training device normalises them. Crop
geometry is computed by pure functions that return boxes (x, y, w, h), so tests can check
them against hand-computed values; `apply_pipeline` strings the steps of one PipelineConfig.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from vidtempo.config import CropConfig, PipelineConfig

Box = tuple[int, int, int, int]  # x, y, w, h


def resize_short_size(h: int, w: int, short: int) -> tuple[int, int]:
    """Resize(scale=(-1, short)): the short side becomes `short`, aspect kept (round half up)."""
    scale = short / min(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8 (F, 3, H, W) to size (h, w)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=False)


def multiscale_crop_box(h: int, w: int, crop: CropConfig, rng: np.random.Generator) -> Box:
    base = min(h, w)
    sizes = [int(base * s) for s in crop.scales]
    candidates = [
        [sizes[j], sizes[i]]  # (crop_w, crop_h)
        for i in range(len(sizes))
        for j in range(len(sizes))
        if abs(i - j) <= crop.max_wh_scale_gap
    ]
    cw, ch = candidates[int(rng.integers(len(candidates)))]
    if abs(cw - crop.size) < 3:
        cw = crop.size
    if abs(ch - crop.size) < 3:
        ch = crop.size
    if crop.random_crop:
        return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    ws, hs = (w - cw) // 4, (h - ch) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if crop.num_fixed_crops == 13:
        offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                    (1 * ws, 1 * hs), (3 * ws, 1 * hs), (1 * ws, 3 * hs), (3 * ws, 3 * hs)]  # fmt: skip
    x, y = offsets[int(rng.integers(len(offsets)))]
    return x, y, cw, ch


def random_resized_crop_box(h: int, w: int, crop: CropConfig, rng: np.random.Generator) -> Box:
    attempts = 10
    lo, hi = crop.aspect_ratio_range
    ratios = np.exp(rng.uniform(math.log(lo), math.log(hi), size=attempts))
    areas = rng.uniform(*crop.area_range, size=attempts) * h * w
    cws = np.round(np.sqrt(areas * ratios)).astype(np.int64)
    chs = np.round(np.sqrt(areas / ratios)).astype(np.int64)
    for cw, ch in zip(cws.tolist(), chs.tolist()):
        if cw <= w and ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    side = min(h, w)  # fall back to the centred square
    return (w - side) // 2, (h - side) // 2, side, side


def center_crop_box(h: int, w: int, size: int) -> Box:
    cw, ch = min(size, w), min(size, h)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def three_crop_boxes(h: int, w: int, size: int) -> list[Box]:
    """Left, right, middle (wide frames) or top, bottom, middle (tall); one side must be `size`."""
    cw, ch = min(size, w), min(size, h)
    if ch == h:
        step = (w - cw) // 2
        return [(0, 0, cw, ch), (2 * step, 0, cw, ch), (step, 0, cw, ch)]
    if cw == w:
        step = (h - ch) // 2
        return [(0, 0, cw, ch), (0, 2 * step, cw, ch), (0, step, cw, ch)]
    raise ValueError(f"ThreeCrop({size}) needs a frame side of {size}, got {h}x{w}")


def crop(frames: torch.Tensor, box: Box) -> torch.Tensor:
    x, y, w, h = box
    return frames[..., y : y + h, x : x + w]


# ColorJitter as MMAction2 1.x: brightness, contrast, saturation in [0.5, 1.5], hue in
# [-0.1, 0.1], one draw per clip, applied in an order fixed once (here: drawn from the seed).
_JITTER = ("brightness", "contrast", "saturation", "hue")
# PCA lighting (the pre-2021-07 ColorJitter): AlexNet eigenvalues / eigenvectors, RGB
_EIGVAL = np.array([55.46, 4.794, 1.148])
_EIGVEC = np.array(
    [[-0.5836, -0.6948, 0.4203], [-0.5808, -0.0045, -0.8140], [-0.5675, 0.7192, 0.4009]]
)


def color_jitter(
    frames: torch.Tensor, rng: np.random.Generator, order: tuple[int, ...]
) -> torch.Tensor:
    factors = {
        "brightness": rng.uniform(0.5, 1.5),
        "contrast": rng.uniform(0.5, 1.5),
        "saturation": rng.uniform(0.5, 1.5),
        "hue": rng.uniform(-0.1, 0.1),
    }
    for i in order:
        name = _JITTER[i]
        fn = getattr(TF, f"adjust_{name}")
        frames = fn(frames, factors[name])
    return frames


def pca_lighting(
    frames: torch.Tensor, rng: np.random.Generator, alpha_std: float = 0.1
) -> torch.Tensor:
    alpha = rng.normal(0, alpha_std, size=3)
    shift = torch.from_numpy(_EIGVEC @ (alpha * _EIGVAL)).float().view(1, 3, 1, 1)
    return (frames.float() + shift).round_().clamp_(0, 255).to(torch.uint8)


def apply_pipeline(
    frames: torch.Tensor,
    clips: int,
    pipe: PipelineConfig,
    label: int,
    rng: np.random.Generator,
    flip_label_map: dict[int, int] | None = None,
    jitter_order: tuple[int, ...] = (0, 1, 2, 3),
) -> tuple[torch.Tensor, int]:
    """uint8 frames (clips*L, 3, H, W), decoded at the sampled indices, → the model input of
    one video: NCHW (V*T, 3, h, w) or NCTHW (V, 3, T, h, w), V = clips x crops; and the label
    (changed by a flip with a label map). `jitter_order` is ColorJitter's order of brightness,
    contrast, saturation and hue, fixed once per pipeline as MMAction2 fixes it at construction."""
    if pipe.resize_short is not None:
        frames = resize(frames, resize_short_size(*frames.shape[-2:], pipe.resize_short))
    h, w = frames.shape[-2:]
    c = pipe.crop
    if c.kind == "multiscale":
        boxes = [multiscale_crop_box(h, w, c, rng)]
    elif c.kind == "random_resized":
        boxes = [random_resized_crop_box(h, w, c, rng)]
    elif c.kind == "center":
        boxes = [center_crop_box(h, w, c.size)]
    else:
        boxes = three_crop_boxes(h, w, c.size)
    views = [crop(frames, b) for b in boxes]  # crop-major, then frame
    if c.resize_to is not None:
        views = [resize(v, (c.resize_to, c.resize_to)) for v in views]
    out = torch.cat(views, 0) if len(views) > 1 else views[0].contiguous()
    if pipe.flip_ratio > 0 and rng.random() < pipe.flip_ratio:
        out = out.flip(-1)
        if flip_label_map:
            label = flip_label_map.get(label, label)
    if pipe.color_jitter == "jitter":
        out = color_jitter(out, rng, jitter_order)
    elif pipe.color_jitter == "pca":
        out = pca_lighting(out, rng)
    if pipe.format == "NCTHW":  # (V*L, 3, h, w) -> (V, 3, L, h, w)
        v = clips * len(boxes)
        out = out.view(v, -1, *out.shape[1:]).transpose(1, 2).contiguous()
    return out, label
