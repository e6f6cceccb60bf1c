"""A miniature Something-Something V1, laid out as the dataset is distributed and as MMAction2's
`tools/data/sthv1/` preparation leaves it, for the cluster rehearsal to run the documented
commands on:

    <root>/rawframes/<id>/00001.jpg …     JPEG frames, 100 px high, numbered from 1
    <root>/sthv1_train_list_rawframes.txt  `frame_dir num_frames label`, one video a line
    <root>/sthv1_val_list_rawframes.txt
    <root>/annotations/something-something-v1-labels.csv   174 names, one a line, label order

Its classes are a few of the 174 labels, each a block moving one way over a textured
background; the names are placeholders (the real ones come with the dataset). And an
ImageNet-format ResNet-50 state dict (torchvision's keys and shapes, initialised at random), the
file the R50 recipes start from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NUM_LABELS = 174  # Something-Something V1's classes (models.md)
LABELS = (3, 58, 120)  # the miniature's classes among them
HEIGHT, WIDTH = 100, 132  # as distributed: 100 px high
DIRECTIONS = {3: (1, 0), 58: (-1, 0), 120: (0, 1)}  # (dx, dy) of the block per label


def _frames(label: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    base = rng.integers(40, 200, size=(HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8)
    background = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))
    dx, dy = DIRECTIONS[label]
    x, y = int(rng.integers(30, WIDTH - 50)), int(rng.integers(25, HEIGHT - 45))
    out = []
    for t in range(n):
        img = background.copy()
        cx, cy = (x + 3 * dx * t) % (WIDTH - 20), (y + 2 * dy * t) % (HEIGHT - 20)
        img[cy : cy + 20, cx : cx + 20] = (250, 240, 30)
        out.append(img)
    return out


def make_sthv1(root: str | Path, train_per_class: int = 8, val_per_class: int = 4,
               frames: int = 16, seed: int = 0) -> dict[str, int]:  # fmt: skip
    """Write the miniature under `root`; returns the videos per split."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    names = [f"miniature action {i:03d}" for i in range(NUM_LABELS)]
    (root / "annotations" / "something-something-v1-labels.csv").write_text("\n".join(names) + "\n")
    video_id, counts = 1000, {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        lines = []
        for label in LABELS:
            for _ in range(per_class):
                video_id += 1
                folder = root / "rawframes" / str(video_id)
                folder.mkdir(parents=True, exist_ok=True)
                for i, img in enumerate(_frames(label, frames, rng), start=1):
                    Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
                lines.append(f"{video_id} {frames} {label}")
        (root / f"sthv1_{split}_list_rawframes.txt").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def make_imagenet_resnet50(path: str | Path, seed: int = 0) -> Path:
    """A state dict with the keys and shapes of torchvision's ImageNet ResNet-50 (the
    `resnet50-0676ba61.pth` the docs upload), its values at random: what `--imagenet` reads."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path
