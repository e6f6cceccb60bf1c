"""Models: exact sizes, the temporal modules' behaviour, TPN shapes, weights in and out.

Regenerate the pinned outputs (only after an intended change of numerics) with
`python tests/test_models.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode

from vidtempo import config as C
from vidtempo import models as M
from vidtempo.models.checkpoint import CheckpointMismatch, convert_mmaction2, import_mmaction2
from vidtempo.models.heads import average_views
from vidtempo.models.resnet import ResNet, load_torchvision_weights
from vidtempo.models.resnet3d import ResNet3dSlowOnly, load_inflated_weights
from vidtempo.models.tam import TAM
from vidtempo.models.tin import TemporalInterlace, linear_sampler, temporal_columns
from vidtempo.models.tpn import TPN
from vidtempo.models.tsm import TemporalShift

PINNED = Path(__file__).parent / "data" / "model_outputs.json"

# the zoo metafiles: the seven distinct lines
PARAMS = {
    "tin_r50_1x1x8_40e_sthv1_rgb": 23_895_566,
    "tin_tsm_finetune_r50_1x1x8_50e_kinetics400_rgb": 24_358_640,
    "tanet_r50_dense_1x1x8_100e_kinetics400_rgb": 25_590_320,
    "tanet_r50_1x1x8_50e_sthv1_rgb": 25_127_246,
    "tanet_r50_1x1x16_50e_sthv1_rgb": 25_134_670,
    "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb": 91_498_336,
    "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb": 82_445_724,
}


def _model_cfg(name):
    return C.load(name).model


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_equal_models_md(name):
    with FakeTensorMode():
        model = M.build(C.load(name))
    assert M.count_parameters(model) == PARAMS[name]


def test_parameter_decomposition():
    with FakeTensorMode():
        assert M.count_parameters(ResNet(50)) == 23_508_032
        assert M.count_parameters(ResNet3dSlowOnly(50)) == 31_634_496
        tin = ResNet(50, temporal=lambda cin, p, i: TemporalInterlace(cin, 8, 4))
        assert sum(M.count_parameters(t) for t in tin.temporal_modules()) == 31_008
        tam8 = ResNet(50, temporal=lambda cin, p, i: TAM(p, 8), temporal_position="after_conv1")
        assert sum(M.count_parameters(t) for t in tam8.temporal_modules()) == 1_262_688
        assert M.count_parameters(TPN(num_classes=400)) == 59_044_240
        assert M.count_parameters(TPN(num_classes=174)) == 58_581_166


def test_tsm_shift_on_a_hand_made_tensor():
    # 1 video, T=3, C=8 (shift_div 4: fold 2), 1x1 pixels; value = 10 * t + c
    x = (10 * torch.arange(3).view(3, 1) + torch.arange(8).view(1, 8)).float().view(3, 8, 1, 1)
    out = TemporalShift(3, shift_div=4)(x).view(3, 8)
    expected = torch.tensor(
        [
            [10, 11, 0, 0, 4, 5, 6, 7],  # fold 1 takes t+1, fold 2 takes t-1 (zero at t=0)
            [20, 21, 2, 3, 14, 15, 16, 17],
            [0, 0, 12, 13, 24, 25, 26, 27],  # fold 1 is zero at the last frame
        ]
    ).float()
    assert torch.equal(out, expected)


def test_tin_offsets_start_at_half_a_frame_and_interpolate_exactly():
    torch.manual_seed(0)
    tin = TemporalInterlace(64, num_segments=8, shift_div=4)  # F = 16, 4 groups of 4
    x = torch.randn(2 * 8, 64, 3, 3)
    s = x[:, :16].reshape(2, 8, 16, 9).mean(-1).permute(0, 2, 1)
    # the data-dependent term of the last layer removed: 4 * (sigmoid(0.5108) - 0.5)
    with torch.no_grad():
        tin.offset_net.fc2.weight.zero_()
        tin.weight_net.conv.weight.zero_()
    cols = temporal_columns(s.transpose(1, 2))  # (B, T, F*3): each frame with its neighbours
    o = tin.offset_net(cols)
    torch.testing.assert_close(o, torch.full((2, 2), 0.5), atol=5e-5, rtol=0)
    assert torch.equal(tin.weight_net(cols), torch.ones(2, 8, 2))  # 2 * sigmoid(0) = 1
    # linear_sampler (resnet_tin.py) at offsets (+0.5, +0.5, -0.5, -0.5), exactly
    data = torch.randn(2, 8, 16, 3, 3)
    out = linear_sampler(data, torch.tensor([[0.5, 0.5, -0.5, -0.5]] * 2))
    prev = torch.cat([torch.zeros_like(data[:, :1]), data[:, :-1]], 1)  # x[t-1]
    nxt = torch.cat([data[:, 1:], torch.zeros_like(data[:, :1])], 1)  # x[t+1]
    assert torch.equal(out[:, :, :8], 0.5 * data[:, :, :8] + 0.5 * prev[:, :, :8])
    assert torch.equal(out[:, :, 8:], 0.5 * nxt[:, :, 8:] + 0.5 * data[:, :, 8:])
    # and the module: interlaced channels are the interpolation, the rest pass through
    y = tin(x)
    xd = x[:, :16].reshape(2, 8, 16, 3, 3)
    off = torch.cat([o, -o], 1)
    assert torch.equal(y[:, 16:], x[:, 16:])
    torch.testing.assert_close(y[:, :16], linear_sampler(xd, off).reshape(16, 16, 3, 3))


def _tin_as_written(tin: TemporalInterlace, x: torch.Tensor) -> torch.Tensor:
    """The block as MMAction2's resnet_tin.py computes it (MMAction2's order of operations): Conv1d
    nets over (B, F, T), two shifts, interpolation, then the gates."""
    import torch.nn.functional as F

    from vidtempo.ops import tin_shift

    nt, c, h, w = x.shape
    t, f = tin.num_segments, tin.fold
    xd = x[:, :f].reshape(nt // t, t, f, h * w)
    s = xd.mean(-1).permute(0, 2, 1)  # (B, F, T)
    on, wn = tin.offset_net, tin.weight_net
    z = F.conv1d(s, on.conv.weight, on.conv.bias, padding=1).flatten(1)
    o = 4 * (torch.sigmoid(on.fc2(torch.relu(on.fc1(z)))) - 0.5)
    gate = 2 * torch.sigmoid(F.conv1d(s, wn.conv.weight, wn.conv.bias, padding=1)).permute(0, 2, 1)
    off = torch.cat([o, -o], 1)
    k0 = off.detach().floor().int()
    lam = (off - k0).repeat_interleave(f // 4, 1)[:, None, :, None]
    shifted = (1 - lam) * tin_shift(xd, k0) + lam * tin_shift(xd, k0 + 1)
    y = shifted * gate[:, :, [0, 1, 0, 1]].repeat_interleave(f // 4, 2)[..., None]
    return torch.cat([y.reshape(nt, f, h, w), x[:, f:]], 1)


@pytest.mark.parametrize("channels,shift_div,size", [(16, 4, 8), (64, 4, 3), (256, 8, 1)])
def test_tin_block_equals_the_block_as_written(channels, shift_div, size):
    """The fast block (shared columns, one shift call, folded scalars) computes the written
    one: outputs and every gradient equal to float32 rounding, random offsets and gates."""
    torch.manual_seed(channels)
    tin = TemporalInterlace(channels, num_segments=8, shift_div=shift_div)
    with torch.no_grad():  # offsets spread over (-2, 2), gates away from 1
        for p in tin.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2 * 8, channels, size, size, requires_grad=True)
    grad = torch.randn(2 * 8, channels, size, size)
    fast = tin(x)
    (gx_fast, *gp_fast) = torch.autograd.grad(fast, [x, *tin.parameters()], grad)
    slow = _tin_as_written(tin, x)
    (gx_slow, *gp_slow) = torch.autograd.grad(slow, [x, *tin.parameters()], grad)
    # float32 rounding: the two sum in different orders, and oneDNN picks its kernels by CPU
    # (1.8e-6 apart on an AMD EPYC, within 1e-6 on the Intel Xeons before)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_fast, gx_slow, rtol=1e-5, atol=1e-5)
    for a, b in zip(gp_fast, gp_slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_tin_offsets_and_gates_stay_fp32_under_bf16_autocast():
    """run.precision bf16 autocasts the model; TIN's offset and gate branch runs in fp32 all the
    same: its offsets equal those of the fp32 forward to fp32 rounding (in bf16 they moved by
    up to ~1e-2 of a frame)."""
    torch.manual_seed(0)
    block = TemporalInterlace(64, 8, 4)
    x = torch.randn(2 * 8, 64, 4, 4)
    seen = []
    block.offset_net.register_forward_hook(lambda m, i, o: seen.append(o))
    block.weight_net.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        block(x)
        with torch.autocast("cpu", torch.bfloat16):
            block(x)
    (o32, w32, o16, w16) = seen
    assert o16.dtype == torch.float32 and w16.dtype == torch.float32
    torch.testing.assert_close(o16, o32)
    torch.testing.assert_close(w16, w32)


def test_tin_offset_gradient_is_d1_minus_d0():
    data = torch.randn(1, 4, 4, 2)
    off = torch.tensor([[0.3, 1.6, -0.2, -1.7]], requires_grad=True)
    out = linear_sampler(data.view(1, 4, 4, 2, 1), off)
    out.sum().backward()
    k0 = off.detach().floor().int()
    from vidtempo.ops import tin_shift

    diff = tin_shift(data, k0 + 1) - tin_shift(data, k0)  # (1, T, F, HW), one channel per group
    torch.testing.assert_close(off.grad, diff.sum(dim=(1, 3)))


def test_tam_equals_a_direct_loop():
    torch.manual_seed(0)
    b, t, c, h, w = 2, 5, 8, 2, 3
    tam = TAM(c, t).eval()
    x = torch.randn(b * t, c, h, w)
    y = tam(x)
    xv = x.view(b, t, c, h, w)
    theta = xv.mean(dim=(3, 4)).permute(0, 2, 1)  # (B, C, T)
    kernel = tam.global_branch(theta.reshape(b * c, t)).view(b, c, 3)
    excite = tam.local_branch(theta)  # (B, C, T)
    want = torch.zeros(b, t, c, h, w)
    for v in range(b):
        for ch in range(c):
            for tt in range(t):
                for k in range(3):
                    src = tt + k - 1
                    if 0 <= src < t:
                        want[v, tt, ch] += kernel[v, ch, k] * excite[v, ch, src] * xv[v, src, ch]
    torch.testing.assert_close(y.view(b, t, c, h, w), want, atol=1e-6, rtol=1e-5)


def test_tpn_stage_shapes_at_224():
    with FakeTensorMode():
        backbone = ResNet3dSlowOnly(50)
        res4, res5 = backbone(torch.empty(2, 3, 8, 224, 224))
        assert tuple(res4.shape) == (2, 1024, 8, 14, 14)
        assert tuple(res5.shape) == (2, 2048, 8, 7, 7)
        neck = TPN(num_classes=400).train()
        s4 = neck.spatial[0](res4)
        assert tuple(s4.shape) == (2, 2048, 8, 7, 7)
        m4 = neck.temporal[0](s4)
        assert tuple(m4.shape) == (2, 1024, 8, 7, 7)
        out, aux = neck((res4, res5), torch.zeros(2, dtype=torch.long))
        assert tuple(out.shape) == (2, 2048, 1, 7, 7)
        assert aux is not None and aux.dim() == 0
        neck.eval()
        assert neck((res4, res5), torch.zeros(2, dtype=torch.long))[1] is None


def test_tpn_aux_loss_is_half_weighted_cross_entropy():
    torch.manual_seed(0)
    neck = TPN(num_classes=5).train()
    res4, res5 = torch.randn(2, 1024, 8, 4, 4), torch.randn(2, 2048, 8, 2, 2)
    labels = torch.tensor([1, 3])
    torch.manual_seed(1)
    _, aux = neck((res4, res5), labels)
    torch.manual_seed(1)
    head = neck.aux_head
    logits = head.fc(
        head.dropout(torch.nn.functional.adaptive_avg_pool3d(head.conv(res4), 1).flatten(1))
    )
    torch.testing.assert_close(aux, 0.5 * torch.nn.functional.cross_entropy(logits, labels))


def test_prob_vs_score_averaging():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])  # 2 videos x 2 views
    prob = average_views(scores, 2, "prob")
    score = average_views(scores, 2, "score")
    sm = torch.softmax(scores, dim=1)
    torch.testing.assert_close(prob, torch.stack([sm[:2].mean(0), sm[2:].mean(0)]))
    torch.testing.assert_close(score, torch.tensor([[1.0, 0.5], [2.0, 0.5]]))
    assert average_views(scores, 2, "none").shape == (2, 2, 2)
    # one confident view outvotes three by mean score, not by mean probability
    s = torch.tensor([[10.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])  # 1 video, 4 views
    assert average_views(s, 4, "score").argmax().item() == 0
    assert average_views(s, 4, "prob").argmax().item() == 1


def _regression_output(name):
    cfg = C.load(name)
    torch.manual_seed(0)
    model = M.build(cfg).eval()
    t = cfg.model.num_segments
    g = torch.Generator().manual_seed(1)
    if cfg.model.arch == "tpn_slowonly_r50":
        x = torch.randn(2, 1, 3, t, 64, 64, generator=g)
    else:
        x = torch.randn(2, t, 3, 64, 64, generator=g)
    with torch.no_grad():
        out = model(x)
    return out.reshape(2, -1)[:, :6]


@pytest.mark.parametrize("name", C.zoo_names())
def test_seeded_output_regression(name):
    pinned = json.loads(PINNED.read_text())
    torch.testing.assert_close(
        _regression_output(name), torch.tensor(pinned[name]), rtol=1e-4, atol=1e-6
    )


def test_torchvision_resnet50_state_dict_loads_strictly():
    tv = torchvision.models.resnet50()  # random weights: nothing is downloaded
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    tsn = M.build(C.override(C.load("tin_r50_1x1x8_40e_sthv1_rgb"), {"model.arch": "tsn_r50"}))
    tsn.backbone.load_state_dict(sd, strict=True)
    tin = M.build(C.load("tin_r50_1x1x8_40e_sthv1_rgb"))
    fresh = load_torchvision_weights(tin.backbone, tv.state_dict())
    assert fresh and all(".temporal." in k for k in fresh)
    assert torch.equal(tin.backbone.layer3[2].conv1.weight, tv.layer3[2].conv1.weight)
    bad = dict(tv.state_dict())
    bad["layer1.0.conv9.weight"] = bad.pop("layer1.0.conv1.weight")
    with pytest.raises(KeyError, match="layer1.0.conv9.weight"):
        load_torchvision_weights(tin.backbone, bad)


def test_inflated_imagenet_weights_for_slowonly():
    tv = torchvision.models.resnet50()
    backbone = ResNet3dSlowOnly(50)
    load_inflated_weights(backbone, tv.state_dict())
    w2d = tv.layer3[0].conv1.weight  # (256, 512, 1, 1) inflated to (256, 512, 3, 1, 1) / 3
    w3d = backbone.layer3[0].conv1.weight
    assert w3d.shape == (256, 512, 3, 1, 1)
    torch.testing.assert_close(w3d.sum(dim=2), w2d)
    torch.testing.assert_close(backbone.conv1.weight[:, :, 0], tv.conv1.weight)


def _to_mmaction2(our_key: str, arch: str) -> str:
    """Our key → the MMAction2 1.x key, written out independently of the importer."""
    import re

    k = re.sub(r"^head\.fc\.", "cls_head.fc_cls.", our_key)
    k = re.sub(r"^backbone\.conv1\.", "backbone.conv1.conv.", k)
    k = re.sub(r"^backbone\.bn1\.", "backbone.conv1.bn.", k)
    m = re.match(r"^backbone\.(layer\d+\.\d+)\.(.*)$", k)
    if m:
        block, rest = m.groups()
        if rest.startswith("temporal."):
            sub = rest[len("temporal.") :]
            if arch == "tanet_r50":
                sub = sub.replace("global_branch.", "G.").replace("local_branch.", "L.")
                return f"backbone.{block}.tam.{sub}"
            return f"backbone.{block}.conv1.conv.net1.{sub}"
        rest = re.sub(r"^conv1\.weight$", {"tin_r50": "conv1.conv.net2.weight",
                                           "tpn_tsm_r50": "conv1.conv.net.weight"}.get(arch, "conv1.conv.weight"), rest)  # fmt: skip
        rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.conv.weight", rest)
        rest = re.sub(r"^bn(\d)\.", r"conv\1.bn.", rest)
        rest = rest.replace("downsample.0.", "downsample.conv.").replace(
            "downsample.1.", "downsample.bn."
        )
        prefix = f"backbone.{block}." + ("block." if arch == "tanet_r50" else "")
        return prefix + rest
    k = re.sub(
        r"^neck\.spatial\.(\d)\.(\d)\.0\.",
        r"neck.spatial_modulation.spatial_modulation.\1.\2.conv.",
        k,
    )
    k = re.sub(
        r"^neck\.spatial\.(\d)\.(\d)\.1\.",
        r"neck.spatial_modulation.spatial_modulation.\1.\2.bn.",
        k,
    )
    k = re.sub(r"^neck\.temporal\.(\d)\.", r"neck.temporal_modulation_ops.\1.conv.conv.", k)
    k = re.sub(r"^neck\.downsample\.", "neck.downsample_ops.0.conv.conv.", k)
    k = k.replace("level_fusion_td.", "level_fusion_1.").replace(
        "level_fusion_bu.", "level_fusion_2."
    )
    k = re.sub(r"\.ops\.(\d)\.0\.", r".downsamples.\1.conv.conv.", k)
    k = re.sub(r"\.ops\.(\d)\.1\.", r".downsamples.\1.conv.bn.", k)
    k = re.sub(r"\.fusion\.0\.", ".fusion_conv.conv.", k).replace(".fusion.1.", ".fusion_conv.bn.")
    k = k.replace("pyramid_fusion.0.", "pyramid_fusion.conv.").replace(
        "pyramid_fusion.1.", "pyramid_fusion.bn."
    )
    return k.replace("aux_head.conv.0.", "aux_head.conv.conv.").replace(
        "aux_head.conv.1.", "aux_head.conv.bn."
    )


@pytest.mark.parametrize(
    "name",
    [
        "tin_r50_1x1x8_40e_sthv1_rgb",
        "tanet_r50_1x1x8_50e_sthv1_rgb",
        "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb",
        "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb",
    ],
)
def test_mmaction2_checkpoint_round_trips_through_the_importer(name, tmp_path):
    cfg = C.load(name)
    torch.manual_seed(0)
    source = M.build(cfg)
    mm = {_to_mmaction2(k, cfg.model.arch): v for k, v in source.state_dict().items()}
    assert any(".fc_cls." in k for k in mm)
    src = tmp_path / "mm.pth"
    torch.save({"meta": {"epoch": 40}, "state_dict": mm}, src)
    torch.manual_seed(1)
    target = M.build(cfg)
    import_mmaction2(src, tmp_path / "ours.pt", target, cfg.name)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    saved = torch.load(tmp_path / "ours.pt", weights_only=True)  # our checkpoints: tensors only
    assert saved["config"] == name and len(saved["state_dict"]) == len(mm)
    # a wrong key is named, and so is the model key it leaves empty
    wrong = dict(mm)
    key = next(k for k in wrong if k.endswith("conv2.conv.weight"))
    wrong[key.replace("conv2.conv", "conv2.cnv")] = wrong.pop(key)
    with pytest.raises(CheckpointMismatch, match=r"conv2\.cnv\.weight") as err:
        convert_mmaction2(wrong, target)
    assert key.replace(".conv2.conv.", ".conv2.").replace(".block.", ".") in str(err.value)


def test_import_checkpoint_cli(tmp_path, capsys):
    from vidtempo import cli

    cfg = C.load("tin_r50_1x1x8_40e_sthv1_rgb")
    sd = {_to_mmaction2(k, "tin_r50"): v for k, v in M.build(cfg).state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "in.pth")
    assert cli.main(["import-checkpoint", cfg.name, str(tmp_path / "in.pth"),
                     str(tmp_path / "out.pt")]) == 0  # fmt: skip
    assert "strict" in capsys.readouterr().out
    # the old form: the source first, the recipe as --config (one line says what changed)
    assert cli.main(["import-checkpoint", "mmaction2", str(tmp_path / "in.pth"),
                     str(tmp_path / "out.pt"), "--config", cfg.name]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "strict" in out.out and "--config is now the first argument" in out.err
    # the old form without --config: what to type instead, not "unknown recipe"
    assert cli.main(["import-checkpoint", "mmaction2", str(tmp_path / "in.pth"),
                     str(tmp_path / "out.pt")]) == 2  # fmt: skip
    assert "vidtempo import-checkpoint RECIPE IN.pth OUT.pt" in capsys.readouterr().err
    del sd["cls_head.fc_cls.bias"]
    torch.save({"state_dict": sd}, tmp_path / "in.pth")
    assert cli.main(["import-checkpoint", cfg.name, str(tmp_path / "in.pth"),
                     str(tmp_path / "out.pt")]) == 2  # fmt: skip
    assert "head.fc.bias" in capsys.readouterr().err


def test_channels_last_gives_the_same_output():
    cfg = C.load("tin_r50_1x1x8_40e_sthv1_rgb")
    torch.manual_seed(0)
    model = M.build(cfg).eval()
    x = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(
            x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(1, 8, 3, 64, 64)
        )
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", C.zoo_names())
def test_every_zoo_model_takes_a_step_through_the_gpu_path_on_cpu(name):
    """What a GPU worker does to a model and its input (train/worker.py, loop.py): 2D weights
    channels_last (3D weights as they are: SlowOnly's and TPN's Conv3d raise on that format),
    the input channels-innermost, the step under bf16 autocast — here on the CPU, tiny inputs."""
    import numpy as np

    from vidtempo.train.optim import build_optimizer
    from vidtempo.train.step import channels_last, norm_tensors, normalise, train_step

    cfg = C.load(name)
    torch.manual_seed(0)
    model = channels_last(M.build(cfg).train())
    dims = {p.dim() for p in model.parameters()}
    for p in model.parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
    assert (5 in dims) == ("slowonly" in cfg.model.arch or "tpn" in cfg.model.arch)
    opt = build_optimizer(model, cfg.optim, cfg.effective_lr)
    t = cfg.model.num_segments
    shape = (2, 1, 3, t, 64, 64) if cfg.data.train.format == "NCTHW" else (2, t, 3, 64, 64)
    mean, std = norm_tensors(cfg, torch.device("cpu"))
    x = normalise(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), mean, std,
                  torch.device("cpu"), channels_last=True)  # fmt: skip
    y, ok = torch.tensor([0, 1]), torch.tensor([True, True])
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = train_step(model, opt, x, y, ok, cfg.optim.grad_clip,
                      [p for p in model.parameters() if p.requires_grad], bf16=True)  # fmt: skip
    assert torch.isfinite(loss)
    after = [p for p in model.parameters() if p.requires_grad]
    assert sum(not torch.equal(a, b) for a, b in zip(after, before)) > len(before) // 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["tsm", "tin_r50_1x1x8_40e_sthv1_rgb", "tanet_r50_1x1x8_50e_sthv1_rgb"]
)
def test_torch_compile_gives_equal_outputs(name):
    if name == "tsm":
        cfg = C.override(
            C.load("tin_r50_1x1x8_40e_sthv1_rgb"), {"model.arch": "tsm_r50", "model.shift_div": 8}
        )
    else:
        cfg = C.load(name)
    torch.manual_seed(0)
    model = M.build(cfg).eval()
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(
        json.dumps({n: _regression_output(n).tolist() for n in C.zoo_names()}, indent=1)
    )
    print(f"wrote {PINNED}")


# ---- diagnostics of the temporal modules --------------------------------------------------------


def _small(arch):
    return M.build(C.load("tin_r18_synthetic", [f"model.arch={arch}", "model.width=16"]))


def test_probe_reports_per_stage_statistics_and_nothing_for_tsn():
    from vidtempo.models.diagnostics import TemporalProbe

    x = torch.randn(2, 8, 3, 32, 32)
    tin, tanet, tsn = _small("tin_r50"), _small("tanet_r50"), _small("tsn_r50")
    probe = TemporalProbe(tin)
    probe.start()
    tin(x)
    stats = probe.stop()
    assert sorted(stats) == sorted(f"tin/{k}/layer{i}" for k in ("offset_abs", "gate_std")
                                   for i in range(1, 5))  # fmt: skip
    # offsets start near 0.5 (OffsetNet's bias; its random weights add a data-dependent term)
    assert all(0.2 < stats[f"tin/offset_abs/layer{i}"] < 0.8 for i in range(1, 5))
    assert all(stats[f"tin/gate_std/layer{i}"] < 0.5 for i in range(1, 5))  # gates start near 1
    probe = TemporalProbe(tanet)
    probe.start()
    tanet(x)
    assert sorted(probe.stop()) == [f"tam/asymmetry/layer{i}" for i in range(1, 5)]
    assert not TemporalProbe(tsn)
    # inactive between start/stop: forward passes outside do not count
    probe = TemporalProbe(tin)
    tin(x)
    assert probe.stop() == {}


def test_tam_asymmetry_is_zero_for_symmetric_kernels_and_one_for_one_sided():
    from vidtempo.models.diagnostics import TemporalProbe

    tam = TAM(16, 8)
    probe = TemporalProbe(nn_wrap := torch.nn.Sequential(tam))  # a "stage"-less module name
    x = torch.randn(16, 16, 4, 4)
    torch.nn.init.zeros_(tam.global_branch[3].weight)  # softmax of zeros: taps 1/3 each
    probe.start()
    nn_wrap(x)
    assert probe.stop() == {"tam/asymmetry/0": pytest.approx(0.0)}
    with torch.no_grad():  # all weight on the first tap: |1 - 0| = 1
        tam.global_branch[3].weight.zero_()
        tam.global_branch[3].weight[0] = 1e4
        tam.global_branch.eval()
    probe.start()
    tam.global_branch(torch.ones(4, 8))
    assert probe.stop()["tam/asymmetry/0"] == pytest.approx(1.0)


def test_tin_offsets_receive_gradients_and_move_in_a_short_training_run():
    """A two-class order task: a bright frame early or late. The offsets' parameters get a
    gradient, and after a few SGD steps the offsets a block produces have moved."""
    from vidtempo.models.diagnostics import TemporalProbe, offset_histograms, offsets_moved

    torch.manual_seed(0)
    model = M.build(C.load("tin_r18_synthetic", ["model.width=16", "model.num_classes=2",
                                                 "model.dropout=0.0"]))  # fmt: skip
    x = torch.randn(8, 8, 3, 32, 32) * 0.1
    y = torch.tensor([0, 1] * 4)
    x[y == 0, 1] += 2.0  # class 0: a bright frame early
    x[y == 1, 6] += 2.0  # class 1: late
    probe = TemporalProbe(model)
    probe.start(collect=True)
    model.eval()
    with torch.no_grad():
        model(x)
    before = probe.collected_offsets()
    probe.stop()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        fc2 = model.backbone.layer1[0].temporal.offset_net.fc2
        if step == 0:
            assert fc2.bias.grad is not None and fc2.bias.grad.abs().sum() > 0
            assert fc2.weight.grad.abs().sum() > 0
        opt.step()
    probe.start(collect=True)
    model.eval()
    with torch.no_grad():
        model(x)
    after = probe.collected_offsets()
    stats = probe.stop()
    moved = max((after[b] - before[b]).abs().max().item() for b in before)
    assert moved > 0.01
    assert isinstance(offsets_moved(stats)[0], bool) and "→" in offsets_moved(stats)[1]
    fig = offset_histograms(after)
    assert len([ax for ax in fig.axes if ax.has_data()]) == len(after) == 8


def test_the_tpn_neck_follows_its_trunk_and_the_yaml_can_widen_it():
    """ResNet-50 (res4 1024, res5 2048) keeps the zoo's neck; the synthetic R18 of width 16
    (64, 128) gets one as narrow; model.tpn_channels / tpn_fusion_channels override."""
    zoo = M.build(C.load("tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb"))
    assert zoo.backbone.stage_channels[2:] == (1024, 2048)
    assert zoo.neck.temporal[0].out_channels == 1024 and zoo.neck.out_channels == 2048
    assert zoo.head.fc.in_features == 2048
    small = M.build(C.load("tpn_tsm_r18_synthetic"))
    assert small.backbone.stage_channels[2:] == (64, 128)
    assert small.neck.temporal[0].out_channels == 64 and small.neck.out_channels == 128
    assert small.neck.aux_head.fc.in_features == 128 and small.head.fc.in_features == 128
    wide = M.build(C.load("tpn_tsm_r18_synthetic",
                          ["model.tpn_channels=96", "model.tpn_fusion_channels=160"]))  # fmt: skip
    assert wide.neck.temporal[0].out_channels == 96 and wide.head.fc.in_features == 160
    assert M.count_parameters(small) < M.count_parameters(wide) < 2_000_000
    with pytest.raises(C.ConfigError, match="model.tpn_channels"):
        C.load("tpn_tsm_r18_synthetic", ["model.tpn_channels=0"])
    small.train()
    scores, aux = small(torch.randn(2, 8, 3, 32, 32), torch.tensor([0, 5]))
    assert scores.shape == (2, 12) and aux.item() > 0


def test_the_probe_reads_tpn_aux_head_and_levels():
    from vidtempo.models.diagnostics import TemporalProbe

    torch.manual_seed(0)
    model = M.build(C.load("tpn_tsm_r18_synthetic")).train()
    probe = TemporalProbe(model)
    probe.start()
    x, y = torch.randn(4, 8, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    _, aux = model(x, y)
    stats = probe.stop()
    assert stats["tpn/aux_loss"] == pytest.approx(aux.item() / 0.5, rel=1e-5)
    assert 0 <= stats["tpn/aux_top1"] <= 100
    assert sorted(k for k in stats if "level_rms" in k) == [
        f"tpn/level_rms/{w}{i}" for w in ("bu", "td") for i in (0, 1)]
    assert all(stats[k] > 0 for k in stats if "level_rms" in k)


def test_check_holds_every_model_shape_rule_before_a_run():
    """models.check on the meta device: every zoo and synthetic recipe passes; a shift_div
    that does not divide a shifted width, TIN's four offset groups and TAM's three frames are
    ConfigErrors that name the setting."""
    for name in C.zoo_names():
        M.check(C.load(name))
    for name in ("tin_r18_synthetic", "tsm_r18_synthetic", "tanet_r18_synthetic",
                 "tpn_tsm_r18_synthetic", "tsn_r18_synthetic"):  # fmt: skip
        M.check(C.load(name))
    with pytest.raises(C.ConfigError, match=r"model.shift_div=3 does not divide the channel counts"):
        M.check(C.load("tsm_r18_synthetic", ["model.shift_div=3"]))
    with pytest.raises(C.ConfigError, match="model.shift_div=8: TIN needs"):
        M.check(C.load("tin_r18_synthetic", ["model.shift_div=8"]))  # 16/8 = 2 channels, 4 groups
    with pytest.raises(C.ConfigError, match="model.arch=tanet_r50: TAM needs at least 3 frames"):
        M.check(C.load("tanet_r50_1x1x8_50e_sthv1_rgb", ["model.num_segments=2"]))


def test_a_recipe_naming_an_unknown_zoo_config_is_refused_when_loaded():
    with pytest.raises(C.ConfigError, match="did you mean 'tin_r50_1x1x8_40e_sthv1_rgb'"):
        C.load("tin_r18_synthetic", ["zoo_config=tin_r50_1x1x8_40e_sthv1_rgx"])
    assert C.zoo_reference(C.load("tin_r18_synthetic"))[0] == "tin_r50_1x1x8_40e_sthv1_rgb"
