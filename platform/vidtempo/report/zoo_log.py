"""The zoo's own training logs, read into the curves our runs log.

    log = read("20200729_034132.log.json")        # a path or a URI
    log.epochs[3]        {"loss": …, "lr": …, "val/top1": …, "val/top5": …, "val/mean_class_acc": …}
    log.iterations       [(global iteration, {"loss": …, "lr": …}), …]
    log.config_text      the config the zoo model was trained with, as the log holds it
    log.notes            resumed, cut off, lines not read

The four forms MMAction2 publishes:
- 0.x JSON lines (`*.log.json`): a first line with the environment and config, then
  `{"mode": "train", "epoch", "iter", "lr", "loss", …}` and `{"mode": "val", "epoch", …}`;
- 0.x text (`*.log`): `Epoch [e][i/n]\tlr: …, loss: …` and `Epoch(val) [e][n]\ttop1_acc: …`;
- 1.x text (`*.log`): `Epoch(train) [e][i/n]  lr: …  loss: …` and
  `Epoch(val) [e][n/n]  acc/top1: …  acc/top5: …  acc/mean1: …`;
- 1.x `vis_data/scalars.json`: JSON lines with `epoch`, `iter`, `step`, `lr`, `loss` for training
  and `acc/top1`, … with `step` = the epoch for validation.
Validation comes from the evaluation hook (`top1_acc`, `top5_acc`, `mean_class_accuracy`) or from
a `('val', 1)` workflow step (`top1_acc`, `top5_acc`, `loss_cls`, `loss`). Accuracies are
fractions in the logs and percentages in our runs; an epoch's `loss` is the mean of its logged
training losses (ours: the mean over its steps), its `lr` the last one logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from statistics import mean

from vidtempo import storage

FORMATS = ("0.x json", "0.x text", "1.x text", "1.x scalars")
# the log's accuracy keys → our metric keys (fractions → percent)
VAL_KEYS = {"top1_acc": "val/top1", "top5_acc": "val/top5",
            "mean_class_accuracy": "val/mean_class_acc", "acc/top1": "val/top1",
            "acc/top5": "val/top5", "acc/mean1": "val/mean_class_acc"}  # fmt: skip
VAL_LOSS_KEYS = {"loss": "val/loss", "loss_cls": "val/loss_cls"}

_STAMP = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2} \d{2}:\d{2}:\d{2}")
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_PAIR = re.compile(rf"([A-Za-z_][\w/]*): ({_NUMBER})(?=[,\s]|$)")
_TRAIN_0X = re.compile(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]")
_VAL_0X = re.compile(r"Epoch\(val\) \[(\d+)\]\[(\d+)\]")
_TRAIN_1X = re.compile(r"Epoch\(train\)\s*\[\s*(\d+)\]\[\s*(\d+)/\s*(\d+)\]")
_VAL_1X = re.compile(r"Epoch\(val\)\s*\[\s*(\d+)\]\[\s*(\d+)/\s*(\d+)\]")


class LogError(ValueError):
    """A file that is no MMAction2 training log."""


@dataclass
class ZooLog:
    source: str
    format: str
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)
    iterations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    config_text: str | None = None
    iters_per_epoch: int | None = None
    unread: list[tuple[int, str]] = field(default_factory=list)  # (line number, line)
    notes: list[str] = field(default_factory=list)
    sha256: str = ""  # of the file: the same log imported twice is one run
    gpus: int | None = None  # the GPUs the run trained on, where the log says

    @property
    def first_epoch(self) -> int | None:
        return min(self.epochs) if self.epochs else None

    @property
    def last_epoch(self) -> int | None:
        return max(self.epochs) if self.epochs else None

    def summary(self) -> str:
        vals = [e for e, m in self.epochs.items() if "val/top1" in m]
        text = (f"{self.source}: {self.format} log, epochs {self.first_epoch}–{self.last_epoch}, "
                f"{len(self.iterations)} training lines, {len(vals)} validations"
                if self.epochs else f"{self.source}: {self.format} log with no epoch")  # fmt: skip
        if self.unread:
            text += f"; {len(self.unread)} line(s) not read (first: line {self.unread[0][0]})"
        return "; ".join([text, *self.notes])


class _Lines:
    """What a log says, line by line, before the epochs are put together."""

    def __init__(self) -> None:
        self.train: list[tuple[int, int, int | None, dict[str, float]]] = []  # epoch, iter, n, values
        self.val: list[tuple[int, dict[str, float]]] = []  # epoch, values
        # (epoch, iteration) of each line in file order (a validation: after the last iteration);
        # a resume goes back
        self.order: list[tuple[int, float]] = []
        self.global_iter = False  # 1.x scalars count iterations over the run, not per epoch


def read(path: str, name: str | None = None) -> ZooLog:
    """A zoo training log from a local path or a URI, in whichever of the four forms it is."""
    raw = storage.read_bytes(storage.normalize(path) if "://" not in path else path)
    if raw is None:
        raise FileNotFoundError(f"no log at {path}")
    return parse(raw.decode("utf-8", errors="replace"), name or path)


def parse(text: str, source: str) -> ZooLog:
    import hashlib

    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    log, found = _parse_json(lines, source) if first.startswith("{") else _parse_text(lines, source)
    _assemble(log, found)
    log.sha256 = hashlib.sha256(text.encode()).hexdigest()
    log.gpus = gpus_of(text)
    return log


def gpus_of(text: str) -> int | None:
    """The GPUs a zoo run trained on, where its log says: the environment block of a 1.x log
    (`GPU number: N`) or the `gpu_ids = range(0, N)` a 0.x config dump holds (also inside the
    JSON log's config string)."""
    found = re.search(r"GPU number:\s*(\d+)", text) or re.search(
        r"gpu_ids\s*=\s*range\(\s*0\s*,\s*(\d+)\s*\)", text.replace("\\n", "\n"))  # fmt: skip
    return int(found.group(1)) if found else None


def _parse_json(lines: list[str], source: str) -> tuple[ZooLog, _Lines]:
    objs, bad = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad.append((no, line))
            continue
        objs.append((no, obj) if isinstance(obj, dict) else (no, None))
    modes = sum(1 for _, o in objs if o and o.get("mode") in ("train", "val"))
    steps = sum(1 for _, o in objs if o and "step" in o)
    if modes:
        log = ZooLog(source, "0.x json")
    elif steps:
        log = ZooLog(source, "1.x scalars")
    else:
        raise LogError(f"{source} holds JSON lines, but none of an MMAction2 training log (0.x "
                       "`mode: train/val` lines or 1.x scalars with `step`)")  # fmt: skip
    log.unread += bad
    found = _Lines()
    found.global_iter = log.format == "1.x scalars"
    for no, obj in objs:
        if obj is None:
            log.unread.append((no, lines[no - 1]))
        elif log.format == "0.x json" and "mode" not in obj:
            if "config" in obj and isinstance(obj["config"], str):
                log.config_text = obj["config"]
        elif log.format == "0.x json":
            values = {k: float(v) for k, v in obj.items() if isinstance(v, int | float)}
            if obj["mode"] == "train" and "epoch" in obj and "iter" in obj:
                found.train.append((int(obj["epoch"]), int(obj["iter"]), None, values))
                found.order.append((int(obj["epoch"]), int(obj["iter"])))
            elif obj["mode"] == "val" and "epoch" in obj:
                found.val.append((int(obj["epoch"]), values))
                found.order.append((int(obj["epoch"]), float("inf")))
            else:
                log.unread.append((no, lines[no - 1]))
        else:  # 1.x scalars
            values = {k: float(v) for k, v in obj.items() if isinstance(v, int | float)}
            if "epoch" in obj and "iter" in obj:
                found.train.append((int(obj["epoch"]), int(obj["iter"]), None, values))
                found.order.append((int(obj["epoch"]), int(obj["iter"])))
            elif any(k in obj for k in VAL_KEYS) and "step" in obj:
                found.val.append((int(obj["step"]), values))
                found.order.append((int(obj["step"]), float("inf")))
            else:
                log.unread.append((no, lines[no - 1]))
    return log, found


def _parse_text(lines: list[str], source: str) -> tuple[ZooLog, _Lines]:
    fmt = None
    if any(_TRAIN_1X.search(ln) or _VAL_1X.search(ln) for ln in lines):
        fmt = "1.x text"
    elif any(_TRAIN_0X.search(ln) or _VAL_0X.search(ln) for ln in lines):
        fmt = "0.x text"
    if fmt is None:
        raise LogError(f"{source} is no MMAction2 training log: none of its lines is a training "
                       "or validation line of the 0.x or 1.x text logs (`Epoch [e][i/n]`, "
                       "`Epoch(train) [e][i/n]`, `Epoch(val) …`)")  # fmt: skip
    log = ZooLog(source, fmt)
    found = _Lines()
    config: list[str] | None = None
    for no, line in enumerate(lines, 1):
        stamped = bool(_STAMP.match(line))
        if config is not None:
            if stamped:
                log.config_text, config = "\n".join(config).strip("\n") + "\n", None
            else:
                config.append(line)
                continue
        if not stamped:
            continue  # the environment block, tracebacks, progress bars: not log records
        if "Config:" in line and log.config_text is None:
            config = [line.split("Config:", 1)[1].lstrip()] if line.split("Config:", 1)[1].strip() else []
            continue
        train = (_TRAIN_1X if fmt == "1.x text" else _TRAIN_0X).search(line)
        val = (_VAL_1X if fmt == "1.x text" else _VAL_0X).search(line)
        if train:
            rest = line[train.end():]
            values = {k: float(v) for k, v in _PAIR.findall(rest)}
            if "loss" not in values and "lr" not in values:
                log.unread.append((no, line))
                continue
            epoch, it, n = int(train.group(1)), int(train.group(2)), int(train.group(3))
            found.train.append((epoch, it, n, values))
            found.order.append((epoch, it))
        elif val:
            values = {k: float(v) for k, v in _PAIR.findall(line[val.end():])}
            if not any(k in values for k in VAL_KEYS):
                log.unread.append((no, line))
                continue
            found.val.append((int(val.group(1)), values))
            found.order.append((int(val.group(1)), float("inf")))
        elif "Epoch" in line and ("][" in line):
            log.unread.append((no, line))  # an epoch line of a shape this reader does not know
    if config is not None:
        log.config_text = "\n".join(config).strip("\n") + "\n"
    return log, found


def _assemble(log: ZooLog, found: _Lines) -> None:
    """Epoch curves and the iteration series from the lines; notes on resumes and a cut-off."""
    if not found.train and not found.val:
        raise LogError(f"{log.source}: an MMAction2 log form ({log.format}) but no training or "
                       "validation line in it")  # fmt: skip
    # resumes: the epoch going back means a run started again from an earlier checkpoint; the
    # later lines of an epoch logged twice win
    resumes = sum(1 for a, b in zip(found.order, found.order[1:]) if b < a)
    if resumes:
        log.notes.append(f"resumed {resumes} time(s) from an earlier epoch: the later lines of an "
                         "epoch logged twice are kept")  # fmt: skip
    train: dict[int, dict[int, dict[str, float]]] = {}
    sizes = [n for _, _, n, _ in found.train if n]
    for epoch, it, _, values in found.train:
        train.setdefault(epoch, {})[it] = values  # the last of a repeated (epoch, iter) wins
    n = max(sizes) if sizes else None
    if found.global_iter:  # per epoch: between the last logged iterations of two epochs
        ends = sorted((e, max(its)) for e, its in train.items())
        gaps = [b - a for (ea, a), (eb, b) in zip(ends, ends[1:]) if eb == ea + 1]
        n = max(gaps) if gaps else None
        train = {e: {it - (e - 1) * n if n else it: v for it, v in its.items()}
                 for e, its in train.items()}  # fmt: skip
    elif n is None and len(train) > 1:  # JSON: the iterations of an epoch followed by another
        n = max(max(its) for e, its in train.items() if e < max(train))
    log.iters_per_epoch = n
    epochs = sorted(set(train) | {e for e, _ in found.val})
    if epochs and epochs[0] > 1:
        log.notes.append(f"starts at epoch {epochs[0]}: a resumed run's log (earlier epochs are "
                         "in another file)")  # fmt: skip
    for e in epochs:
        m: dict[str, float] = {"epoch": float(e)}
        its = train.get(e, {})
        losses = [v["loss"] for v in its.values() if "loss" in v]
        if losses:
            m["loss"] = mean(losses)
        lrs = [v["lr"] for _, v in sorted(its.items()) if "lr" in v]
        if lrs:
            m["lr"] = lrs[-1]
        for ve, values in found.val:
            if ve == e:
                for k, key in VAL_KEYS.items():
                    if k in values:
                        m[key] = 100.0 * values[k]
                for k, key in VAL_LOSS_KEYS.items():
                    if k in values:
                        m[key] = values[k]
        log.epochs[e] = m
        for it, values in sorted(its.items()):
            step = (e - 1) * n + it if n else it
            log.iterations.append((step, {k: values[k] for k in ("loss", "lr") if k in values}))
    last = epochs[-1] if epochs else None
    if last is not None and n and train.get(last):
        reached = max(train[last])
        has_val = any(ve == last for ve, _ in found.val)
        if reached + _window(train[last]) <= n and not has_val:
            log.notes.append(f"cut off in epoch {last} at iteration {reached}/{n}: read as far as "
                             "it goes")  # fmt: skip
    if log.unread:
        log.notes.append(f"{len(log.unread)} line(s) not read")


def _window(its: dict[int, dict]) -> int:
    """The logging interval (iterations between two training lines of an epoch)."""
    keys = sorted(its)
    return min((b - a for a, b in zip(keys, keys[1:])), default=1)


def import_logs(cfg, paths: list[str], uri: str, experiment: str) -> None:
    """`vidtempo zoo import-log`: each log read and summarised, its config compared with our
    recipe (recipe_diff.md), and logged once (by sha256) as a `zoo-log` run."""
    from vidtempo.report import recipe_diff
    from vidtempo.tracking import record

    for path in paths:
        log = read(path)
        texts = {"zoo_config.py": log.config_text} if log.config_text else {}
        if log.unread:
            texts["unread_lines.txt"] = "".join(f"{no}: {line}\n" for no, line in log.unread)
        print(log.summary())
        if log.config_text:  # our recipe against the config the zoo model was trained with
            try:
                rows = recipe_diff.diff(cfg, recipe_diff.mm_config(log.config_text), log.gpus)
                texts["recipe_diff.md"] = recipe_diff.markdown(rows, cfg.name, path)
                print(texts["recipe_diff.md"])
            except recipe_diff.MMConfigError as exc:
                print(f"  the log's config could not be read ({exc}): no recipe comparison")
        run_id, created = record.zoo_log(uri, experiment, cfg.name, log, log.sha256, texts)
        print(f"  {'logged as' if created else 'already imported:'} MLflow run {run_id} "
              f"(experiment {experiment})")  # fmt: skip
