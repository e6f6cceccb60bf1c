"""Recognizers: a backbone, an optional TPN neck and a head, with view handling.

`model(x)` returns class scores per video. In training (V = 1 view) they are the logits; in eval
the V test views are averaged by `average_clips`. `model(x, labels)` also returns the auxiliary
loss (TPN; zero otherwise), which the training loop adds to its cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from vidtempo.models.heads import average_views


def _neck(neck, feats, labels, views, aux):
    """Run a neck on per-view features; labels are repeated for each view."""
    feats, neck_aux = neck(feats, labels.repeat_interleave(views) if labels is not None else None)
    return feats, (neck_aux if neck_aux is not None else aux)


def _per_video(model, scores, n, views, labels, aux):
    """(N*V, K) view scores → per-video scores: the mean in training, the recipe's
    average_clips at test time; plus the auxiliary loss when labels were given."""
    if model.training:
        scores = scores.view(n, views, -1).mean(dim=1)
    else:
        scores = average_views(scores, views, model.average_clips)
    return scores if labels is None else (scores, aux)


class Recognizer2D(nn.Module):
    """Input (N, V*T, 3, H, W): V views of T frames each."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_segments: int,
                 average_clips: str = "prob", neck: nn.Module | None = None):  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_segments = num_segments
        self.average_clips = average_clips

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        n, vt = x.shape[:2]
        t = self.num_segments
        if vt % t:
            raise ValueError(f"got {vt} frames per video, not a multiple of num_segments={t}")
        views = vt // t
        feats = self.backbone(x.flatten(0, 1))  # (N*V*T, C, h, w) or a tuple of them
        aux = x.new_zeros(())
        if self.neck is not None:
            # (N*V*T, C, h, w) -> (N*V, C, T, h, w) per level
            feats = tuple(f.view(n * views, t, *f.shape[1:]).transpose(1, 2) for f in feats)
            feats, aux = _neck(self.neck, feats, labels, views, aux)
        return _per_video(self, self.head(feats), n, views, labels, aux)


class Recognizer3D(nn.Module):
    """Input (N, V, 3, T, H, W): V clips (× crops) of T frames each."""

    def __init__(self, backbone: nn.Module, head: nn.Module, average_clips: str = "prob",
                 neck: nn.Module | None = None):  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.average_clips = average_clips

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        n, views = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1))  # tuple of (N*V, C, T, h, w)
        aux = x.new_zeros(())
        if self.neck is not None:
            feats, aux = _neck(self.neck, feats, labels, views, aux)
        elif isinstance(feats, tuple):
            feats = feats[-1]
        return _per_video(self, self.head(feats), n, views, labels, aux)
