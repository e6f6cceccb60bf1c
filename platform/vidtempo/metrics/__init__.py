"""Accuracy at clip and video level, and the zoo's named protocols (no Ray, no MLflow).

Evaluation feeds every view (clip × crop) of a video through the model on its own and adds its
score vector to the video's sum; the video's score is the mean over its views — exactly the
recognizer's `average_clips` (softmax scores for 'prob', logits for 'score'/'none'). A video's
views may arrive in several rows and on several workers: accumulators are merged by `video_id`.

    acc = Accumulator(num_classes)
    acc.add(video_ids, labels, view_scores)        # (B, V, K) per-view scores
    merged = merge(gather(acc.state()))            # all workers → rank 0
    compute(merged, topk=(1, 5), prefix="test", protocol="2x3")  # test/top1@2x3, ...
"""

from __future__ import annotations

import numpy as np


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the label is among the k highest scores (ties broken by index)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, topk=(1, 5)) -> dict[int, float]:
    """Percent of rows whose label is in the top k, for each k."""
    if len(labels) == 0:
        return {k: float("nan") for k in topk}
    return {k: 100.0 * float(topk_correct(scores, labels, k).mean()) for k in topk}


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) percent top-1 recall per class; NaN for classes without samples."""
    pred = scores.argmax(axis=1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            out[c] = 100.0 * float((pred[mask] == c).mean())
    return out


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean of the per-class recalls over the classes that have samples (MMAction2's)."""
    return float(np.nanmean(per_class_accuracy(scores, labels, num_classes)))


class Accumulator:
    def __init__(self, num_classes: int, topk=(1, 5)):
        self.num_classes = num_classes
        self.topk = tuple(topk)
        self.sums: dict[str, np.ndarray] = {}  # video_id → sum of view scores (K,)
        self.views: dict[str, int] = {}
        self.labels: dict[str, int] = {}
        self.clip_correct = {k: 0 for k in self.topk}
        self.clips = 0

    def add(self, video_ids, labels, view_scores: np.ndarray) -> None:
        """view_scores (B, V, K): the scores of each of a row's V views."""
        b, v, k = view_scores.shape
        flat = view_scores.reshape(b * v, k)
        flat_labels = np.repeat(np.asarray(labels), v)
        for kk in self.topk:
            self.clip_correct[kk] += int(topk_correct(flat, flat_labels, kk).sum())
        self.clips += b * v
        for vid, label, s in zip(video_ids, labels, view_scores):
            vid = str(vid)
            if vid in self.sums:
                self.sums[vid] = self.sums[vid] + s.sum(axis=0)
                self.views[vid] += v
            else:
                self.sums[vid] = s.sum(axis=0).astype(np.float64)
                self.views[vid] = v
                self.labels[vid] = int(label)

    def state(self) -> dict:
        return {"num_classes": self.num_classes, "topk": self.topk, "sums": self.sums,
                "views": self.views, "labels": self.labels,
                "clip_correct": self.clip_correct, "clips": self.clips}  # fmt: skip

    def video_scores(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        ids = sorted(self.sums)
        if not ids:
            return ids, np.zeros((0, self.num_classes)), np.zeros(0, dtype=np.int64)
        scores = np.stack([self.sums[i] / self.views[i] for i in ids])
        return ids, scores, np.array([self.labels[i] for i in ids], dtype=np.int64)


def merge(states: list[dict]) -> Accumulator:
    """One accumulator from the states of several workers (views of one video are added)."""
    acc = Accumulator(states[0]["num_classes"], states[0]["topk"])
    for st in states:
        for vid, s in st["sums"].items():
            if vid in acc.sums:
                acc.sums[vid] = acc.sums[vid] + s
                acc.views[vid] += st["views"][vid]
            else:
                acc.sums[vid], acc.views[vid] = s, st["views"][vid]
                acc.labels[vid] = st["labels"][vid]
        for k in acc.topk:
            acc.clip_correct[k] += st["clip_correct"][k]
        acc.clips += st["clips"]
    return acc


def compute(acc: Accumulator, prefix: str = "val", protocol: str | None = None) -> dict[str, float]:
    """Named metrics: `{prefix}/top{k}[@protocol]` and `{prefix}/mean_class_acc[@protocol]` at
    video level, `{prefix}/clip_top{k}[@protocol]` at clip (single view) level, in percent."""
    at = f"@{protocol}" if protocol else ""
    _, scores, labels = acc.video_scores()
    out = {f"{prefix}/top{k}{at}": v for k, v in topk_accuracy(scores, labels, acc.topk).items()}
    out[f"{prefix}/mean_class_acc{at}"] = (
        mean_class_accuracy(scores, labels, acc.num_classes) if len(labels) else float("nan")
    )
    for k in acc.topk:
        out[f"{prefix}/clip_top{k}{at}"] = 100.0 * acc.clip_correct[k] / max(acc.clips, 1)
    out[f"{prefix}/videos{at}"] = float(len(labels))
    return out


def gather(obj):
    """Every worker's `obj`, in rank order (all_gather_object when torch.distributed runs;
    a one-element list otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
