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
    """A value as YAML reads it, and a number written as Python writes it: YAML 1.1 reads
    `1e-05` (no dot) as a string, and a sweep's space comes back from vidtempo_sweep.json as
    Python wrote its numbers."""
    value = yaml.safe_load(text.strip())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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


# the preset space of each model family (jobs/configs/spaces/): what `vidtempo tune` and
# jobs/tune_*.py search when given neither --space nor --space-file
PRESETS = {"tin": "tin.yaml", "tanet": "tanet.yaml", "tpn_tsm": "tpn.yaml",
           "tpn_slowonly": "tpn.yaml", "tsm": "tsm.yaml", "tsn": "tsm.yaml"}  # fmt: skip


def preset(cfg: Config) -> Path:
    """The preset space file of the config's model family."""
    from vidtempo.models import family  # the registry's names, without building anything

    return config.CONFIG_DIR / "spaces" / PRESETS[family(cfg.model.arch)]


def values_to_check(kind: str, args: list) -> list:
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return list(range(int(args[0]), int(args[1])))
    return [args[0], args[1]]


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
    """model.shift_div searched only where something shifts; the model's own shape rules
    (models.check: it divides every shifted channel count, TIN's groups) for each value."""
    from vidtempo import models

    if models.family(cfg.model.arch) not in models.SHIFTING:
        raise ConfigError(
            f"model.shift_div changes nothing in {cfg.model.arch}: only TSM, TIN and TPN-TSM "
            "shift channels in time; leave it out of the search space"
        )
    models.check(cfg)


def default_samples(space: dict[str, tuple], search: str) -> int:
    """Samples for a space when none are given: every combination of its finite axes (grid,
    choice, randint) with 4 draws' worth per continuous axis — at most 32 trials, at least 4
    when something is drawn. Random search repeats a grid axis per sample, so its samples are
    the trials over the grid's size; TPE draws every trial, grid axes among them."""
    finite, grid, continuous = 1, 1, 0
    for kind, args in space.values():
        if kind in ("uniform", "loguniform"):
            continuous += 1
        else:
            n = len(values_to_check(kind, args))
            finite *= n
            grid *= n if kind == "grid" else 1
    if continuous == 0 and finite == grid:  # a grid alone: every point once
        return 1 if search == "random" else grid
    trials = min(32, max(4, finite * 4**continuous))
    return max(1, -(-trials // grid)) if search == "random" else trials


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
