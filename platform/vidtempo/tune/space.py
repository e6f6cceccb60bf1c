"""Search spaces in dotted config keys, checked before a sweep starts.

    optim.lr=loguniform:1e-3:1e-1      model.shift_div=choice:4,8,16
    optim.lr=grid:0.005,0.01,0.02      optim.weight_decay=uniform:1e-4:1e-3

The same strings in a YAML file (`key: "loguniform:1e-3:1e-1"`). `optim.lr` is the **base**
lr, written for the zoo's reference global batch; every trial's effective lr follows the linear
scaling rule for its own global batch (both are logged), so trials stay comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vidtempo import config
from vidtempo.config import Config, ConfigError

KINDS = ("loguniform", "uniform", "randint", "choice", "grid")


def parse_value(text: str) -> Any:
    return yaml.safe_load(text.strip())


def parse_spec(key: str, spec: str) -> tuple[str, list]:
    """'loguniform:1e-3:1e-1' → ('loguniform', [0.001, 0.1])."""
    kind, _, rest = str(spec).partition(":")
    if kind not in KINDS or not rest:
        raise ConfigError(
            f"search space for '{key}': '{spec}' is not one of "
            "loguniform:LOW:HIGH, uniform:LOW:HIGH, randint:LOW:HIGH, choice:A,B,..., grid:A,B,..."
        )
    if kind in ("choice", "grid"):
        values = [parse_value(v) for v in rest.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"search space for '{key}': '{spec}' lists no values")
        return kind, values
    parts = rest.split(":")
    if len(parts) != 2:
        raise ConfigError(f"search space for '{key}': '{spec}' needs LOW:HIGH")
    low, high = (float(parse_value(p)) for p in parts)
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"search space for '{key}': '{spec}' needs 0 < LOW < HIGH" if
                          kind == "loguniform" else f"search space for '{key}': LOW < HIGH")  # fmt: skip
    return kind, [low, high]


def parse(items: list[str] | None = None, file: str | Path | None = None) -> dict[str, tuple]:
    """`--space KEY=SPEC` items and/or a YAML file → {key: (kind, args)}."""
    raw: dict[str, str] = {}
    if file:
        data = yaml.safe_load(Path(file).read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"{file} must map dotted config keys to search specs")
        raw.update({str(k): str(v) for k, v in data.items()})
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--space '{item}' must look like KEY=SPEC, e.g. "
                              "optim.lr=loguniform:1e-3:1e-1")  # fmt: skip
        key, spec = item.split("=", 1)
        raw[key.strip()] = spec.strip()
    if not raw:
        raise ConfigError("the search space is empty: give --space KEY=SPEC or --space-file")
    return {k: parse_spec(k, v) for k, v in raw.items()}


def values_to_check(kind: str, args: list) -> list:
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return list(range(int(args[0]), int(args[1])))
    return [args[0], args[1]]


def block_channels(depth: int) -> list[int]:
    """Input channels of the residual blocks, where TSM shifts and TIN interlaces."""
    if depth >= 50:
        return [64, 256, 512, 1024, 2048]
    return [64, 128, 256, 512]


def check(base: Config, space: dict[str, tuple]) -> None:
    """Every key exists and every listed value makes a valid config, before any trial starts:
    unknown keys name the closest valid one; shift_div must divide the channel counts."""
    for key, (kind, args) in space.items():
        config._check_path(key, "the search space")
        for value in values_to_check(kind, args):
            if kind in ("uniform", "loguniform") and key == "model.shift_div":
                raise ConfigError("model.shift_div takes whole numbers: use choice: or grid:")
            cfg = config.override(base, {key: value}, f"search space value {key}={value!r}")
            if key == "model.shift_div":
                check_shift_div(cfg)


def check_shift_div(cfg: Config) -> None:
    import torch

    from vidtempo import models

    d = cfg.model.shift_div
    bad = [c for c in block_channels(cfg.model.depth) if c % d]
    if bad:
        raise ConfigError(
            f"model.shift_div={d} does not divide the block channel counts {bad} of a "
            f"depth-{cfg.model.depth} ResNet: choose a divisor of "
            f"{block_channels(cfg.model.depth)} (4, 8 and 16 are the usual ones)"
        )
    try:
        with torch.device("meta"):
            models.build(cfg)
    except ValueError as exc:
        raise ConfigError(f"model.shift_div={d}: {exc}") from None


def tune_domain(kind: str, args: list):
    from ray import tune

    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]))
    if kind == "choice":
        return tune.choice(args)
    return tune.grid_search(args)


def describe(space: dict[str, tuple]) -> dict[str, str]:
    return {k: f"{kind}:{','.join(map(str, args)) if kind in ('choice', 'grid') else ':'.join(map(str, args))}"
            for k, (kind, args) in space.items()}  # fmt: skip
