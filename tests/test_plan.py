"""`vidtempo zoo plan`: what reproducing a zoo config costs, checked against hand-computed
numbers, and the inputs it refuses."""

from __future__ import annotations

import pytest

from vidtempo import config as C
from vidtempo.cli import main as cli
from vidtempo.config import ConfigError
from vidtempo.report import plan as P

TIN = "tin_r50_1x1x8_40e_sthv1_rgb"


def test_plan_of_tin_sthv1_equals_the_hand_computation():
    p = P.plan(C.load(TIN), gpus=8, clips_per_s=500, gpu_hour_price=2.0, cpu_hour_price=0.05)
    # 40 epochs × 86,017 videos; the 1-clip, 1-crop test on 11,522 videos
    assert (p.train_clips, p.test_clips, p.test_views) == (3_440_680, 11_522, 11_522)
    assert p.decode_s_per_clip == 0.0065  # JPEG frames, 6.5 ms a clip on one core
    assert p.decode_core_hours == pytest.approx((3_440_680 + 11_522) * 0.0065 / 3600)  # 6.2331
    assert p.decode_cores_per_gpu == pytest.approx(3.25)  # 500 clips/s × 6.5 ms
    gpu_hours = 3_440_680 / 500 / 3600 + 11_522 / 1500 / 3600  # 1.91149 + 0.00213
    assert p.gpu_hours == pytest.approx(gpu_hours) and p.wall_hours == pytest.approx(gpu_hours / 8)
    assert p.cost == pytest.approx(gpu_hours * 2.0 + p.decode_core_hours * 0.05)  # 4.139
    assert p.clip_bytes == 8 * 3 * 224 * 224  # uint8 across the network
    assert p.gbit_per_s_per_gpu == pytest.approx(8 * 3 * 224 * 224 * 500 * 8 / 1e9)
    assert p.inputs["clips_per_s"] == "given: --clips-per-s"
    assumed = P.plan(C.load(TIN))
    assert assumed.clips_per_s == 500 and assumed.inputs["clips_per_s"].startswith("ASSUMED")
    assert assumed.gpus == 8 and assumed.cost is None


def test_plan_counts_a_converted_dataset_and_mp4_costs_more(synthetic_data):
    cfg = C.load("tanet_r50_dense_1x1x8_100e_kinetics400_rgb")
    p = P.plan(cfg, data=synthetic_data, storage="video")
    assert (p.train_videos, p.val_videos) == (36, 24)  # 12 classes × 3 and × 2
    assert p.test_clips == 24 * 10 and p.test_views == 24 * 10 * 3  # the dense 10x3 protocol
    assert p.decode_s_per_clip == 0.036 and p.inputs["videos"].startswith("measured")
    assert P.plan(cfg, storage="frames").decode_s_per_clip == 0.0065


@pytest.mark.parametrize("argv, message", [
    (["nope"], "no zoo config named 'nope'"),
    ([TIN, "--gpus", "0"], "--gpus must be at least 1"),
    ([TIN, "--gpu-hour-price", "-1"], "--gpu-hour-price must be 0 or more"),
    ([TIN, "--cpu-hour-price", "-0.5"], "--cpu-hour-price must be 0 or more"),
    ([TIN, "--clips-per-s", "0"], "--clips-per-s must be more than 0"),
    ([TIN, "--videos", "10"], "--videos must be TRAIN,VAL"),
    ([TIN, "--data", "/nonexistent"], "does not exist"),
])  # fmt: skip
def test_bad_inputs_are_refused_with_a_clear_message(argv, message, capsys):
    assert cli(["zoo", "plan", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_dataset_size_says_what_to_pass():
    cfg = C.override(C.load(TIN), {"data.dataset": "ucf101"})
    with pytest.raises(ConfigError, match="--data DIR .* or --videos TRAIN,VAL"):
        P.plan(cfg)


def test_plan_cli_prints_the_table_and_logs_a_run(tmp_path, capsys):
    from vidtempo import tracking

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert cli(["zoo", "plan", TIN, "--gpus", "16", "--gpu-hour-price", "3", "--log",
                "--mlflow-uri", uri]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| wall-clock on 16 GPUs |" in out and "ASSUMED: 500 clips/s" in out
    (run,) = tracking.runs(uri, "zoo-plan")
    assert run["tags"]["vidtempo.kind"] == "zoo-plan"
    assert run["metrics"]["gpus"] == 16 and run["metrics"]["train_clips"] == 3_440_680
