"""`vidtempo zoo plan NAME`: what reproducing a zoo config costs — clips to decode, decode
core-hours, decode cores per GPU, GPU-hours, wall-clock on N GPUs, money — from measured figures
where there are some, and saying which inputs were assumed.

    training clips  = epochs × training videos          (one clip of T frames per video and epoch)
    test clips      = validation videos × temporal clips of the test protocol (crops share a decode)
    test views      = validation videos × clips × crops (what the GPU scores)
    decode hours    = (training + test clips) × decode seconds per clip / 3600     (one core)
    cores per GPU   = clips/s per GPU × decode seconds per clip      (to keep a GPU fed in training)
    GPU-hours       = training clips / (clips/s) / 3600 + test views / (3 × clips/s) / 3600
    wall-clock      = GPU-hours / GPUs          (data parallel, decoders keeping up)
    cost            = GPU-hours × GPU-hour price + decode hours × CPU-hour price (per core)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidtempo import config as C
from vidtempo.config import Config, ConfigError
from vidtempo.data.sampling import clip_bytes

# Videos per split of the zoo's datasets, when no converted manifest is at hand.
KNOWN_SIZES = {
    # Something-Something V1: 86,017 training and 11,522 validation videos (Goyal et al. 2017)
    "sthv1": (86_017, 11_522, "Something-Something V1 as released (Goyal et al. 2017)"),
    # Something-Something V2: 168,913 / 24,777
    "sthv2": (168_913, 24_777, "Something-Something V2 as released"),
    # Kinetics-400 as MMAction2 and most reproductions use it: 240,436 training videos (what is
    # still downloadable varies) and the 19,796 validation videos of the zoo pages
    "kinetics400": (240_436, 19_796, "Kinetics-400: 240,436 train (common list), 19,796 val (zoo)"),
}

# Decode + augment seconds per training clip on one core, by how a dataset is stored: measured per
# core on this project's 2-core x86-64 machines (the figures of issue #20; BENCHMARKS.md,
# "Scaling out")
DECODE_S = {
    "frames": (0.0065, "JPEG frames as Something-Something is distributed, 8-frame clip: 6.5 ms"),
    "video_small": (0.0187, "container video at 128², 8-frame clip: 18.7 ms"),
    "video": (0.036, "container video at 456×256 (Kinetics-like mp4), 8-frame clip: 36 ms"),
}
# clips/s of one GPU when none is given: the target of the GPU issue for TIN-R50 at 8×224² on an
# H100/H200 (bf16); not yet measured here (BENCHMARKS.md has no GPU figures)
ASSUMED_CLIPS_PER_S = 500.0
EVAL_SPEEDUP = 3.0  # a test view costs a forward pass, about a third of a training step


@dataclass
class Plan:
    config: str
    dataset: str
    epochs: int
    gpus: int
    train_videos: int
    val_videos: int
    protocol: str
    train_clips: int
    test_clips: int
    test_views: int
    decode_s_per_clip: float
    clips_per_s: float
    decode_core_hours: float
    decode_cores_per_gpu: float
    gpu_hours: float
    wall_hours: float
    clip_bytes: int
    gbit_per_s_per_gpu: float
    gpu_hour_price: float | None = None
    cpu_hour_price: float | None = None
    cost: float | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # input → where it came from


def dataset_size(cfg: Config, data: str | Path | None) -> tuple[int, int, str]:
    """(train videos, val videos, source): from converted shards (--data with train/ and val/
    manifests), else the dataset's known size."""
    if data:
        from vidtempo import storage
        from vidtempo.data.schema import read_manifest

        counts = [read_manifest(storage.join(data, split))["num_videos"] for split in ("train", "val")]
        return counts[0], counts[1], f"measured: the manifests under {data}"
    if cfg.data.dataset not in KNOWN_SIZES:
        raise ConfigError(
            f"no known size for dataset '{cfg.data.dataset}': pass --data DIR (train/ and val/ "
            f"shards) or --videos TRAIN,VAL"
        )
    train, val, source = KNOWN_SIZES[cfg.data.dataset]
    return train, val, f"known size: {source}"


def decode_cost(cfg: Config, storage: str | None = None) -> tuple[float, str]:
    """Seconds per clip by storage: `frames` (JPEG) or `video` (container); by default what the
    zoo recipe read (data.source)."""
    storage = storage or ("frames" if cfg.data.source == "rawframes" else "video")
    if storage not in ("frames", "video"):
        raise ConfigError(f"--storage must be 'frames' or 'video', got {storage!r}")
    if storage == "frames":
        return DECODE_S["frames"]
    if (cfg.data.train.resize_short or 256) <= 128:
        return DECODE_S["video_small"]
    return DECODE_S["video"]


def plan(cfg: Config, gpus: int | None = None, clips_per_s: float | None = None,
         gpu_hour_price: float | None = None, cpu_hour_price: float | None = None,
         data: str | Path | None = None, videos: tuple[int, int] | None = None,
         decode_ms: float | None = None, storage: str | None = None) -> Plan:  # fmt: skip
    gpus = cfg.train.gpus if gpus is None else gpus
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    for flag, value in (("--gpu-hour-price", gpu_hour_price), ("--cpu-hour-price", cpu_hour_price)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must be 0 or more (a price per hour), got {value}")
    if clips_per_s is not None and clips_per_s <= 0:
        raise ConfigError(f"--clips-per-s must be more than 0, got {clips_per_s}")
    if decode_ms is not None and decode_ms <= 0:
        raise ConfigError(f"--decode-ms must be more than 0, got {decode_ms}")
    inputs = {}
    if videos:
        if min(videos) < 1:
            raise ConfigError(f"--videos needs TRAIN,VAL counts of at least 1, got {videos}")
        train_videos, val_videos = videos
        inputs["videos"] = "given: --videos"
    else:
        train_videos, val_videos, inputs["videos"] = dataset_size(cfg, data)
    if decode_ms is not None:
        decode_s, inputs["decode"] = decode_ms / 1e3, "given: --decode-ms"
    else:
        decode_s, why = decode_cost(cfg, storage)
        inputs["decode"] = f"measured per core: {why}"
    if clips_per_s is None:
        clips_per_s = ASSUMED_CLIPS_PER_S
        inputs["clips_per_s"] = (f"ASSUMED: {ASSUMED_CLIPS_PER_S:g} clips/s per GPU (the GPU "
                                 "issue's target for TIN-R50 bf16; no GPU measurement yet)")  # fmt: skip
    else:
        inputs["clips_per_s"] = "given: --clips-per-s"
    inputs["eval"] = f"ASSUMED: a test view costs 1/{EVAL_SPEEDUP:g} of a training clip"
    inputs["gpus"] = "given: --gpus" if gpus != cfg.train.gpus else f"the zoo's train.gpus ({gpus})"
    clips, crops = C.views(cfg.data.test)
    train_clips = cfg.train.epochs * train_videos
    test_clips = val_videos * clips
    test_views = val_videos * clips * crops
    decode_hours = (train_clips + test_clips) * decode_s / 3600
    gpu_hours = train_clips / clips_per_s / 3600 + test_views / (EVAL_SPEEDUP * clips_per_s) / 3600
    sample_bytes = clip_bytes(cfg.data.train)  # uint8 over the network
    cost = None
    if gpu_hour_price is not None or cpu_hour_price is not None:
        cost = gpu_hours * (gpu_hour_price or 0) + decode_hours * (cpu_hour_price or 0)
    return Plan(
        config=cfg.name, dataset=cfg.data.dataset, epochs=cfg.train.epochs, gpus=gpus,
        train_videos=train_videos, val_videos=val_videos, protocol=C.protocol(cfg.data.test),
        train_clips=train_clips, test_clips=test_clips, test_views=test_views,
        decode_s_per_clip=decode_s, clips_per_s=clips_per_s, decode_core_hours=decode_hours,
        decode_cores_per_gpu=clips_per_s * decode_s, gpu_hours=gpu_hours,
        wall_hours=gpu_hours / gpus, clip_bytes=sample_bytes,
        gbit_per_s_per_gpu=sample_bytes * clips_per_s * 8 / 1e9,
        gpu_hour_price=gpu_hour_price, cpu_hour_price=cpu_hour_price, cost=cost, inputs=inputs,
    )  # fmt: skip


def table(p: Plan) -> str:
    def h(x: float) -> str:
        return f"{x:,.1f} h" if x >= 1 else f"{x * 60:,.1f} min"

    rows = [
        ("zoo config", f"{p.config} ({p.dataset}, {p.epochs} epochs, test {p.protocol})"),
        ("videos", f"{p.train_videos:,} train, {p.val_videos:,} val"),
        ("clips decoded", f"{p.train_clips:,} training + {p.test_clips:,} test "
                          f"({p.test_views:,} test views scored)"),
        ("decode cost per clip", f"{p.decode_s_per_clip * 1e3:.1f} ms on one core"),
        ("decode core-hours", h(p.decode_core_hours)),
        ("decode cores per GPU", f"{p.decode_cores_per_gpu:.1f} (at {p.clips_per_s:g} clips/s)"),
        ("network, uint8 clips", f"{p.clip_bytes / 2**20:.2f} MiB a clip: "
                                 f"{p.gbit_per_s_per_gpu:.1f} Gbit/s per GPU"),
        ("GPU-hours", h(p.gpu_hours)),
        (f"wall-clock on {p.gpus} GPUs", h(p.wall_hours)),
    ]  # fmt: skip
    if p.cost is not None:
        rows.append(("cost", f"{p.cost:,.2f} (GPU-hour {p.gpu_hour_price or 0:g}, "
                             f"CPU core-hour {p.cpu_hour_price or 0:g})"))  # fmt: skip
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "inputs:"] + [f"- {k}: {v}" for k, v in p.inputs.items()]
    return "\n".join(lines)


def log(p: Plan, uri: str, experiment: str = "zoo-plan") -> str:
    from vidtempo.tracking import record

    numbers = {k: v for k, v in asdict(p).items() if isinstance(v, int | float) and v is not None}
    return record.report_run(uri, experiment, f"plan-{p.config}",
                             {"vidtempo.kind": "zoo-plan", "zoo.config": p.config}, numbers,
                             {"plan.md": table(p), "plan.json": json.dumps(asdict(p), indent=2)})  # fmt: skip
