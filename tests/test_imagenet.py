"""ImageNet weights from where the nodes reach them: torchvision's published weights by name (read
from torch's cache, filled here by the test: nothing is downloaded), a URI (the local S3 server),
a local file; each checked on the driver and read by the node that builds the model."""

from __future__ import annotations

import pytest
import torch
import torchvision

from vidtempo import config as C
from vidtempo import models as M
from vidtempo import storage
from vidtempo.config import ConfigError
from vidtempo.models import imagenet
from vidtempo.train.run import imagenet_weights

TIN = "tin_r50_1x1x8_40e_sthv1_rgb"


def _r50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()  # random weights in torchvision's keys


def test_names_uris_and_files_are_told_apart_and_checked(tmp_path):
    assert imagenet.resolve("torchvision://resnet50") == "torchvision://resnet50"
    assert imagenet.resolve("ResNet50_Weights.IMAGENET1K_V2") == "ResNet50_Weights.IMAGENET1K_V2"
    assert imagenet.torchvision_weights("torchvision://resnet50").name == "IMAGENET1K_V1"
    with pytest.raises(ConfigError, match="torchvision has no such ResNet-50 weights; one of "
                                          "torchvision://resnet50"):  # fmt: skip
        imagenet.resolve("torchvision://resnet18")
    with pytest.raises(ConfigError, match="do not exist"):
        imagenet.resolve(tmp_path / "missing.pth")
    f = tmp_path / "r50.pth"
    torch.save({}, f)
    assert imagenet.resolve(str(f)) == str(f)
    assert imagenet.is_local(str(f)) and not imagenet.is_local("torchvision://resnet50")
    assert not imagenet.is_local("s3://bucket/r50.pth")


def test_a_recipe_from_imagenet_without_weights_says_where_they_may_come_from(monkeypatch):
    monkeypatch.delenv("VIDTEMPO_IMAGENET", raising=False)
    cfg = C.load(TIN)
    with pytest.raises(ConfigError) as err:
        imagenet_weights(cfg, None)
    assert "--imagenet torchvision://resnet50" in str(err.value)
    assert "--imagenet s3://BUCKET/resnet50.pth" in str(err.value)
    monkeypatch.setenv("VIDTEMPO_IMAGENET", "torchvision://resnet50")
    assert imagenet_weights(cfg, None) == "torchvision://resnet50"
    assert imagenet_weights(C.override(cfg, {"model.pretrained": "none"}), None) is None


def test_torchvision_weights_by_name_are_read_from_torchs_cache(tmp_path, monkeypatch):
    """The file torchvision publishes, where torch.hub keeps it (TORCH_HOME/hub/checkpoints):
    a node that downloaded it once reads it from there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    state = _r50_state()
    torch.save(state, cached)
    model = M.build(C.load(TIN), imagenet="torchvision://resnet50")
    torch.testing.assert_close(model.backbone.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])


def test_weights_from_a_bucket_are_checked_on_the_driver_and_read_on_the_node(s3, tmp_path):
    """(A small state dict: moto serves ~5 MB/s, a ResNet-50 file took 20 s to read back.)"""
    bucket = s3.make_bucket("vt-imagenet")
    uri = storage.join(bucket, "weights", "resnet50.pth")
    with pytest.raises(ConfigError, match=f"ImageNet weights {uri} .*do not exist"):
        imagenet.resolve(uri)
    state = {"conv1.weight": torch.randn(4, 3, 7, 7), "fc.bias": torch.randn(10)}
    torch.save(state, tmp_path / "r50.pth")
    storage.write_bytes(uri, (tmp_path / "r50.pth").read_bytes())
    assert imagenet.resolve(uri + "/") == uri
    loaded = imagenet.load(uri)
    assert loaded.keys() == state.keys()
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"])


def test_a_local_file_missing_on_a_worker_says_how_to_share_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not on this node.*--imagenet s3://"):
        imagenet.load(tmp_path / "elsewhere.pth")
