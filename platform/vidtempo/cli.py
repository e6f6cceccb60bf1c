"""The `vidtempo` command. Each command is an `add_X(sub)` (its options) beside a `cmd_X(args)`
(a call into the library); the errors a user can cause are printed in one line, exit 2, in one
place (`run`), from the error kinds each command names (`errors=` in its defaults)."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from vidtempo import config as C


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def add_zoo(sub) -> None:
    zoo = sub.add_parser("zoo", help="the zoo configs and their published numbers")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    zl = zsub.add_parser("list", help="a table of every zoo config")
    zl.set_defaults(func=cmd_zoo_list)
    zs = zsub.add_parser("show", help="the resolved config and the zoo's numbers")
    zs.add_argument("name", help="zoo config name or YAML path")
    zs.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    zs.set_defaults(func=cmd_zoo_show)

    zc = zsub.add_parser("compare", help="our runs next to the zoo's numbers, per zoo config "
                         "(printed, and logged as a report run with Markdown and a PNG chart)")  # fmt: skip
    zc.add_argument("--experiment", action="append", default=None, metavar="NAME",
                    help="MLflow experiment(s) to report (default: every one with such runs)")
    zc.add_argument("--mlflow-uri", default=None, help="tracking URI (default: VIDTEMPO_MLFLOW_URI "
                    "or the project's SQLite store)")  # fmt: skip
    zc.add_argument("--out", default=None, help="also write the report files under this folder")
    zc.add_argument("--no-log", dest="log", action="store_false", help="print only")
    zc.add_argument("--margin", type=float, default=2.0, help="points of val/top1 behind the "
                    "zoo's training curve (`zoo import-log`) that count as falling behind")  # fmt: skip
    zc.set_defaults(func=cmd_zoo_compare)

    zi = zsub.add_parser("import-log", help="the zoo's training log(s) of a zoo config as an "
                         "MLflow reference run, to overlay on our runs' curves")  # fmt: skip
    zi.add_argument("name", help="the zoo config the log trained (`vidtempo zoo list`)")
    zi.add_argument("logs", nargs="+", metavar="LOG", help="MMAction2 0.x .log.json or .log, "
                    "1.x .log or vis_data/scalars.json: a local path or a URI")  # fmt: skip
    zi.add_argument("--experiment", default=None, help="MLflow experiment (default: the "
                    "config's run.experiment, where its reproductions go)")  # fmt: skip
    zi.add_argument("--mlflow-uri", default=None, help="tracking URI (default: VIDTEMPO_MLFLOW_URI "
                    "or the project's SQLite store)")  # fmt: skip
    zi.set_defaults(func=cmd_zoo_import_log, errors=("missing", "value"))

    zp = zsub.add_parser("plan", help="what reproducing a zoo config costs: clips to decode, "
                         "decode cores per GPU, GPU-hours, wall-clock, money")  # fmt: skip
    zp.add_argument("name", help="zoo config name or YAML")
    zp.add_argument("--gpus", type=int, default=None, help="GPUs (default: the zoo's train.gpus)")
    zp.add_argument("--clips-per-s", type=float, default=None,
                    help="training clips/s of one GPU (default: 500, assumed)")
    zp.add_argument("--gpu-hour-price", type=float, default=None, help="price of a GPU-hour")
    zp.add_argument("--cpu-hour-price", type=float, default=None,
                    help="price of a CPU core-hour (decode nodes)")
    zp.add_argument("--data", default=None, help="converted dataset (train/ and val/ shards) to "
                    "count the videos of (default: the dataset's known size)")  # fmt: skip
    zp.add_argument("--videos", default=None, metavar="TRAIN,VAL", help="video counts instead")
    zp.add_argument("--storage", choices=["frames", "video"], default=None,
                    help="how the shards hold the videos (default: what the zoo recipe read)")
    zp.add_argument("--decode-ms", type=float, default=None,
                    help="decode + augment ms per clip on one core (default: measured, by storage)")
    zp.add_argument("--log", action="store_true", help="also log the plan as an MLflow run")
    zp.add_argument("--mlflow-uri", default=None, help="tracking URI for --log")
    zp.add_argument("--json", default=None, help="also write the plan as JSON here")
    zp.set_defaults(func=cmd_zoo_plan, errors=("data",))


def cmd_zoo_import_log(args: argparse.Namespace) -> int:
    """`vidtempo zoo import-log NAME LOG…`: each log read (what it holds, what it could not
    read) and logged once as a reference run."""
    from vidtempo import tracking
    from vidtempo.report import recipe_diff, zoo_log
    from vidtempo.tracking import record

    cfg = C.load(args.name)
    uri = args.mlflow_uri or tracking.resolve_uri(cfg)
    experiment = args.experiment or cfg.run.experiment
    for path in args.logs:
        log = zoo_log.read(path)
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
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    rows = []
    for name in C.zoo_names():
        cfg = C.load(name)
        results = (
            " ".join(f"{r.top1:.2f}/{r.top5:.2f}@{r.protocol}" for r in cfg.reference.results)
            if cfg.reference
            else "-"
        )
        rows.append(
            (
                name,
                cfg.model.arch,
                cfg.data.dataset,
                str(cfg.model.num_segments),
                results,
                _fmt_int(cfg.reference.params if cfg.reference else None),
            )
        )
    header = ("name", "model", "dataset", "frames", "zoo top1/top5@views", "params")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(line.format(*r).rstrip())
    return 0


def _print_reference(cfg: C.Config) -> None:
    ref = cfg.reference
    if ref is None:
        print("reference: none")
        return
    print(f"zoo reference ({ref.source}):")
    for r in ref.results:
        label = f" ({r.name})" if r.name else ""
        print(f"  top1/top5 @{r.protocol}{label}: {r.top1:.2f} / {r.top5:.2f}")
    if ref.original_top1 is not None:
        print(
            f"  'reference' columns (original code): {ref.original_top1:.2f} / {ref.original_top5:.2f}"
        )
    print(f"  params: {ref.params:,}   FLOPs: {ref.flops:,}   gpu_mem: {ref.gpu_mem_mb} MB")
    print(f"  zoo GPUs: {ref.zoo_gpus}   resolution: {ref.resolution}   pretrain: {ref.pretrain}")
    if ref.checkpoint:
        print(f"  checkpoint: {ref.checkpoint}")


def cmd_zoo_show(args: argparse.Namespace) -> int:
    cfg = C.load(args.name, args.set or None)
    print(C.dump_yaml(cfg), end="")
    print("---")
    _print_reference(cfg)
    print(
        f"linear scaling rule: base lr {cfg.optim.lr:g} at reference global batch "
        f"{cfg.reference_global_batch} ({cfg.train.gpus} GPUs x {cfg.train.videos_per_gpu} videos)"
        f" -> effective lr {cfg.effective_lr:g} at global batch {cfg.global_batch} "
        f"({cfg.run.num_workers} workers x {cfg.batch_per_worker})"
    )
    print(f"protocols: val {C.protocol(cfg.data.val)}, test {C.protocol(cfg.data.test)}")
    _print_measured(cfg)
    return 0


def _print_measured(cfg: C.Config) -> None:
    from vidtempo import models

    params, macs224 = models.measure(cfg, 224)
    _, macs256 = models.measure(cfg, 256)
    ref = cfg.reference
    same = "" if ref is None else (" (= zoo)" if params == ref.params else f" (zoo {ref.params:,})")
    print(f"built model: {params:,} parameters{same}")
    zoo = "" if ref is None else f"; zoo FLOPs {ref.flops:,}"
    print(
        f"  multiply-adds per test view (torch.utils.flop_counter / 2): {macs224:,} at 224², "
        f"{macs256:,} at 256²{zoo}"
    )


def cmd_zoo_compare(args: argparse.Namespace) -> int:
    from vidtempo import tracking
    from vidtempo.report.zoo_compare import compare

    uri = args.mlflow_uri or tracking.resolve_uri()
    reports = compare(uri, args.experiment, log=args.log, out_dir=args.out, margin=args.margin)
    if not reports:
        print(f"no run in {uri} names a zoo config and has test results yet")
        return 1
    for exp, rep in reports.items():
        print(rep["markdown"])
        if rep["report_run_id"]:
            print(f"logged: run {rep['report_run_id']} of experiment '{exp}' "
                  "(zoo_compare.md, zoo_compare.png, zoo_compare.json)\n")  # fmt: skip
    print(f"see it in the MLflow UI: {tracking.ui_command(uri)}")
    return 0


def cmd_zoo_plan(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vidtempo.report import plan as P

    cfg = C.load(args.name)
    videos = None
    if args.videos:
        try:
            videos = tuple(int(v) for v in args.videos.split(","))
        except ValueError:
            raise C.ConfigError(f"--videos must be TRAIN,VAL counts, got {args.videos!r}") from None
        if len(videos) != 2:
            raise C.ConfigError(f"--videos must be TRAIN,VAL counts, got {args.videos!r}")
    p = P.plan(cfg, args.gpus, args.clips_per_s, args.gpu_hour_price, args.cpu_hour_price,
               args.data, videos, args.decode_ms, args.storage)  # fmt: skip
    print(P.table(p))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dataclasses.asdict(p), fh, indent=2)
    if args.log:
        from vidtempo import tracking

        uri = args.mlflow_uri or tracking.resolve_uri()
        print(f"logged: MLflow run {P.log(p, uri)} of experiment 'zoo-plan' in {uri}")
    return 0


def add_config(sub) -> None:
    cfgp = sub.add_parser("config", help="check config files")
    csub = cfgp.add_subparsers(dest="config_command", required=True)
    cv = csub.add_parser("validate", help="load a YAML strictly and report problems")
    cv.add_argument("file")
    cv.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    cv.set_defaults(func=cmd_config_validate)


def cmd_config_validate(args: argparse.Namespace) -> int:
    cfg = C.load(args.file, args.set or None)
    print(
        f"{args.file}: valid ({cfg.name}: {cfg.model.arch}, {cfg.data.dataset}, "
        f"{len(C.flatten(cfg))} keys)"
    )
    return 0


def add_doctor(sub) -> None:
    doc = sub.add_parser("doctor", help="check the cluster before `ray job submit`: upload size, "
                         "the op on every node, storage, tracking, GPUs")  # fmt: skip
    doc.add_argument("--config", default="tin_r50_1x1x8_40e_sthv1_rgb",
                     help="the config the job will run (its workers, storage, tracking)")
    doc.add_argument("--working-dir", default=".", help="what `--working-dir` would upload")
    doc.add_argument("--address", default=None, help="the cluster: `auto` on its head (default: "
                     "RAY_ADDRESS, else a local Ray instance)")  # fmt: skip
    doc.add_argument("--workers", type=int, default=None, help="run.num_workers")
    doc.add_argument("--gpu", action="store_true", help="run.use_gpu")
    doc.add_argument("--storage", default=None, help="run.storage_path")
    doc.add_argument("--mlflow-uri", default=None, help="run.mlflow_uri")
    doc.add_argument("--data", default=None, help="the dataset the job reads (train/ and val/ "
                     "shards, a path every node sees or s3://...): the decoding nodes read it")  # fmt: skip
    doc.add_argument("--decode-on", default=None, metavar="RESOURCE",
                     help="run.decode_resource: the nodes carrying it decode (cpu-decode nodes)")
    doc.add_argument("--experiment", default=None, help=argparse.SUPPRESS)
    doc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    doc.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from vidtempo import doctor

    cfg = run_config(args)
    report = doctor.check(cfg, args.working_dir, args.address, data=args.data)
    print(doctor.render(report))
    return 0 if report["ok"] else 1


def add_prepare(sub) -> None:
    prep = sub.add_parser("prepare", help="convert videos or rawframes to Parquet shards")
    psub = prep.add_subparsers(dest="prepare_command", required=True)
    for kind, help_ in [
        ("rawframes", "frame folders + an MMAction2 list (frame_dir num_frames label)"),
        ("videos", "video files + a list (path label | video_id,num_frames,label | Kinetics CSV)"),
    ]:
        pp = psub.add_parser(kind, help=help_)
        pp.add_argument("--list", required=True, help="the annotation list (a path or a URI)")
        pp.add_argument("--root", required=True, help="the folder the list's paths are relative "
                        "to: a local path or a URI (s3://BUCKET/kinetics400/videos)")  # fmt: skip
        pp.add_argument("--out", required=True, help="the shard directory to write (one split): "
                        "a local path or a URI (s3://BUCKET/data/k400/train)")  # fmt: skip
        pp.add_argument("--dataset", required=True, help="dataset name, e.g. sthv1, kinetics400")
        pp.add_argument("--split", required=True, help="train, val or test")
        pp.add_argument("--classes", default=None, help="class names, one per line, in label order")
        pp.add_argument(
            "--short-side", type=int, default=None, help="resize frames to this short side"
        )
        pp.add_argument("--videos-per-shard", type=int, default=64)
        pp.add_argument(
            "--workers", type=int, default=None, help="decoder processes (default: all CPUs)"
        )
        pp.add_argument(
            "--timeout", type=float, default=120.0, help="seconds per video before quarantine"
        )
        if kind == "rawframes":
            pp.add_argument("--filename-tmpl", default="img_{:05}.jpg")
            pp.add_argument("--start-index", type=int, default=1)
        else:
            pp.add_argument("--storage", choices=["video", "frames"], default="video",
                            help="keep the container bytes (video) or store JPEG frames")  # fmt: skip
            pp.add_argument(
                "--keyint", type=int, default=None, help="re-encode with this keyframe interval"
            )
        add_prepare_ray(pp)
        pp.set_defaults(func=cmd_prepare, errors=("data", "os"))
    ps = psub.add_parser("synthetic", help="generate and convert the synthetic temporal dataset")
    ps.add_argument("--out", required=True, help="a local folder or a URI (s3://BUCKET/data/synthetic)")
    ps.add_argument("--train-per-class", type=int, default=24)
    ps.add_argument("--val-per-class", type=int, default=8)
    ps.add_argument("--frames", type=int, default=32)
    ps.add_argument("--size", type=int, default=64)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--workers", type=int, default=None)
    ps.add_argument("--videos-per-shard", type=int, default=64)
    ps.add_argument("--storage", choices=["frames", "video"], default="frames",
                    help="JPEG frames (default: cheapest to decode) or the lossless H.264 videos")
    ps.add_argument("--tempo", action="store_true",
                    help="16 classes: the demo's 12 and the tempo classes (a dot circling slowly "
                         "or fast; stripes drifting right or left at a random speed)")  # fmt: skip
    add_prepare_ray(ps)
    ps.set_defaults(func=cmd_prepare, errors=("data", "os"))


def add_prepare_ray(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="convert as Ray tasks, one per shard, across the cluster at ADDRESS (default: "
             "RAY_ADDRESS, else a local instance); --root and --out must then be URIs or "
             "shared mounts when the cluster has several nodes")  # fmt: skip
    parser.add_argument("--decode-on", default=None, metavar="RESOURCE",
                        help="with --ray: run the tasks on the nodes carrying this Ray resource "
                             "(cluster.yaml's cpu-decode nodes carry `decode`)")  # fmt: skip
    add_node_wait_argument(parser)


def add_node_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-wait", type=float, default=None, metavar="MINUTES",
                        help="on a cluster with an autoscaler: how long to wait for the nodes it "
                             "launches before giving up (default 20; run.node_wait_minutes)")  # fmt: skip


def cmd_prepare(args: argparse.Namespace) -> int:
    import os

    from vidtempo.data import prepare
    from vidtempo.data.convert import Options

    workers = args.workers or os.cpu_count() or 2
    if args.prepare_command == "synthetic":
        per_class = {"train": args.train_per_class, "val": args.val_per_class}
        manifests = prepare.prepare_synthetic(args.out, per_class, args.frames, args.size,
                                              args.seed, workers, ray_address=args.ray,
                                              decode_resource=args.decode_on,
                                              videos_per_shard=args.videos_per_shard,
                                              storage_kind=args.storage,
                                              classes=16 if args.tempo else 12,
                                              node_wait_minutes=args.node_wait or C.RunConfig.node_wait_minutes)  # fmt: skip
    else:
        opts = Options(out=args.out, dataset=args.dataset, split=args.split,
                       short_side=args.short_side, videos_per_shard=args.videos_per_shard,
                       workers=workers, timeout=args.timeout,
                       node_wait_minutes=args.node_wait or C.RunConfig.node_wait_minutes)  # fmt: skip
        if args.prepare_command == "rawframes":
            opts.filename_tmpl, opts.start_index = args.filename_tmpl, args.start_index
            m = prepare.prepare_rawframes(args.list, args.root, opts, args.classes,
                                          args.ray, args.decode_on)  # fmt: skip
        else:
            opts.storage, opts.keyint = args.storage, args.keyint
            m = prepare.prepare_videos(args.list, args.root, opts, args.classes, args.ray,
                                       args.decode_on)  # fmt: skip
        manifests = {args.split: m}
    for split, m in manifests.items():
        print(f"{split}: {m['num_videos']} videos in {len(m['shards'])} shards, "
              f"{len(m['classes'])} classes, {m['num_quarantined']} quarantined")  # fmt: skip
    return 0


def add_import_checkpoint(sub) -> None:
    imp = sub.add_parser("import-checkpoint", help="convert another codebase's checkpoint")
    imp.add_argument("source", choices=["mmaction2"], help="where the checkpoint comes from")
    imp.add_argument("input", help="the .pth file (MMAction2 0.x or 1.x)")
    imp.add_argument("output", help="the vidtempo checkpoint to write")
    imp.add_argument("--config", required=True, help="zoo config name or YAML of the model")
    imp.set_defaults(func=cmd_import_checkpoint, errors=("checkpoint", "value", "missing"))


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from vidtempo import models
    from vidtempo.models.checkpoint import import_mmaction2

    cfg = C.load(args.config)
    n = import_mmaction2(args.input, args.output, models.build(cfg), cfg.name)
    print(f"wrote {args.output}: {n} tensors for {cfg.name} (strict: every key mapped)")
    return 0


def add_train(sub) -> None:
    tr = sub.add_parser("train", help="train a config on Ray Train, evaluate it, log to MLflow")
    add_run_arguments(tr)


def add_run_arguments(p: argparse.ArgumentParser, config: str | None = None,
                      required: bool = True) -> None:  # fmt: skip
    """The options of `vidtempo train` and of the jobs/ entry points. `config`: None for a
    positional CONFIG, "--config" for a required option, or a config name as its default;
    `required=False`: CONFIG and --data may be left out (`vidtempo tune --report` reads MLflow)."""
    if config is None:
        p.add_argument("config", nargs=None if required else "?",
                       help="zoo config name or YAML (`vidtempo zoo list`)")  # fmt: skip
    elif config == "--config":
        p.add_argument("--config", required=required, help="zoo config name or YAML")
    else:
        p.add_argument("--config", default=config, help=f"zoo config (default: {config})")
    p.add_argument("--data", required=required, help="folder with train/ and val/ shard "
                   "folders: a local path or a URI (s3://BUCKET/data/sthv1, gs://…, file://…)")  # fmt: skip
    p.add_argument("--name", default=None, help="run name (default: the config name); "
                   "a name that has checkpoints resumes")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (run.num_workers)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (run.use_gpu)")
    p.add_argument("--imagenet", default=None, help="torchvision ResNet-50 state dict for "
                   "model.pretrained=imagenet (or VIDTEMPO_IMAGENET)")  # fmt: skip
    p.add_argument("--storage", default=None, help="checkpoint root: a path or s3://, gs:// URI")
    p.add_argument("--mlflow-uri", default=None, help="tracking URI (default: SQLite under "
                   "the project, or VIDTEMPO_MLFLOW_URI)")  # fmt: skip
    p.add_argument("--experiment", default=None, help="MLflow experiment (run.experiment)")
    p.add_argument("--decode-on", default=None, metavar="RESOURCE", help="decode on the nodes "
                   "that carry this Ray resource (run.decode_resource; cluster.yaml's cpu-decode "
                   "nodes carry `decode`)")  # fmt: skip
    add_node_wait_argument(p)
    add_verbose_argument(p)
    p.set_defaults(func=cmd_train, errors=RUN_ERRORS)


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="also print Ray Train's and Ray "
                   "Data's INFO lines (or set VIDTEMPO_VERBOSE=1)")  # fmt: skip


def apply_verbose(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        from vidtempo import verbosity

        verbosity.set_verbose(True)


def run_config(args: argparse.Namespace) -> C.Config:
    overrides = list(args.overrides)
    for flag, key in (("workers", "run.num_workers"), ("storage", "run.storage_path"),
                      ("mlflow_uri", "run.mlflow_uri"), ("experiment", "run.experiment"),
                      ("decode_on", "run.decode_resource"),
                      ("node_wait", "run.node_wait_minutes")):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if getattr(args, "gpu", False):
        overrides.append("run.use_gpu=true")
    return C.load(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """`vidtempo train` and the jobs/ scripts: train, then print the final metrics."""
    from vidtempo import tracking
    from vidtempo.train.run import fit

    apply_verbose(args)
    cfg = run_config(args)
    res = fit(cfg, args.data, name=args.name, imagenet=args.imagenet)
    shown = {k: v for k, v in sorted(res["metrics"].items()) if "top" in k}
    print(f"\n{res['name']}: " + "  ".join(f"{k} {v:.2f}" for k, v in shown.items()))
    print(f"checkpoints: {res['run_dir']}")
    print(f"MLflow run {res['mlflow_run_id']} in {res['mlflow_uri']}")
    print(f"open the UI: {tracking.ui_command(res['mlflow_uri'])}")
    return 0


def add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="a checkpoint under the config's test protocol")
    ev.add_argument("config", help="zoo config name or YAML")
    ev.add_argument("checkpoint", help="a run's checkpoint directory, best/epoch_*.pt, or a file "
                    "from `vidtempo import-checkpoint` (a local path or a URI)")  # fmt: skip
    ev.add_argument("--data", required=True, help="folder with the val/ shards (a path or a URI)")
    ev.add_argument("--protocol", choices=["test", "val"], default="test",
                    help="the config's test pipeline (default) or its val pipeline")  # fmt: skip
    ev.add_argument("--workers", type=int, default=None, help="Ray Train workers")
    ev.add_argument("--gpu", action="store_true", help="one GPU per worker")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    add_verbose_argument(ev)
    ev.set_defaults(func=cmd_evaluate, errors=RUN_ERRORS + ("value",))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from vidtempo.train.run import evaluate

    apply_verbose(args)
    cfg = run_config(args)
    result = evaluate(cfg, args.checkpoint, args.data, protocol=args.protocol)
    for k, v in sorted(result.items()):
        print(f"{k:32s} {v:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def add_tune(sub) -> None:
    tn = sub.add_parser("tune", help="a Ray Tune sweep (random, grid or TPE; ASHA) ranked on a "
                        "held-out part of train/, with nested MLflow runs")  # fmt: skip
    add_tune_arguments(tn)


def add_tune_arguments(p: argparse.ArgumentParser, config: str | None = None) -> None:
    """The options of `vidtempo tune` and jobs/tune_*.py. With neither --space nor
    --space-file, the sweep searches the preset space of the config's model family
    (jobs/configs/spaces/); --space-file replaces it, --space items add to the file."""
    add_run_arguments(p, config, required=False)
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help="e.g. optim.lr=loguniform:1e-3:1e-1, model.shift_div=choice:4,8,16 "
                   "(the lr is the base lr at the zoo's batch)")  # fmt: skip
    p.add_argument("--space-file", default=None, help="YAML mapping dotted keys to SPECs "
                   "(default: the model family's preset in jobs/configs/spaces/)")  # fmt: skip
    p.add_argument("--search", choices=["random", "tpe"], default="random",
                   help="random (and grid) sampling, or Optuna's TPE seeded by run.seed")
    p.add_argument("--samples", type=int, default=None, help="trials drawn (default: sized to "
                   "the space; random search repeats a grid axis per sample)")  # fmt: skip
    p.add_argument("--scheduler", choices=["asha", "grid"], default="asha",
                   help="asha stops weak trials early; grid runs every trial to the end")
    p.add_argument("--grace-period", type=int, default=None,
                   help="ASHA: epochs before a stop (default: the first epoch past the warm-up)")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA: keep 1/rf per rung")
    p.add_argument("--rank-on", choices=["holdout", "val"], default="holdout",
                   help="holdout: trials ranked on tune.holdout of train/ they do not train on "
                   "(default); val: on val/, the split the result is reported on")  # fmt: skip
    p.add_argument("--clips-per-s", type=float, default=None,
                   help="per GPU (or CPU worker), for the budget printed before the first trial")
    p.add_argument("--final", action="store_true", help="then train the best config on all of "
                   "train/ and test it on val/ (run <sweep>-final): the number to report")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep --name (its space, samples and scheduler)")
    p.add_argument("--report", default=None, metavar="SWEEP", help="print sweep SWEEP's trial "
                   "table again from MLflow (running or finished; --mlflow-uri, --experiment)")  # fmt: skip
    p.add_argument("--plot", default=None, metavar="PNG", help="with --report: draw its plot here")
    p.set_defaults(func=cmd_tune, errors=RUN_ERRORS + ("exists",))


def cmd_tune(args: argparse.Namespace) -> int:
    from vidtempo.tune import report
    from vidtempo.tune import space as S
    from vidtempo.tune.sweep import Plan, final, sweep

    apply_verbose(args)
    if args.report:
        return tune_report(args)
    if not args.config or not args.data:
        raise C.ConfigError("vidtempo tune needs CONFIG and --data (or --report SWEEP)")
    cfg = run_config(args)
    plan = None
    if not args.resume:
        file = args.space_file or (None if args.space else S.preset(cfg))
        if file and not args.space_file:
            print(f"[sweep] the preset space of {cfg.model.arch}: {file}", flush=True)
        space = S.parse(args.space, file)
        plan = Plan(space=S.describe(space), samples=args.samples, search=args.search,
                    scheduler=args.scheduler, grace_period=args.grace_period,
                    reduction_factor=args.reduction_factor, rank_on=args.rank_on)  # fmt: skip
    out = sweep(cfg, args.data, plan, args.name, args.resume, args.imagenet, args.clips_per_s)
    print("\n" + report.table(out["rows"], out["metric"]))
    if out.get("scaling"):
        print(f"\nthe linear scaling rule: the best effective lr per global batch\n\n{out['scaling']}")
    name = out["sweep_dir"].rstrip("/").rsplit("/", 1)[-1]
    if out.get("best"):
        print(f"\nbest: trial {out['best']['trial']} {out['best']['params']} "
              f"{out['metric']} {out['best']['best']:.2f}")  # fmt: skip
        print(f"best config: {out['best_config_path']}")
    print(f"MLflow parent run {out['parent_run_id']}")
    if out.get("best") and args.final:
        res = final(cfg, args.data, name, args.imagenet)
        shown = {k: v for k, v in sorted(res["metrics"].items()) if k.startswith("test/top")}
        print(f"\n{res['name']}: " + "  ".join(f"{k} {v:.2f}" for k, v in shown.items()))
        print(f"MLflow run {res['mlflow_run_id']}")
    elif out.get("best") and out["plan"].rank_on == "holdout":
        print(f"the number to report: the best config on all of train/, tested on val/:\n"
              f"  {' '.join(tune_command(args, name))} --resume --final")  # fmt: skip
    return 0


def tune_command(args: argparse.Namespace, name: str) -> list[str]:
    """The command that resumes sweep `name` as this one was started (config, data, sets)."""
    cmd = ["vidtempo", "tune", args.config, "--data", str(args.data), "--name", name]
    for flag in ("workers", "storage", "mlflow_uri", "experiment"):
        value = getattr(args, flag, None)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    cmd += ["--gpu"] if args.gpu else []
    for item in args.overrides:
        cmd += ["--set", item]
    return cmd


def tune_report(args: argparse.Namespace) -> int:
    """`vidtempo tune --report SWEEP`: the table (and --plot) from the tracking store."""
    from vidtempo import tracking
    from vidtempo.tune import report

    uri = args.mlflow_uri or tracking.resolve_uri()
    sweep_name = args.report
    found = report.from_mlflow(uri, args.experiment, sweep_name)
    tags = found["parent"]["tags"]
    print(f"sweep {sweep_name} (MLflow run {found['parent']['run_id']}, "
          f"{found['parent']['status']}): {tags.get('vidtempo.search', 'random')} search, "
          f"{tags.get('vidtempo.scheduler', '?')}, ranked on "
          f"{tags.get('vidtempo.ranked_on', found['metric'])}\n")  # fmt: skip
    print(report.table(found["rows"], found["metric"]))
    rule = report.scaling(found["rows"], found["metric"], found["mode"])
    if rule:
        print("\nthe linear scaling rule: the best effective lr per global batch\n\n" + "\n".join(rule))
    best = [r for r in found["rows"] if r["is_best"]]
    if best:
        print(f"\nbest: trial {best[0]['trial']} {best[0]['params']} {found['metric']} "
              f"{best[0]['best']:.2f} (MLflow run {best[0]['mlflow_run_id']})")  # fmt: skip
    if args.plot:
        import matplotlib.pyplot as plt

        figure = report.plot(found["rows"], found["space"], found["metric"], f"sweep {sweep_name}")
        figure.savefig(args.plot, dpi=100)
        plt.close(figure)
        print(f"plot: {args.plot}")
    return 0


def add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="the main job on the synthetic dataset: TIN vs TSN")
    demo.add_argument("--workdir", default=None, help="default: <home>/demo")
    demo.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    add_verbose_argument(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from vidtempo import demo

    apply_verbose(args)
    return demo.main(args.workdir, args.epochs)


def cmd_ui(args: argparse.Namespace) -> int:
    import signal

    from vidtempo import tracking

    uri = args.mlflow_uri or tracking.resolve_uri()
    proc, base = tracking.start_ui(uri, args.host, args.port)
    url = tracking.runs_page(base, uri, args.experiment)
    if proc is None:
        print(f"the tracking server {base} is up; its runs: {url}")
        return 0
    print(f"MLflow UI on {base} (serving {uri}); Ctrl-C stops it", flush=True)
    print(f"runs: {url}", flush=True)
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a `kill` stops the UI too, as Ctrl-C does
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # mlflow ui stops its server workers
        proc.wait(timeout=30)
    return 0


def add_ui(sub) -> None:
    ui = sub.add_parser("ui", help="the MLflow UI on this project's store (127.0.0.1), and the "
                        "URL of an experiment's runs page")  # fmt: skip
    ui.add_argument("--experiment", default=None,
                    help="whose runs page to print (default: the experiment of the newest run)")
    ui.add_argument("--mlflow-uri", default=None, help="tracking URI (default: the project's "
                    "SQLite store, or VIDTEMPO_MLFLOW_URI); an http:// server is only checked")  # fmt: skip
    ui.add_argument("--host", default="127.0.0.1",
                    help="interface to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui, errors=("os", "value", "runtime"))


def cmd_runtime_env(args: argparse.Namespace) -> int:
    import json

    from vidtempo import lineage

    print(json.dumps(lineage.runtime_env(verbose=args.verbose)))
    return 0


def add_runtime_env(sub) -> None:
    re_ = sub.add_parser("runtime-env", help="--runtime-env-json for `ray job submit`: this "
                         "checkout's commit and uncommitted diff, who submits, for the run's "
                         "MLflow lineage")  # fmt: skip
    re_.add_argument("--verbose", action="store_true",
                     help="also VIDTEMPO_VERBOSE=1: the job prints Ray's INFO lines")
    re_.set_defaults(func=cmd_runtime_env, errors=("runtime",))


def cmd_cluster_secrets(args: argparse.Namespace) -> int:
    from vidtempo import cluster

    for path, what in cluster.create(args.folder).items():
        print(f"{what}: {path}")
    env = f"{args.folder.rstrip('/')}/{cluster.ENV_FILE}"
    print(f"cluster.yaml copies this folder to every node. On this machine, `source {env}` "
          "before `ray job submit`, `ray dashboard` or `vidtempo ui` against the cluster.")  # fmt: skip
    return 0


def add_cluster_secrets(sub) -> None:
    cs = sub.add_parser("cluster-secrets", help="make the cluster's Ray token and MLflow login "
                        "once, before `ray up cluster.yaml` (kept private, never printed)")  # fmt: skip
    cs.add_argument("--folder", default="~/.vidtempo/secrets",
                    help="where (default ~/.vidtempo/secrets, which cluster.yaml mounts)")
    cs.set_defaults(func=cmd_cluster_secrets)


def add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measurements behind BENCHMARKS.md")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    for add in (add_bench_op, add_bench_models, add_bench_data, add_bench_prepare, add_bench_train,
                add_bench_tune, add_bench_temporal, add_bench_demo, add_bench_step):  # fmt: skip
        add(bsub)


def cmd_bench(args: argparse.Namespace) -> int:
    """`vidtempo bench X`: the main of vidtempo.bench.X."""
    apply_verbose(args)
    return importlib.import_module(f"vidtempo.bench.{args.bench_command}").main(args)


def add_bench_op(bsub) -> None:
    bo = bsub.add_parser("op", help="tin_shift fwd+bwd: native kernel vs pure-PyTorch reference")
    bo.add_argument("--device", default="cpu", help="cpu or cuda")
    bo.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"]
    )
    bo.add_argument("--videos", type=int, default=8, help="videos per batch (N)")
    bo.add_argument("--frames", type=int, default=8, help="frames per video (T)")
    bo.add_argument("--repeats", type=int, default=20, help="timed rounds per shape")
    bo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    bo.add_argument("--json", default=None, help="also write the results to this JSON file")
    bo.set_defaults(func=cmd_bench)


def add_bench_models(bsub) -> None:
    bm = bsub.add_parser("models", help="train-step cost per clip of TSN/TSM/TIN/TANet/TPN vs TSN")
    bm.add_argument("--size", type=int, default=112)
    bm.add_argument("--frames", type=int, default=8)
    bm.add_argument("--clips", type=int, default=2, help="clips per batch")
    bm.add_argument("--repeats", type=int, default=5)
    bm.add_argument("--only", nargs="+", default=None, help="a subset, e.g. --only TSN TSM TIN")
    bm.add_argument("--json", default=None)
    bm.set_defaults(func=cmd_bench)


def add_bench_data(bsub) -> None:
    bd = bsub.add_parser("data", help="Ray Data pipeline vs a torch DataLoader, clips/s")
    bd.add_argument("--workdir", default="bench/data", help="where the benchmark dataset is made")
    bd.add_argument("--per-class", type=int, default=32, help="synthetic train videos per class")
    bd.add_argument("--size", type=int, default=128, help="synthetic frame size")
    bd.add_argument("--cpus", type=int, default=2)
    bd.add_argument("--rounds", type=int, default=2)
    bd.add_argument("--epochs", type=int, default=3, help="passes over the data per timing")
    bd.add_argument("--s3", action="store_true", help="also stream the shards from a bucket of a "
                    "local S3 server (moto), timed beside the local copy")  # fmt: skip
    bd.add_argument("--json", default=None)
    bd.set_defaults(func=cmd_bench)


def add_bench_train(bsub) -> None:
    bt = bsub.add_parser("train", help="clips/s of a full training step (SGD, clip) per model")
    bt.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    bt.add_argument("--size", type=int, default=224)
    bt.add_argument("--frames", type=int, default=8)
    bt.add_argument("--clips", type=int, default=None, help="clips per step (cpu 2, cuda 16)")
    bt.add_argument("--repeats", type=int, default=3)
    bt.add_argument("--only", nargs="+", default=None, help="a subset, e.g. --only TSN TIN")
    bt.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 on the GPU")
    bt.add_argument("--json", default=None)
    bt.set_defaults(func=cmd_bench)


def add_bench_tune(bsub) -> None:
    bu = bsub.add_parser("tune", help="the full grid vs random + ASHA vs TPE + ASHA on the "
                         "synthetic dataset: trial-epochs to 98%% of the grid's best")  # fmt: skip
    bu.add_argument("--workdir", default="bench/tune", help="where the synthetic data is made")
    bu.add_argument("--epochs", type=int, default=12, help="per trial (default 12)")
    bu.add_argument("--grace-period", type=int, default=2,
                    help="ASHA's first rung, in epochs (default 2)")
    bu.add_argument("--reduction-factor", type=int, default=3,
                    help="ASHA keeps 1/rf of the trials at each rung (default 3)")
    bu.add_argument("--space", action="append", default=None, metavar="KEY=grid:A,B",
                    help="the space (default: lr 0.00375 … 0.12, ×2 steps × shift_div 2/4)")
    bu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override of the base recipe tin_r18_synthetic (after the "
                    "bench's own schedule.warmup_epochs=0 train.min_steps=null)")
    bu.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                    help="run.seed of each random and TPE sweep (default 0 1)")
    bu.add_argument("--samples", type=int, default=None,
                    help="trials of each random and TPE sweep (default: half the grid's)")
    bu.add_argument("--within", type=float, default=0.98,
                    help="the target: this share of the grid's best (default 0.98)")
    bu.add_argument("--searchers", nargs="+", default=["grid", "random+asha", "tpe+asha"],
                    choices=["grid", "random+asha", "tpe+asha"], help="a subset (grid first)")
    bu.add_argument("--rank-on", choices=["val", "holdout"], default="val",
                    help="the split every sweep ranks on (default val: 384 videos here)")
    bu.add_argument("--json", default=None, help="also write the result as JSON here")
    bu.set_defaults(func=cmd_bench)


def add_bench_prepare(bsub) -> None:
    bp = bsub.add_parser("prepare", help="videos/s of `prepare`: local process pool vs Ray "
                         "tasks, and the K400 / sthv1 conversion on N decode nodes")  # fmt: skip
    bp.add_argument("--workdir", default="bench/prepare", help="where the inputs are made")
    bp.add_argument("--videos", type=int, default=32, help="inputs of each kind")
    bp.add_argument("--cpus", type=int, default=2)
    bp.add_argument("--per-shard", type=int, default=8, help="videos per shard (per Ray task)")
    bp.add_argument("--rounds", type=int, default=2)
    bp.add_argument("--json", default=None)
    bp.set_defaults(func=cmd_bench)


def add_bench_temporal(bsub) -> None:
    from vidtempo.bench.temporal import RECIPES, SEEDS

    bt = bsub.add_parser("temporal", help="TSN/TSM/TIN/TANet/TPN-TSM on the synthetic temporal "
                         "set with its tempo classes over several seeds: accuracy on the order "
                         "pairs, the tempo pair, the varied-speed order pair and the appearance "
                         "classes")  # fmt: skip
    bt.add_argument("--workdir", default="bench/temporal", help="where the data and runs go")
    bt.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="run.seed values")
    bt.add_argument("--only", nargs="+", default=None, choices=list(RECIPES), help="a subset")
    bt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override of every recipe, e.g. --set train.epochs=8")
    bt.add_argument("--json", default=None, help="also write the result as JSON here")
    add_verbose_argument(bt)
    bt.set_defaults(func=cmd_bench)


def add_bench_demo(bsub) -> None:
    from vidtempo.bench.demo import MODELS

    bd = bsub.add_parser("demo", help="where `make demo`'s time goes: decode, augment, steps, "
                         "validation, checkpoints, Ray's processes; against a bare loop")  # fmt: skip
    bd.add_argument("--workdir", default="bench/demo", help="where the demo's data and runs go")
    bd.add_argument("--epochs", type=int, default=3, help="epochs of each demo run (default 3)")
    bd.add_argument("--only", nargs="+", default=None, choices=list(MODELS), help="a subset")
    bd.add_argument("--json", default=None, help="also write the result as JSON here")
    bd.set_defaults(func=cmd_bench)


def add_bench_step(bsub) -> None:
    from vidtempo.bench.step import RECIPES

    bs = bsub.add_parser("step", help="the synthetic recipes' training step at the demo's "
                         "shapes, one thread: TSM, TIN, TANet vs TSN")  # fmt: skip
    bs.add_argument("--batch", type=int, default=8, help="clips per step (default 8, the demo's)")
    bs.add_argument("--rounds", type=int, default=3, help="rounds the models take turns in")
    bs.add_argument("--repeats", type=int, default=15, help="steps per model and round")
    bs.add_argument("--only", nargs="+", default=None, choices=list(RECIPES),
                    help="a subset (TSN is always timed: the ratios are to it)")
    bs.add_argument("--json", default=None, help="also write the result as JSON here")
    bs.set_defaults(func=cmd_bench)


# ---- the parser, and the one place that reports a user's errors ------------------------------

# The error kinds of train, evaluate and tune (`errors=` in a command's defaults); every command
# also reports a bad config, storage and an unreachable cluster (`_error_types`)
RUN_ERRORS = ("data", "resource", "missing")


def _error_types(kinds: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    from vidtempo.storage import StorageError

    types: list[type[BaseException]] = [C.ConfigError, StorageError, ConnectionError]
    for kind in kinds:
        if kind == "data":
            from vidtempo.data.schema import DataError as t
        elif kind == "resource":
            from vidtempo.preflight import ResourceError as t
        elif kind == "checkpoint":
            from vidtempo.models.checkpoint import CheckpointMismatch as t
        else:
            t = {"missing": FileNotFoundError, "exists": FileExistsError,
                 "value": ValueError, "os": OSError, "runtime": RuntimeError}[kind]  # fmt: skip
        types.append(t)
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidtempo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_zoo, add_doctor, add_config, add_prepare, add_import_checkpoint, add_train,
                add_evaluate, add_tune, add_demo, add_bench, add_ui, add_runtime_env,
                add_cluster_secrets):  # fmt: skip
        add(sub)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the parsed command (`args.func`); an error of a kind it names (`args.errors`), or a
    bad config, storage or an unreachable cluster, is printed in one line and gives exit 2."""
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, _error_types(tuple(getattr(args, "errors", ())))):
            raise
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def script() -> None:
    """The `vidtempo` command: main(), then exit without the interpreter's last garbage
    collections over everything torch, Ray and MLflow loaded (~0.5M objects: 2.6 s of the
    exit on a fast morning of 2 cores, 0.7 s frozen; BENCHMARKS.md, issue 25's fifth round).
    atexit handlers (Ray's shutdown among them) still run."""
    rc = main()
    gc.freeze()
    sys.exit(rc)


if __name__ == "__main__":
    script()
