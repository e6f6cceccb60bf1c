"""Typed configs, the zoo registry and the linear scaling rule."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from vidtempo import cli
from vidtempo import config as C

# The zoo tables in shared/seeds (top1, top5 per protocol; the "reference" columns) and the
# parameter counts and FLOPs of the zoo metafiles, typed in independently of the YAML files.
ZOO = {
    "tin_r50_1x1x8_40e_sthv1_rgb": dict(
        results={"1x1": (44.25, 73.94)},
        original=(44.04, 72.72),
        gpu_mem=6181,
        gpus="8x4",
        params=23_895_566,
        flops=32_962_097_536,
        classes=174,
        frames=8,
    ),
    "tin_r50_1x1x8_40e_sthv2_rgb": dict(
        results={"1x1": (56.70, 83.62)},
        original=(56.48, 83.45),
        gpu_mem=6185,
        gpus="8x4",
        params=23_895_566,
        flops=32_962_097_536,
        classes=174,
        frames=8,
    ),
    "tin_tsm_finetune_r50_1x1x8_50e_kinetics400_rgb": dict(
        results={"1x1": (70.89, 89.89)},
        original=None,
        gpu_mem=6187,
        gpus="8x4",
        params=24_358_640,
        flops=32_965_800_320,
        classes=400,
        frames=8,
    ),
    "tanet_r50_dense_1x1x8_100e_kinetics400_rgb": dict(
        results={"10x3": (76.28, 92.60)},
        original=(76.22, 92.53),
        gpu_mem=7124,
        gpus="8",
        params=25_590_320,
        flops=43_065_983_104,
        classes=400,
        frames=8,
    ),
    "tanet_r50_1x1x8_50e_sthv1_rgb": dict(
        results={"1x1": (47.34, 75.72), "2x3": (49.58, 77.31)},
        original=None,
        gpu_mem=7127,
        gpus="8",
        params=25_127_246,
        flops=32_972_787_840,
        classes=174,
        frames=8,
    ),
    "tanet_r50_1x1x16_50e_sthv1_rgb": dict(
        results={"1x1": (49.05, 77.90), "2x3": (50.91, 79.13)},
        original=None,
        gpu_mem=7127,
        gpus="8",
        params=25_134_670,
        flops=65_946_542_336,
        classes=174,
        frames=16,
    ),
    "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb": dict(
        results={"10x3": (74.20, 91.48)},
        original=None,
        gpu_mem=6916,
        gpus="8x2",
        params=91_498_336,
        flops=66_014_576_640,
        classes=400,
        frames=8,
    ),
    "tpn-slowonly_imagenet-pretrained-r50_8xb8-8x8x1-150e_kinetics400-rgb": dict(
        results={"10x3": (76.74, 92.57)},
        original=(75.49, 92.05),
        gpu_mem=6916,
        gpus="8",
        params=91_498_336,
        flops=66_014_576_640,
        classes=400,
        frames=8,
    ),
    "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb": dict(
        results={"2x3": (51.87, 79.67)},
        original=None,
        gpu_mem=8828,
        gpus="8x6",
        params=82_445_724,
        flops=54_202_822_656,
        classes=174,
        frames=8,
    ),
}

TIN = "tin_r50_1x1x8_40e_sthv1_rgb"


def test_the_zoo_holds_exactly_the_nine_configs():
    assert C.zoo_names() == sorted(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_config_matches_the_seed_tables(name):
    cfg = C.load(name)
    want = ZOO[name]
    assert cfg.name == name
    ref = cfg.reference
    assert {r.protocol: (r.top1, r.top5) for r in ref.results} == want["results"]
    got_original = None if ref.original_top1 is None else (ref.original_top1, ref.original_top5)
    assert got_original == want["original"]
    assert (ref.params, ref.flops, ref.gpu_mem_mb, ref.zoo_gpus) == (
        want["params"],
        want["flops"],
        want["gpu_mem"],
        want["gpus"],
    )
    assert cfg.model.num_classes == want["classes"]
    assert cfg.model.num_segments == want["frames"]
    # every published protocol is one the config's val or test pipeline runs
    assert set(want["results"]) <= {C.protocol(cfg.data.val), C.protocol(cfg.data.test)}
    # the samplers draw as many frames per clip as the model is built for
    for pipe in (cfg.data.train, cfg.data.val, cfg.data.test):
        s = pipe.sampler
        assert (s.clip_len if s.kind == "clips" else s.num_clips) == cfg.model.num_segments


def test_recipe_details_from_models_md():
    tin = C.load(TIN)
    assert (tin.optim.lr, tin.optim.weight_decay, tin.optim.grad_clip) == (0.02, 5e-4, 20.0)
    assert (tin.model.shift_div, tin.model.dropout, tin.data.train.flip_ratio) == (4, 0.8, 0.0)
    assert (tin.schedule.kind, tin.schedule.min_lr_ratio, tin.schedule.warmup_epochs) == (
        "cosine",
        0.5,
        1.0,
    )
    assert tin.reference_global_batch == 48
    tanet = C.load("tanet_r50_1x1x8_50e_sthv1_rgb")
    assert tanet.data.flip_label_map == {2: 4, 4: 2, 30: 41, 41: 30, 52: 66, 66: 52}
    assert tanet.data.train.crop.num_fixed_crops == 13
    assert tanet.schedule.steps == (30, 40, 45)
    tpn = C.load("tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb")
    assert tpn.optim.nesterov and not tpn.optim.paramwise and tpn.optim.grad_clip == 40.0
    assert tpn.model.aux_loss_weight == 0.5 and tpn.model.fcn_test
    assert tpn.model.pretrained == "none"
    assert tpn.data.val.color_jitter == "jitter"  # the recipe's val pipeline jitters


def _write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _tin_dict():
    return yaml.safe_load((C.CONFIG_DIR / f"{TIN}.yaml").read_text())


def test_misspelled_key_names_key_file_and_closest_valid_key(tmp_path):
    data = _tin_dict()
    data["optim"]["lrr"] = data["optim"].pop("lr")
    path = _write(tmp_path, data)
    with pytest.raises(C.ConfigError) as err:
        C.load(path)
    msg = str(err.value)
    assert "'optim.lrr'" in msg and str(path) in msg and "did you mean 'optim.lr'" in msg


def test_misspelled_top_level_and_nested_pipeline_keys(tmp_path):
    data = _tin_dict()
    data["schedul"] = data.pop("schedule")
    with pytest.raises(C.ConfigError, match=r"unknown key 'schedul'.*did you mean 'schedule'"):
        C.load(_write(tmp_path, data))
    data = _tin_dict()
    data["data"]["train"]["sampler"]["num_clip"] = 8
    with pytest.raises(C.ConfigError, match=r"data\.train\.sampler\.num_clip.*num_clips"):
        C.load(_write(tmp_path, data))


def test_wrong_type_names_key_expected_type_and_file(tmp_path):
    data = _tin_dict()
    data["optim"]["lr"] = "fast"
    path = _write(tmp_path, data)
    with pytest.raises(C.ConfigError) as err:
        C.load(path)
    msg = str(err.value)
    assert "optim.lr" in msg and "expected float" in msg and "'fast'" in msg and str(path) in msg
    data = _tin_dict()
    data["train"]["epochs"] = 40.5
    with pytest.raises(C.ConfigError, match=r"train\.epochs: expected int, got float"):
        C.load(_write(tmp_path, data))
    data = _tin_dict()
    data["model"]["average_clips"] = "mean"
    with pytest.raises(C.ConfigError, match=r"model\.average_clips: expected 'prob' \| 'score'"):
        C.load(_write(tmp_path, data))
    data = _tin_dict()
    data["model"]["norm_eval"] = "no"
    with pytest.raises(C.ConfigError, match=r"model\.norm_eval: expected bool"):
        C.load(_write(tmp_path, data))


def test_missing_required_key(tmp_path):
    data = _tin_dict()
    del data["model"]["num_classes"]
    path = _write(tmp_path, data)
    with pytest.raises(
        C.ConfigError, match=r"missing required key 'model\.num_classes' in .*cfg\.yaml"
    ):
        C.load(path)


def test_unknown_zoo_name_suggests_the_closest():
    with pytest.raises(C.ConfigError, match="did you mean 'tin_r50_1x1x8_40e_sthv1_rgb'"):
        C.load("tin_r50_1x1x8_40e_sthv1")


def test_dotted_overrides_are_checked_like_the_file():
    cfg = C.load(TIN, ["optim.lr=0.005", "run.num_workers=4", "data.train.flip_ratio=0.5"])
    assert cfg.optim.lr == 0.005 and cfg.run.num_workers == 4
    assert cfg.data.train.flip_ratio == 0.5
    with pytest.raises(
        C.ConfigError, match=r"unknown key 'optim\.lrate'.*did you mean 'optim\.lr'"
    ):
        C.load(TIN, ["optim.lrate=0.1"])
    with pytest.raises(C.ConfigError, match=r"optim\.lr: expected float"):
        C.load(TIN, ["optim.lr=fast"])
    with pytest.raises(C.ConfigError, match="key=value"):
        C.load(TIN, ["optim.lr"])
    # override() on a loaded config gives a new frozen config, the old one untouched
    base = C.load(TIN)
    new = C.override(base, {"model.shift_div": 8})
    assert (base.model.shift_div, new.model.shift_div) == (4, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.model.shift_div = 2


@pytest.mark.parametrize("name", sorted(ZOO))
def test_flatten_round_trips(name):
    cfg = C.load(name)
    flat = C.flatten(cfg)
    assert flat["optim.lr"] == cfg.optim.lr
    assert flat["data.train.sampler.num_clips"] == cfg.data.train.sampler.num_clips
    assert all(
        not isinstance(v, dict) or not v or isinstance(next(iter(v)), int) for v in flat.values()
    )
    assert C.from_dict(C.unflatten(flat)) == cfg
    assert C.override(cfg, flat) == cfg
    # and through YAML text, as the tune driver writes a best config
    assert C.from_dict(yaml.safe_load(C.dump_yaml(cfg))) == cfg


def test_diff_names_changed_keys():
    base = C.load(TIN)
    other = C.override(base, ["optim.lr=0.01", "model.shift_div=8"])
    assert C.diff(base, other) == {"model.shift_div": (4, 8), "optim.lr": (0.02, 0.01)}


def test_linear_scaling_rule_on_the_zoo_examples():
    # the zoo README: lr 0.01 for 8 GPUs x 8 videos -> 0.005 for 4 x 8
    assert C.scaled_lr(0.01, 4 * 8, 8 * 8) == pytest.approx(0.005)
    # and "lr=0.01 for 4 GPUs x 2 video/gpu and lr=0.08 for 16 GPUs x 4 video/gpu"
    assert C.scaled_lr(0.01, 16 * 4, 4 * 2) == pytest.approx(0.08)
    with pytest.raises(C.ConfigError):
        C.scaled_lr(0.01, 0, 64)
    # every config exposes both batches and the effective lr of its run settings
    tanet = C.load("tanet_r50_1x1x8_50e_sthv1_rgb", ["run.num_workers=4"])
    assert tanet.reference_global_batch == 64 and tanet.global_batch == 32
    assert tanet.effective_lr == pytest.approx(0.005)
    tin = C.load(TIN, ["run.num_workers=2", "run.batch_per_worker=3"])
    assert tin.global_batch == 6 and tin.effective_lr == pytest.approx(0.02 * 6 / 48)


def test_protocol_names():
    tanet = C.load("tanet_r50_1x1x8_50e_sthv1_rgb")
    assert (C.protocol(tanet.data.val), C.protocol(tanet.data.test)) == ("1x1", "2x3")
    dense = C.load("tanet_r50_dense_1x1x8_100e_kinetics400_rgb")
    assert (C.protocol(dense.data.val), C.protocol(dense.data.test)) == ("10x1", "10x3")


def test_cli_zoo_list_prints_every_config(capsys):
    assert cli.main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ZOO:
        assert name in out
    assert "44.25/73.94@1x1" in out and "23,895,566" in out


def test_cli_zoo_show_prints_resolved_config_and_numbers(capsys):
    assert cli.main(["zoo", "show", TIN, "--set", "run.num_workers=4"]) == 0
    out = capsys.readouterr().out
    assert "arch: tin_r50" in out and "44.25 / 73.94" in out and "44.04 / 72.72" in out
    assert "reference global batch 48" in out and "effective lr 0.01 at global batch 24" in out


def test_cli_config_validate(tmp_path, capsys):
    assert cli.main(["config", "validate", str(C.CONFIG_DIR / f"{TIN}.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    data = _tin_dict()
    data["model"]["shiftdiv"] = 4
    path = _write(tmp_path, data)
    assert cli.main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.shiftdiv'" in err and "did you mean 'model.shift_div'" in err


def test_the_installed_command_exits_with_mains_status(tmp_path):
    """The `vidtempo` script (cli.script: main, then an exit without the last collections)
    passes main's exit status and its error line through, and prints what main printed."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "vidtempo"
    exe = str(exe) if exe.exists() else shutil.which("vidtempo")
    assert exe, "the vidtempo command is not installed beside this Python"
    ok = subprocess.run([exe, "config", "validate", str(C.CONFIG_DIR / f"{TIN}.yaml")],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and "valid" in ok.stdout
    data = _tin_dict()
    data["model"]["shiftdiv"] = 4
    bad = subprocess.run([exe, "config", "validate", str(_write(tmp_path, data))],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "unknown key 'model.shiftdiv'" in bad.stderr
