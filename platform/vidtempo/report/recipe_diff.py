"""Our recipe against the config the zoo model was trained with (the one inside its log).

    zoo = mm_config(log.config_text)             # MMAction2's Python config, read without running it
    rows = diff(our_cfg, zoo, gpus=log_gpus)     # [(key, ours, theirs, "equal" | "different" | …)]

Every setting our YAML writes out that MMAction2's config names — model and shift_div, frames and
sampling, each train/val/test pipeline step and its parameters, optimizer, lr (and our lr scaled
to the GPUs × videos per GPU the log ran with), schedule and warm-up, clipping, epochs,
evaluation interval — in our dotted keys, with the log's value beside ours. Both 0.x configs
(`optimizer`, `lr_config`, `total_epochs`, `data.videos_per_gpu`, Normalize in the pipelines) and
1.x ones (`optim_wrapper`, `param_scheduler`, `train_cfg`, `train_dataloader`, the model's
`data_preprocessor`) are read.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from vidtempo import config as C
from vidtempo.config import Config


class MMConfigError(ValueError):
    """A config text that is not MMAction2's Python config syntax."""


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}  # fmt: skip


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    """A literal-like expression of a config: constants, names defined above, dict(...)/[...]/
    (...)/{...} with ** expansion, arithmetic, f-strings, indexing."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise MMConfigError(f"name '{node.id}' is not defined above it")
    if isinstance(node, ast.List):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Set):
        return {_eval(e, env) for e in node.elts}
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(_eval(v, env))
            else:
                out[_eval(k, env)] = _eval(v, env)
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "dict", "list", "tuple", "range"):  # fmt: skip
        args = [_eval(a, env) for a in node.args]
        if node.func.id == "dict":
            out = dict(*args)
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(_eval(kw.value, env))
                else:
                    out[kw.arg] = _eval(kw.value, env)
            return out
        return {"list": list, "tuple": tuple, "range": lambda *a: list(range(*a))}[node.func.id](*args)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(_eval(v.value, env)) if isinstance(v, ast.FormattedValue)
                       else str(v.value) for v in node.values)  # fmt: skip
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    raise MMConfigError(f"line {getattr(node, 'lineno', '?')}: {type(node).__name__} is not "
                        "config syntax this reader evaluates")  # fmt: skip


def mm_config(text: str) -> dict[str, Any]:
    """The top-level names of an MMAction2 config as Python values, evaluated without running
    the text (an assignment this reader cannot evaluate is left out, named under `_unread`)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise MMConfigError(f"not MMAction2's Python config syntax: {exc}") from None
    env: dict[str, Any] = {}
    unread = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            try:
                value = _eval(stmt.value, env)
            except (MMConfigError, KeyError, IndexError, TypeError) as exc:
                unread += [f"{t.id}: {exc}" for t in stmt.targets]
                continue
            for t in stmt.targets:
                env[t.id] = value
        elif not isinstance(stmt, ast.Import | ast.ImportFrom | ast.Expr):
            unread.append(f"line {stmt.lineno}: {type(stmt).__name__}")
    if unread:
        env["_unread"] = unread
    return env


# ---- what each side says, in our dotted keys ---------------------------------------------------


def _step(pipeline: list, *types: str) -> dict | None:
    return next((s for s in pipeline or [] if isinstance(s, dict) and s.get("type") in types), None)


def _pipeline_facts(split: str, pipeline: list) -> dict[str, Any]:
    f: dict[str, Any] = {}
    p = f"data.{split}"
    s = _step(pipeline, "SampleFrames", "DenseSampleFrames")
    if s:
        dense = s["type"] == "DenseSampleFrames"
        clip_len = s.get("clip_len", 1)
        f[f"{p}.sampler.kind"] = "dense" if dense else ("segments" if clip_len == 1 else "clips")
        f[f"{p}.sampler.clip_len"] = clip_len
        f[f"{p}.sampler.frame_interval"] = s.get("frame_interval", 1)
        f[f"{p}.sampler.num_clips"] = s.get("num_clips", 1)
        f[f"{p}.sampler.test_mode"] = s.get("test_mode", False)
        f[f"{p}.sampler.twice_sample"] = s.get("twice_sample", False)
        if dense:
            f[f"{p}.sampler.sample_range"] = s.get("sample_range", 64)
            if s.get("test_mode"):
                f[f"{p}.sampler.num_sample_positions"] = s.get("num_sample_positions", 10)
    resizes = [s for s in pipeline or [] if isinstance(s, dict) and s.get("type") == "Resize"]
    short = next((r for r in resizes if tuple(r.get("scale", ()))[:1] == (-1,)), None)
    f[f"{p}.resize_short"] = short["scale"][1] if short else None
    crop = _step(pipeline, "MultiScaleCrop", "RandomResizedCrop", "CenterCrop", "ThreeCrop")
    if crop:
        kind = {"MultiScaleCrop": "multiscale", "RandomResizedCrop": "random_resized",
                "CenterCrop": "center", "ThreeCrop": "three"}[crop["type"]]  # fmt: skip
        f[f"{p}.crop.kind"] = kind
        if kind == "multiscale":
            f[f"{p}.crop.size"] = crop.get("input_size")
            f[f"{p}.crop.scales"] = tuple(crop.get("scales", (1, 0.875, 0.75, 0.66)))
            f[f"{p}.crop.random_crop"] = crop.get("random_crop", False)
            f[f"{p}.crop.max_wh_scale_gap"] = crop.get("max_wh_scale_gap", 1)
            f[f"{p}.crop.num_fixed_crops"] = crop.get("num_fixed_crops", 5)
        elif kind == "random_resized":
            f[f"{p}.crop.area_range"] = tuple(crop.get("area_range", (0.08, 1.0)))
            f[f"{p}.crop.aspect_ratio_range"] = tuple(crop.get("aspect_ratio_range", (3 / 4, 4 / 3)))
        else:
            f[f"{p}.crop.size"] = crop.get("crop_size")
        after = pipeline[pipeline.index(crop) + 1:]
        fixed = next((r for r in after if isinstance(r, dict) and r.get("type") == "Resize"
                      and r.get("keep_ratio") is False), None)  # fmt: skip
        f[f"{p}.crop.resize_to"] = tuple(fixed["scale"])[0] if fixed else None
        if kind == "random_resized" and fixed:
            f[f"{p}.crop.size"] = tuple(fixed["scale"])[0]
    flip = _step(pipeline, "Flip")
    f[f"{p}.flip_ratio"] = flip.get("flip_ratio", 0.5) if flip else 0.0
    f[f"{p}.color_jitter"] = "jitter" if _step(pipeline, "ColorJitter") else "none"
    fmt = _step(pipeline, "FormatShape")
    if fmt:
        f[f"{p}.format"] = fmt.get("input_format")
    norm = _step(pipeline, "Normalize")
    if norm and split == "train":
        f["data.mean"], f["data.std"] = tuple(norm["mean"]), tuple(norm["std"])
    return f


def _scheduler_facts(mm: dict) -> dict[str, Any]:
    f: dict[str, Any] = {}
    lr = mm.get("lr_config")
    if isinstance(lr, dict):  # 0.x
        policy = lr.get("policy", "step")
        f["schedule.kind"] = {"step": "step", "CosineAnnealing": "cosine"}.get(policy, policy)
        f["schedule.by_epoch"] = lr.get("by_epoch", True)
        if policy == "step":
            step = lr.get("step")
            f["schedule.steps"] = tuple(step) if isinstance(step, list | tuple) else (step,)
            f["schedule.gamma"] = lr.get("gamma", 0.1)
        else:
            if "min_lr_ratio" in lr:
                f["schedule.min_lr_ratio"] = lr["min_lr_ratio"]
            if "min_lr" in lr:
                f["schedule.min_lr"] = lr["min_lr"]
        warm = lr.get("warmup")
        f["schedule.warmup_epochs"] = (lr.get("warmup_iters", 0) if warm and lr.get("warmup_by_epoch")
                                       else 0 if not warm else None)  # fmt: skip
        if warm:
            f["schedule.warmup_ratio"] = lr.get("warmup_ratio", 0.1)
    sched = mm.get("param_scheduler")
    if isinstance(sched, dict):
        sched = [sched]
    if isinstance(sched, list):  # 1.x
        f["schedule.warmup_epochs"] = 0
        for s in sched:
            t = s.get("type")
            if t == "LinearLR":
                f["schedule.warmup_epochs"] = s.get("end", 0) - s.get("begin", 0)
                f["schedule.warmup_ratio"] = s.get("start_factor", 1 / 3)
            elif t == "MultiStepLR":
                f["schedule.kind"], f["schedule.steps"] = "step", tuple(s.get("milestones", ()))
                f["schedule.gamma"] = s.get("gamma", 0.1)
                f["schedule.by_epoch"] = s.get("by_epoch", True)
            elif t == "CosineAnnealingLR":
                f["schedule.kind"] = "cosine"
                f["schedule.min_lr"] = s.get("eta_min", 0)
                f["schedule.by_epoch"] = s.get("by_epoch", True)
    return f


def zoo_facts(mm: dict) -> dict[str, Any]:
    """What an MMAction2 config says, under our dotted keys (absent: the config does not name
    it)."""
    f: dict[str, Any] = {}
    model = mm.get("model") or {}
    bb, head = model.get("backbone") or {}, model.get("cls_head") or {}
    neck = model.get("neck") or {}
    for ours, src, key in (("model.depth", bb, "depth"), ("model.shift_div", bb, "shift_div"),
                           ("model.norm_eval", bb, "norm_eval"),
                           ("model.partial_bn", bb, "partial_bn"),
                           ("model.num_classes", head, "num_classes"),
                           ("model.dropout", head, "dropout_ratio"),
                           ("model.init_std", head, "init_std")):  # fmt: skip
        if key in src:
            f[ours] = src[key]
    if "num_segments" in bb or "num_segments" in head:
        f["model.num_segments"] = bb.get("num_segments", head.get("num_segments"))
    aux = (neck.get("aux_head_cfg") or {}) if isinstance(neck, dict) else {}
    if "loss_weight" in aux:
        f["model.aux_loss_weight"] = aux["loss_weight"]
    test_cfg = model.get("test_cfg") or mm.get("test_cfg") or {}
    if isinstance(test_cfg, dict):
        if "average_clips" in test_cfg:
            f["model.average_clips"] = test_cfg["average_clips"] or "none"
        if "fcn_test" in test_cfg:
            f["model.fcn_test"] = test_cfg["fcn_test"]
    if "average_clips" in head:
        f["model.average_clips"] = head["average_clips"] or "none"
    pre = model.get("data_preprocessor") or {}
    if "mean" in pre:
        f["data.mean"], f["data.std"] = tuple(pre["mean"]), tuple(pre["std"])
    for split, name in (("train", "train_pipeline"), ("val", "val_pipeline"), ("test", "test_pipeline")):
        if isinstance(mm.get(name), list):
            f.update(_pipeline_facts(split, mm[name]))
    if "3d" in str(bb.get("type", "")).lower() and "data.train.sampler.clip_len" in f:
        f["model.num_segments"] = f["data.train.sampler.clip_len"]  # a 3D trunk: T frames a clip
    wrapper = mm.get("optim_wrapper") or {}
    opt = mm.get("optimizer") if isinstance(mm.get("optimizer"), dict) else wrapper.get("optimizer") or {}
    for ours, key in (("optim.lr", "lr"), ("optim.momentum", "momentum"),
                      ("optim.weight_decay", "weight_decay"), ("optim.nesterov", "nesterov")):  # fmt: skip
        if key in opt:
            f[ours] = opt[key]
    if opt:
        f.setdefault("optim.nesterov", False)
        constructor = opt.get("constructor") or wrapper.get("constructor")
        f["optim.paramwise"] = bool(constructor and "TSM" in constructor)
        paramwise = opt.get("paramwise_cfg") or wrapper.get("paramwise_cfg") or {}
        f["optim.fc_lr5"] = bool(f["optim.paramwise"] and paramwise.get("fc_lr5", True))
    clip = ((mm.get("optimizer_config") or {}).get("grad_clip") if isinstance(mm.get("optimizer_config"), dict)
            else None) or wrapper.get("clip_grad")  # fmt: skip
    if opt:
        f["optim.grad_clip"] = clip.get("max_norm") if isinstance(clip, dict) else None
    f.update(_scheduler_facts(mm))
    train_cfg = mm.get("train_cfg") if isinstance(mm.get("train_cfg"), dict) else {}
    if "total_epochs" in mm or "max_epochs" in train_cfg:
        f["train.epochs"] = mm.get("total_epochs", train_cfg.get("max_epochs"))
    data = mm.get("data") if isinstance(mm.get("data"), dict) else {}
    loader = mm.get("train_dataloader") if isinstance(mm.get("train_dataloader"), dict) else {}
    if "videos_per_gpu" in data or "batch_size" in loader:
        f["train.videos_per_gpu"] = data.get("videos_per_gpu", loader.get("batch_size"))
    evaluation = mm.get("evaluation") if isinstance(mm.get("evaluation"), dict) else {}
    if "interval" in evaluation or "val_interval" in train_cfg:
        f["train.val_interval"] = evaluation.get("interval", train_cfg.get("val_interval"))
    return f


def relevant(cfg: Config, key: str) -> bool:
    """Whether a key of our recipe means something for this recipe (a dense sampler's window
    for a segment sampler, a cosine's floor for a step schedule, … do not)."""
    from vidtempo import models

    parts = key.split(".")
    if key.startswith("data.") and len(parts) > 3 and parts[2] in ("sampler", "crop"):
        pipe = getattr(cfg.data, parts[1])
        field = parts[3]
        if parts[2] == "sampler":
            if field == "out_of_bound":
                return False
            if field == "sample_range":
                return pipe.sampler.kind == "dense"
            if field == "num_sample_positions":
                return pipe.sampler.kind == "dense" and pipe.sampler.test_mode
            return True
        kind = pipe.crop.kind
        if field in ("scales", "max_wh_scale_gap", "random_crop", "num_fixed_crops"):
            return kind == "multiscale"
        if field in ("area_range", "aspect_ratio_range"):
            return kind == "random_resized"
        if field == "resize_to":
            return parts[1] == "train"
        return True
    s = cfg.schedule
    if key in ("schedule.steps", "schedule.gamma"):
        return s.kind == "step"
    if key in ("schedule.min_lr_ratio", "schedule.min_lr"):
        return s.kind == "cosine" and (key == "schedule.min_lr") == (s.min_lr_ratio is None)
    if key == "schedule.warmup_ratio":
        return s.warmup_epochs > 0
    family = models.family(cfg.model.arch)
    if key == "model.shift_div":
        return family in models.SHIFTING
    if key in ("model.aux_loss_weight", "model.fcn_test"):
        return family.startswith("tpn")
    return True


def our_facts(cfg: Config) -> dict[str, Any]:
    flat = C.flatten(cfg)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in flat.items()
            if relevant(cfg, k)}  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


# the keys compared: everything our recipe writes out that an MMAction2 config can name
COMPARED = ("model.", "data.train.", "data.val.", "data.test.", "data.mean", "data.std",
            "optim.", "schedule.", "train.epochs", "train.videos_per_gpu", "train.val_interval")  # fmt: skip
NOT_MM = {"model.arch", "model.pretrained", "model.load_from", "model.width", "model.stem",
          "model.tpn_channels", "model.tpn_fusion_channels"}  # fmt: skip


def diff(cfg: Config, mm: dict, gpus: int | None = None) -> list[dict]:
    """Setting by setting: {"key", "ours", "zoo", "status"}: "equal", "different" (both values),
    or "not in the log". With the log's GPU count, `optim.lr@log batch`: our lr scaled by the
    linear rule to the log's GPUs × videos per GPU, against the log's lr."""
    zoo, ours = zoo_facts(mm), our_facts(cfg)
    rows = []
    for key, value in ours.items():
        if not key.startswith(COMPARED) or key in NOT_MM:
            continue
        if key in zoo:
            status = "equal" if _same(value, zoo[key]) else "different"
            rows.append({"key": key, "ours": value, "zoo": zoo[key], "status": status})
        else:
            rows.append({"key": key, "ours": value, "zoo": None, "status": "not in the log"})
    vpg = zoo.get("train.videos_per_gpu")
    if gpus and vpg and "optim.lr" in zoo:
        scaled = C.scaled_lr(cfg.optim.lr, gpus * vpg, cfg.reference_global_batch)
        rows.append({"key": f"optim.lr at the log's {gpus} GPUs × {vpg} videos", "ours": scaled,
                     "zoo": zoo["optim.lr"],
                     "status": "equal" if _same(scaled, zoo["optim.lr"]) else "different"})  # fmt: skip
    elif "optim.lr" in zoo:
        rows.append({"key": "optim.lr at the log's batch", "ours": None, "zoo": zoo["optim.lr"],
                     "status": "not in the log (its GPU count)"})  # fmt: skip
    return rows


def markdown(rows: list[dict], zoo_config: str, source: str) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("equal", "different")}
    out = [f"# {zoo_config}: our recipe against the config in {source}", "",
           f"{counts['equal']} equal, {counts['different']} different, "
           f"{len(rows) - counts['equal'] - counts['different']} not in the log", "",
           "| setting | ours | the zoo's log | |", "|---|---|---|---|"]  # fmt: skip
    order = {"different": 0, "not in the log": 2}
    for r in sorted(rows, key=lambda r: (order.get(r["status"], 1), r["key"])):
        zoo = "–" if r["zoo"] is None and r["status"].startswith("not") else _show(r["zoo"])
        out.append(f"| {r['key']} | {_show(r['ours'])} | {zoo} | {r['status']} |")
    return "\n".join([*out, ""])


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return str(v)
