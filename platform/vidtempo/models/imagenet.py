"""Where a run's ImageNet ResNet-50 weights come from, and reading them on the node that needs them.

A source is one of
- torchvision's published weights by name: `torchvision://resnet50` (MMAction2's spelling, the
  weights its zoo recipes start from = `ResNet50_Weights.IMAGENET1K_V1`), or
  `ResNet50_Weights.IMAGENET1K_V1` / `…IMAGENET1K_V2` (or the bare member name). Each node
  downloads the file into torch's cache (`TORCH_HOME`, default ~/.cache/torch) the first time and
  checks it against the hash torchvision publishes in its file name;
- a URI every node reads (`s3://`, `gs://`, `file://` on a shared mount, any pyarrow filesystem);
- a local path: a file of this node only, so a run that spans nodes refuses it
  (preflight.check_cluster).

    source = resolve("s3://bucket/resnet50.pth")   # the driver: checked, normalised
    state = load(source)                            # each worker, on its own node
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from vidtempo import storage
from vidtempo.config import ConfigError

# MMAction2's `pretrained='torchvision://resnet50'`: torchvision's original ImageNet weights
ALIASES = {"torchvision://resnet50": "IMAGENET1K_V1"}
PREFIX = "ResNet50_Weights."


def torchvision_weights(source: str):
    """The `ResNet50_Weights` member a source names, or None when it names a file."""
    from torchvision.models import ResNet50_Weights

    text = ALIASES.get(source.strip(), source.strip())
    member = text[len(PREFIX):] if text.startswith(PREFIX) else text
    if member in ResNet50_Weights.__members__:
        return ResNet50_Weights[member]
    if text.startswith(("torchvision://", PREFIX)):
        names = ", ".join([*ALIASES, *(PREFIX + m for m in ResNet50_Weights.__members__)])
        raise ConfigError(f"--imagenet {source}: torchvision has no such ResNet-50 weights; "
                          f"one of {names}")  # fmt: skip
    return None


def is_local(source: str) -> bool:
    """A file on the node the command runs on (not a name, not a URI)."""
    return torchvision_weights(source) is None and not storage.is_uri(source)


def resolve(source: str | Path) -> str:
    """`source` checked where the driver can check it: a name torchvision publishes, a URI that
    answers and holds the object, or a local file that exists (made absolute)."""
    text = str(source)
    if torchvision_weights(text) is not None:
        return text.strip()
    if storage.is_uri(text):
        storage.check_reachable(text, "ImageNet weights")
        if not storage.exists(text):
            raise ConfigError(f"ImageNet weights {storage.where(text)} do not exist")
        return storage.normalize(text)
    path = Path(storage.normalize(text))
    if not path.is_file():
        raise ConfigError(f"ImageNet weights {path} do not exist: pass --imagenet a torchvision "
                          "ResNet-50 state dict (a path, an s3:// or gs:// URI, or "
                          "torchvision://resnet50)")  # fmt: skip
    return str(path)


def load(source: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of `source`, read on this node: torchvision's file from the cache (after a
    download checked against its published hash), an object from its URI, or a local file."""
    text = str(source)
    weights = torchvision_weights(text)
    if weights is not None:
        return weights.get_state_dict(progress=False, check_hash=True)
    if storage.is_uri(text):
        data = storage.read_bytes(text)
        if data is None:
            raise FileNotFoundError(f"ImageNet weights {storage.where(text)} do not exist")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not Path(text).is_file():
        raise FileNotFoundError(
            f"ImageNet weights {text} are not on this node: a local path is read by every worker "
            "from its own disk; put the file in a bucket (--imagenet s3://…) or use "
            "--imagenet torchvision://resnet50"
        )
    return torch.load(text, map_location="cpu", weights_only=True)
