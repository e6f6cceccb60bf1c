"""Frame sampling exactly as MMAction2's SampleFrames / DenseSampleFrames
(mmaction/datasets/transforms/loading.py).

Every sampler returns an int64 array of shape (clips, frames_per_clip): row i holds the frame
indices of clip (view) i, already wrapped modulo num_frames ('loop') and offset by start_index.
Randomness comes only from the `rng` passed in (numpy Generator), so a seed reproduces a draw.
"""

from __future__ import annotations

import numpy as np

from vidtempo.config import PipelineConfig, SamplerConfig, views


def _segment_clips(num_frames: int, s: SamplerConfig, rng: np.random.Generator) -> np.ndarray:
    """Clip start offsets of SampleFrames (train: random within segments; test: centred)."""
    m = s.num_clips
    if not s.test_mode:
        ori_clip_len = s.clip_len * s.frame_interval
        avg_interval = (num_frames - ori_clip_len + 1) // m
        if avg_interval > 0:
            return np.arange(m) * avg_interval + rng.integers(0, avg_interval, size=m)
        if num_frames > max(m, ori_clip_len):
            return np.sort(rng.integers(0, num_frames - ori_clip_len + 1, size=m))
        if avg_interval == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / m
            return np.around(np.arange(m) * ratio).astype(np.int64)
        return np.zeros(m, dtype=np.int64)
    if s.clip_len == 1:  # 2D: the centre of each of the m segments (+ their starts: twice)
        avg_interval = num_frames / float(m)
        base = np.arange(m) * avg_interval
        offsets = base + avg_interval / 2.0
        if s.twice_sample:
            offsets = np.concatenate([offsets, base])
        return offsets.astype(np.int64)
    # 3D: m windows of (L-1)*s+1 frames spread evenly over the video
    max_offset = max(num_frames - ((s.clip_len - 1) * s.frame_interval + 1), 0)
    clips = m * (2 if s.twice_sample else 1)
    if clips > 1:
        return np.round(np.arange(clips) * (max_offset / float(m - 1 if m > 1 else 1))).astype(
            np.int64
        )
    return np.array([max_offset // 2], dtype=np.int64)


def _dense_clips(num_frames: int, s: SamplerConfig, rng: np.random.Generator) -> np.ndarray:
    """DenseSampleFrames: num_clips frames at stride sample_range // num_clips in a window."""
    positions = max(1, 1 + num_frames - s.sample_range)
    interval = s.sample_range // s.num_clips
    base = np.arange(s.num_clips) * interval
    if not s.test_mode:
        start = 0 if positions == 1 else int(rng.integers(0, positions - 1))
        return ((base + start) % num_frames)[None, :]
    starts = np.linspace(0, positions - 1, num=s.num_sample_positions, dtype=int)
    return np.stack([(base + st) % num_frames for st in starts])


def sample_indices(
    num_frames: int, s: SamplerConfig, rng: np.random.Generator, start_index: int = 0
) -> np.ndarray:
    """Frame indices (clips, frames_per_clip) for a video of num_frames frames."""
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if s.kind == "dense":
        offsets = _dense_clips(num_frames, s, rng)  # (clips, T): one frame per "clip" here
        inds = offsets[..., None] + np.arange(s.clip_len)[None, None, :] * s.frame_interval
        inds = inds.reshape(offsets.shape[0], -1)
    else:
        offsets = _segment_clips(num_frames, s, rng)
        inds = offsets[:, None] + np.arange(s.clip_len)[None, :] * s.frame_interval  # (M, L)
        if s.kind == "segments":  # 2D: the M segments form one clip of T = M frames per view
            views = 2 if (s.twice_sample and s.test_mode) else 1
            inds = inds.reshape(views, -1)
    inds = np.mod(inds, num_frames)  # out_of_bound_opt='loop'
    return (inds + start_index).astype(np.int64)


# ---- the shape of one sample, from the config alone (no decoding) ----


def frames_per_clip(pipe: PipelineConfig) -> int:
    s = pipe.sampler
    return s.clip_len if s.kind == "clips" else s.num_clips


def clip_bytes(pipe: PipelineConfig) -> int:
    """Bytes of one sample of `pipe` as it leaves the decode tasks (uint8)."""
    return int(np.prod(output_shape(pipe, frames_per_clip(pipe))))


def output_shape(pipe: PipelineConfig, frames_per_clip: int) -> tuple[int, ...]:
    clips, crops = views(pipe)
    size = pipe.crop.resize_to or pipe.crop.size
    if pipe.format == "NCTHW":
        return (clips * crops, 3, frames_per_clip, size, size)
    return (clips * crops * frames_per_clip, 3, size, size)
