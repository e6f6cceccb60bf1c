"""Typed, frozen run configuration.

One YAML file holds one complete recipe (no inheritance). Loading is strict: an unknown or
misspelled key, a value of the wrong type or a missing required key is a `ConfigError` that names
the dotted key, the file and, for unknown keys, the closest valid key. The same dotted keys are
command-line overrides (`--set optim.lr=0.005`), Tune search-space keys and MLflow params.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]  # the checkout: platform/vidtempo/config.py
CONFIG_DIR = PROJECT_DIR / "jobs" / "configs"


class ConfigError(ValueError):
    """A user-caused problem in a config file or an override."""


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    # name in the flat builder registry of vidtempo.models (tin_r50, tanet_r50, tsm_r50, ...)
    arch: str
    num_classes: int
    num_segments: int = 8  # T: frames per clip the temporal modules are built for
    depth: int = 50
    # ResNet width: channels of the first stage (64 in the zoo; smaller trunks for small data)
    width: int = 64
    # "imagenet": 7x7/2 conv + max pool (1/4 resolution after the stem); "small": one 3x3/1
    # conv, no pool (CIFAR-style, for frames of a few dozen pixels)
    stem: Literal["imagenet", "small"] = "imagenet"
    shift_div: int = 8  # TSM: C/shift_div channels per shifted fold; TIN: C/shift_div interlaced
    # backbone init: "imagenet" (torchvision ResNet-50 weights from a local file) or "none"
    pretrained: Literal["imagenet", "none"] = "imagenet"
    load_from: str | None = None  # a whole-model checkpoint to fine-tune from (non-strict)
    dropout: float = 0.5
    init_std: float = 0.01
    norm_eval: bool = False  # True: keep every BN in eval mode while training
    partial_bn: bool = False  # True: freeze every BN but the first (original TIN recipe)
    aux_loss_weight: float = 0.0  # TPN auxiliary head on res4 (0.5 in every TPN recipe)
    fcn_test: bool = False  # TPN: classify every test view fully convolutionally
    # TPN's widths, derived from the trunk when null: the temporal modulation res5 / 2 channels
    # (1024 on a ResNet-50) and the level and pyramid fusions res5 channels (2048)
    tpn_channels: int | None = None
    tpn_fusion_channels: int | None = None
    # how test views are averaged: softmax then mean ("prob"), mean of logits ("score"), or
    # "none" (0.x configs: the views' raw scores are averaged without a softmax)
    average_clips: Literal["prob", "score", "none"] = "prob"


@dataclass(frozen=True)
class SamplerConfig:
    # segments: TSN-style 2D sampling (SampleFrames clip_len=1, num_clips=T)
    # clips: 3D sampling (SampleFrames clip_len=L, frame_interval=s, num_clips=M)
    # dense: DenseSampleFrames (T frames at stride sample_range//T in a random window)
    kind: Literal["segments", "clips", "dense"]
    clip_len: int = 1
    frame_interval: int = 1
    num_clips: int = 8
    test_mode: bool = False
    twice_sample: bool = False
    sample_range: int = 64  # dense only
    num_sample_positions: int = 10  # dense, test mode only
    out_of_bound: Literal["loop"] = "loop"


@dataclass(frozen=True)
class CropConfig:
    # multiscale: MultiScaleCrop; random_resized: RandomResizedCrop; center: CenterCrop;
    # three: ThreeCrop (3 views per clip)
    kind: Literal["multiscale", "random_resized", "center", "three"]
    size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_wh_scale_gap: int = 1
    random_crop: bool = False
    num_fixed_crops: Literal[5, 13] = 5
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    resize_to: int | None = None  # resize the crop to resize_to² afterwards (aspect not kept)


@dataclass(frozen=True)
class PipelineConfig:
    """Sample → decode → Resize(short side) → crop → flip → colour jitter → format."""

    sampler: SamplerConfig
    crop: CropConfig
    resize_short: int | None = 256  # Resize(-1, 256); None: no resize before the crop
    flip_ratio: float = 0.0
    color_jitter: Literal["none", "jitter", "pca"] = "none"
    format: Literal["NCHW", "NCTHW"] = "NCHW"


@dataclass(frozen=True)
class DataConfig:
    dataset: str  # sthv1, sthv2, kinetics400, synthetic, ...
    train: PipelineConfig
    val: PipelineConfig
    test: PipelineConfig
    source: Literal["rawframes", "videos"] = "rawframes"  # what the zoo recipe read
    start_index: int = 0  # added to every sampled index (1 for rawframes lists)
    filename_tmpl: str = "img_{:05}.jpg"
    # label swaps applied with a horizontal flip (e.g. sthv1 "left" ↔ "right" classes)
    flip_label_map: dict[int, int] = field(default_factory=dict)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # > 0: the run trains on all but this fraction of train/ (per class, by video id) and
    # validates on the held-out videos (holdout/* metrics), never reading val/ — a sweep's
    # trials (tune.holdout); 0: it trains on train/ and validates and tests on val/
    holdout: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float  # the base lr, written for train.gpus × train.videos_per_gpu videos per step
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    # the parameter groups of MMAction2's TSMOptimWrapperConstructor; False: one group
    paramwise: bool = True
    fc_lr5: bool = True
    grad_clip: float | None = None  # max L2 norm of all gradients


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["cosine", "step"]
    by_epoch: bool = True  # False: the lr changes every iteration
    warmup_epochs: float = 0.0
    warmup_ratio: float = 0.1  # warmup starts at warmup_ratio × lr
    min_lr_ratio: float | None = None  # cosine: ends at min_lr_ratio × lr (or at min_lr)
    min_lr: float = 0.0
    steps: tuple[int, ...] = ()  # step: epochs at which the lr is multiplied by gamma
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    videos_per_gpu: int  # zoo recipe: videos per GPU per step
    gpus: int = 8  # zoo recipe: the lr is written for this many GPUs
    val_interval: int = 1  # validate every N epochs
    # a dataset too small for this many optimizer steps in `epochs` epochs is passed over
    # several times per epoch (as MMAction2's RepeatDataset); null: one pass per epoch
    min_steps: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    metric: str = "val/top1"  # what checkpoints keep best-K by and Tune optimises
    mode: Literal["max", "min"] = "max"
    topk: tuple[int, ...] = (1, 5)


@dataclass(frozen=True)
class ResultConfig:
    protocol: str  # views as clips x crops, e.g. "1x1" (efficient), "2x3" (accurate), "10x3"
    top1: float
    top5: float
    name: str = ""  # the zoo's word for it ("efficient", "accurate") where it gives one


@dataclass(frozen=True)
class ReferenceConfig:
    """The published numbers this recipe reproduces (the zoo's tables and metafiles)."""

    source: str  # "mmaction2 0.x" or "mmaction2 1.x"
    results: tuple[ResultConfig, ...]
    params: int
    flops: int
    gpu_mem_mb: int
    zoo_gpus: str  # the README's gpus column ("8x4" = 32 GPUs trained the checkpoint)
    resolution: str
    pretrain: str
    # the "reference" columns: the original authors' code or checkpoint, same protocol
    original_top1: float | None = None
    original_top5: float | None = None
    checkpoint: str = ""


@dataclass(frozen=True)
class TuneConfig:
    """How `vidtempo tune` ranks and retries the trials of this recipe."""

    # the fraction of train/ (per class) the trials are ranked on and do not train on, so that
    # the number reported on val/ never chose the trial; `--rank-on val` ranks on val/ instead
    holdout: float = 0.1
    trial_retries: int = 2  # times Tune starts a trial that failed again before giving it up


@dataclass(frozen=True)
class RunConfig:
    num_workers: int = 2
    batch_per_worker: int | None = None  # None: train.videos_per_gpu
    use_gpu: bool = False
    cpus_per_worker: float = 1.0  # CPUs each training worker reserves
    # CPUs each worker's data pipeline may use for decoding (Ray Data tasks); fractions allowed.
    # null: 1 on CPU workers; with use_gpu, from the GPU nodes (their CPUs over their GPUs, less
    # the worker's own), and 1 with decode_resource (the decode nodes') — preflight.settle
    data_cpus_per_worker: float | None = None
    seed: int = 0
    storage_path: str | None = None  # None: <project>/runs; a URI or shared path on clusters
    experiment: str = "vidtempo"
    mlflow_uri: str | None = None  # None: VIDTEMPO_MLFLOW_URI, else SQLite under <project>
    keep_last: int = 2
    keep_best: int = 1
    max_failures: int = 3
    # how Ray places the workers: PACK (fill a node first), SPREAD, STRICT_SPREAD (one per node)
    placement_strategy: str = "PACK"
    # a custom Ray resource (e.g. "decode", carried by cluster.yaml's cpu-decode nodes): the read
    # + decode + augment tasks run only on nodes that have it, and stream uint8 clips to the
    # training workers; null: wherever Ray places them (by default next to the workers)
    decode_resource: str | None = None
    # the training and evaluation arithmetic on a GPU: fp32 (as the zoo trained; TF32
    # convolutions as PyTorch allows them by default) or bf16 autocast (TIN's offset and gate
    # branch stays fp32); the CPU path is fp32 either way
    precision: Literal["fp32", "bf16"] = "fp32"
    # on a cluster with an autoscaler: how long a run waits for the nodes it needs launched
    # before it gives up, saying what came (before it starts, and each time its workers restart)
    node_wait_minutes: float = 20.0


@dataclass(frozen=True)
class Config:
    name: str
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    train: TrainConfig
    reference: ReferenceConfig | None = None
    # a recipe derived from a zoo config (scaled down, other data) names it here; its runs are
    # listed under that config by `vidtempo zoo compare`, marked when they are not comparable
    zoo_config: str | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    # ---- the linear scaling rule -----------------------------------------------------------
    @property
    def reference_global_batch(self) -> int:
        """Videos per optimizer step the zoo's lr was written for (GPUs × videos per GPU)."""
        return self.train.gpus * self.train.videos_per_gpu

    @property
    def batch_per_worker(self) -> int:
        """Videos per step on each worker: run.batch_per_worker, else the zoo's videos per GPU."""
        return self.run.batch_per_worker or self.train.videos_per_gpu

    @property
    def global_batch(self) -> int:
        """Videos per optimizer step of this run (workers × videos per worker)."""
        return self.run.num_workers * self.batch_per_worker

    @property
    def effective_lr(self) -> float:
        return scaled_lr(self.optim.lr, self.global_batch, self.reference_global_batch)


def scaled_lr(base_lr: float, global_batch: int, reference_global_batch: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr grows in proportion to the batch."""
    if global_batch <= 0 or reference_global_batch <= 0:
        raise ConfigError(
            f"batch sizes must be positive, got global batch {global_batch} and "
            f"reference global batch {reference_global_batch}"
        )
    return base_lr * global_batch / reference_global_batch


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping {_type_name(k)} -> {_type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples."""

    def wrong() -> ConfigError:
        return ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r} in {where}"
        )

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong()
        return _build(tp, value, key, where)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, key, where)
            except ConfigError:
                continue
        raise wrong()
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            return value
        raise wrong()
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise wrong()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise wrong()
        return tuple(
            _convert(a, v, f"{key}[{i}]", where) for i, (a, v) in enumerate(zip(args, value))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        kt, vt = typing.get_args(tp)
        return {
            _convert(kt, k, f"{key}.{k}", where): _convert(vt, v, f"{key}.{k}", where)
            for k, v in value.items()
        }
    if tp is type(None):
        if value is None:
            return None
        raise wrong()
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong()
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong()
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in the schema


def _build(cls: type, data: dict, prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = (
                f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
                if close
                else f"; valid keys here: {', '.join(fields)}"
            )
            raise ConfigError(f"unknown key '{full}' in {where}{hint}")
    kwargs = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], full, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{full}' in {where}")
    return cls(**kwargs)


def from_dict(data: dict, where: str = "<dict>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping at the top level")
    cfg = _build(Config, data, "", where)
    check_ranges(cfg, where)
    if cfg.zoo_config and cfg.zoo_config not in zoo_names():
        close = difflib.get_close_matches(cfg.zoo_config, zoo_names(), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else "; `vidtempo zoo list` shows them"
        raise ConfigError(f"{where}: zoo_config '{cfg.zoo_config}' is not a zoo config{hint}")
    return cfg


def zoo_reference(cfg: Config) -> tuple[str, ReferenceConfig | None]:
    """The zoo config whose published numbers a recipe's runs stand beside, and those numbers:
    its own reference, else that of the zoo config it names (`zoo_config`, checked when the
    recipe was loaded)."""
    if cfg.reference is None and cfg.zoo_config:
        return cfg.zoo_config, load(cfg.zoo_config).reference
    return cfg.name, cfg.reference


def check_ranges(cfg: Config, where: str = "<config>") -> None:
    """Values that parse but cannot train: a ConfigError naming the key, the value and the
    allowed range."""
    s, o, t, m, r = cfg.schedule, cfg.optim, cfg.train, cfg.model, cfg.run
    rules: list[tuple[str, Any, bool, str]] = [
        ("model.num_classes", m.num_classes, m.num_classes >= 2, ">= 2"),
        ("model.num_segments", m.num_segments, m.num_segments >= 1, ">= 1"),
        ("model.width", m.width, m.width >= 1, ">= 1"),
        ("model.shift_div", m.shift_div, m.shift_div >= 1, ">= 1"),
        ("model.dropout", m.dropout, 0 <= m.dropout < 1, "in [0, 1)"),
        ("model.init_std", m.init_std, m.init_std > 0, "> 0"),
        ("model.aux_loss_weight", m.aux_loss_weight, m.aux_loss_weight >= 0, ">= 0"),
        ("model.tpn_channels", m.tpn_channels, m.tpn_channels is None or m.tpn_channels >= 1,
         ">= 1 or null"),
        ("model.tpn_fusion_channels", m.tpn_fusion_channels,
         m.tpn_fusion_channels is None or m.tpn_fusion_channels >= 1, ">= 1 or null"),
        ("optim.lr", o.lr, o.lr > 0, "> 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip is None or o.grad_clip > 0, "> 0 or null"),
        ("schedule.warmup_epochs", s.warmup_epochs, 0 <= s.warmup_epochs < t.epochs,
         f"in [0, train.epochs={t.epochs})"),
        ("schedule.warmup_ratio", s.warmup_ratio, 0 < s.warmup_ratio <= 1, "in (0, 1]"),
        ("schedule.min_lr_ratio", s.min_lr_ratio,
         s.min_lr_ratio is None or 0 <= s.min_lr_ratio <= 1, "in [0, 1] or null"),
        ("schedule.min_lr", s.min_lr, s.min_lr >= 0, ">= 0"),
        ("schedule.gamma", s.gamma, 0 < s.gamma <= 1, "in (0, 1]"),
        ("schedule.steps", list(s.steps), list(s.steps) == sorted(set(s.steps))
         and all(0 < x < t.epochs for x in s.steps),
         f"increasing epochs in (0, train.epochs={t.epochs})"),
        ("train.epochs", t.epochs, t.epochs >= 1, ">= 1"),
        ("train.videos_per_gpu", t.videos_per_gpu, t.videos_per_gpu >= 1, ">= 1"),
        ("train.gpus", t.gpus, t.gpus >= 1, ">= 1"),
        ("train.val_interval", t.val_interval, t.val_interval >= 1, ">= 1"),
        ("train.min_steps", t.min_steps, t.min_steps is None or t.min_steps >= 1, ">= 1 or null"),
        ("run.num_workers", r.num_workers, r.num_workers >= 1, ">= 1"),
        ("run.batch_per_worker", r.batch_per_worker,
         r.batch_per_worker is None or r.batch_per_worker >= 1, ">= 1 or null"),
        ("run.cpus_per_worker", r.cpus_per_worker, r.cpus_per_worker > 0, "> 0"),
        ("run.data_cpus_per_worker", r.data_cpus_per_worker,
         r.data_cpus_per_worker is None or r.data_cpus_per_worker > 0, "> 0 or null"),
        ("run.keep_last", r.keep_last, r.keep_last >= 1, ">= 1 (resume needs the last one)"),
        ("run.keep_best", r.keep_best, r.keep_best >= 0, ">= 0"),
        ("run.max_failures", r.max_failures, r.max_failures >= 0, ">= 0"),
        ("run.placement_strategy", r.placement_strategy,
         r.placement_strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
         "one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
        ("run.node_wait_minutes", r.node_wait_minutes, r.node_wait_minutes > 0, "> 0"),
        ("data.holdout", cfg.data.holdout, 0 <= cfg.data.holdout < 1, "in [0, 1)"),
        ("tune.holdout", cfg.tune.holdout, 0 < cfg.tune.holdout < 1, "in (0, 1)"),
        ("tune.trial_retries", cfg.tune.trial_retries, cfg.tune.trial_retries >= 0, ">= 0"),
    ]
    for split in ("train", "val", "test"):
        p = getattr(cfg.data, split)
        rules += [
            (f"data.{split}.flip_ratio", p.flip_ratio, 0 <= p.flip_ratio <= 1, "in [0, 1]"),
            (f"data.{split}.crop.size", p.crop.size, p.crop.size >= 1, ">= 1"),
            (f"data.{split}.sampler.num_clips", p.sampler.num_clips, p.sampler.num_clips >= 1,
             ">= 1"),
            (f"data.{split}.sampler.clip_len", p.sampler.clip_len, p.sampler.clip_len >= 1,
             ">= 1"),
        ]
    for key, value, ok, allowed in rules:
        if not ok:
            raise ConfigError(f"{key} = {value!r} in {where} is out of range: it must be {allowed}")
    if cfg.data.holdout and not cfg.eval.metric.startswith("holdout/"):
        raise ConfigError(f"data.holdout = {cfg.data.holdout} in {where}: the run validates on the "
                          f"held-out part of train/, so eval.metric must be a holdout/ metric "
                          f"(e.g. eval.metric=holdout/top1), not {cfg.eval.metric}")  # fmt: skip


def resolve_path(name_or_path: str | Path) -> Path:
    """A zoo config name (`tin_r50_1x1x8_40e_sthv1_rgb`) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        return p
    for folder in (CONFIG_DIR, CONFIG_DIR / "synthetic"):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    # the synthetic recipes too (tin_r18_synthetc once got 'tin_r50_1x1x8_40e_sthv2_rgb')
    names = zoo_names() + sorted(p.stem for p in (CONFIG_DIR / "synthetic").glob("*.yaml"))
    close = difflib.get_close_matches(str(name_or_path), names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; `vidtempo zoo list` shows them"
    raise ConfigError(f"no zoo config named '{name_or_path}'{hint}")


def load(name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a zoo config by name or a YAML file (a local path, or a URI such as the
    best_config.yaml a cluster's sweep wrote to s3://), then apply dotted overrides."""
    if "://" in str(name_or_path):
        from vidtempo import storage  # pyarrow's filesystems, only for a URI

        path = str(name_or_path)
        raw = storage.read_bytes(path)
        if raw is None:
            raise ConfigError(f"config file {path} does not exist")
        text = raw.decode()
    else:
        path = resolve_path(name_or_path)
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if overrides:
        data = apply_overrides_to_dict(data, _parse_overrides(overrides), str(path))
        return from_dict(data, f"{path} (with overrides)")
    return from_dict(data, str(path))


def zoo_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


# --------------------------------------------------------------------------------------------
# Dotted keys: overrides, flatten, unflatten
# --------------------------------------------------------------------------------------------


def _parse_overrides(overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. optim.lr=0.005")
        key, raw = item.split("=", 1)
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return parsed


def _check_path(key: str, where: str) -> None:
    """Raise a ConfigError naming the first unknown part of a dotted key."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if typing.get_origin(cls) is dict:
                return  # free-form mapping (e.g. data.flip_label_map.2)
            raise ConfigError(f"'{key}' goes below '{'.'.join(parts[:i])}', which is a value")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            prefix = ".".join(parts[:i])
            close = difflib.get_close_matches(part, list(hints), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")
        cls = hints[part]
        if typing.get_origin(cls) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(cls) if a is not type(None)]
            cls = options[0] if len(options) == 1 else cls


def apply_overrides_to_dict(data: dict, overrides: dict[str, Any], where: str) -> dict:
    import copy

    data = copy.deepcopy(data)
    for key, value in overrides.items():
        _check_path(key, f"overrides of {where}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def override(
    cfg: Config, overrides: dict[str, Any] | list[str], where: str = "overrides"
) -> Config:
    """A new Config with dotted overrides applied and checked like a file."""
    data = apply_overrides_to_dict(to_dict(cfg), _parse_overrides(overrides), where)
    return from_dict(data, where)


def to_dict(cfg: Any) -> Any:
    """Plain YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)


def flatten(cfg: Config | dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys → leaf values. Lists and int-keyed mappings (flip_label_map) are leaves."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    data: dict = {}
    for key, value in flat.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def diff(base: Config, other: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ: key → (base value, other value)."""
    a, b = flatten(base), flatten(other)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def views(pipeline: PipelineConfig) -> tuple[int, int]:
    """(clips, crops) one video is seen as under a pipeline: its protocol "CxK"."""
    s = pipeline.sampler
    if s.kind == "segments":
        clips = 2 if s.twice_sample else 1
    elif s.kind == "dense":
        clips = s.num_sample_positions if s.test_mode else 1
    else:
        clips = s.num_clips
    crops = 3 if pipeline.crop.kind == "three" else 1
    return clips, crops


def protocol(pipeline: PipelineConfig) -> str:
    clips, crops = views(pipeline)
    return f"{clips}x{crops}"
