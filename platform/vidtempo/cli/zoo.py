"""`vidtempo zoo …` (the zoo configs, their numbers, logs, plans and our comparison with them)
and `vidtempo config validate`."""

from __future__ import annotations

import argparse

from vidtempo import config as C
from vidtempo.cli.common import add_renamed


def add(sub) -> None:
    """This group's commands on the `vidtempo` parser."""
    add_zoo(sub)
    add_config(sub)


def add_zoo(sub) -> None:
    zoo = sub.add_parser("zoo", help="the zoo configs and their published numbers")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    zl = zsub.add_parser("list", help="a table of every zoo config")
    zl.set_defaults(func=cmd_zoo_list)
    zs = zsub.add_parser("show", help="the resolved config and the zoo's numbers")
    zs.add_argument("name", metavar="RECIPE", help="the recipe: a zoo config name or a YAML file")
    zs.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    zs.add_argument("--measure", action="store_true", help="also build the model: its "
                    "parameters against the zoo's and its multiply-adds (imports torch)")  # fmt: skip
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
    zi.add_argument("name", metavar="RECIPE", help="the zoo config the log trained "
                    "(`vidtempo zoo list`)")  # fmt: skip
    zi.add_argument("logs", nargs="+", metavar="LOG", help="MMAction2 0.x .log.json or .log, "
                    "1.x .log or vis_data/scalars.json: a local path or a URI")  # fmt: skip
    zi.add_argument("--experiment", default=None, help="MLflow experiment (default: the "
                    "config's run.experiment, where its reproductions go)")  # fmt: skip
    zi.add_argument("--mlflow-uri", default=None, help="tracking URI (default: VIDTEMPO_MLFLOW_URI "
                    "or the project's SQLite store)")  # fmt: skip
    zi.set_defaults(func=cmd_zoo_import_log, errors=("missing", "value"))

    zp = zsub.add_parser("plan", help="what reproducing a zoo config costs: clips to decode, "
                         "decode cores per GPU, GPU-hours, wall-clock, money")  # fmt: skip
    zp.add_argument("name", metavar="RECIPE", help="the recipe: a zoo config name or a YAML file")
    zp.add_argument("--gpus", type=int, default=None, help="GPUs (default: the zoo's train.gpus)")
    zp.add_argument("--clips-per-s", type=float, default=None,
                    help="training clips/s of one GPU (default: 500, assumed)")
    zp.add_argument("--gpu-hour-price", type=float, default=None, help="price of a GPU-hour")
    zp.add_argument("--cpu-hour-price", type=float, default=None,
                    help="price of a CPU core-hour (decode nodes)")
    zp.add_argument("--data", default=None, help="converted dataset (train/ and val/ shards) to "
                    "count the videos of (default: the dataset's known size)")  # fmt: skip
    zp.add_argument("--videos", default=None, metavar="TRAIN,VAL", help="video counts instead")
    zp.add_argument("--format", choices=["frames", "video"], default=None,
                    help="how the shards hold the videos (default: what the zoo recipe read)")
    add_renamed(zp, "--storage", "--format", "format", choices=["frames", "video"])
    zp.add_argument("--decode-ms", type=float, default=None,
                    help="decode + augment ms per clip on one core (default: measured, by storage)")
    zp.add_argument("--log", action="store_true", help="also log the plan as an MLflow run")
    zp.add_argument("--mlflow-uri", default=None, help="tracking URI for --log")
    zp.add_argument("--json", default=None, help="also write the plan as JSON here")
    zp.set_defaults(func=cmd_zoo_plan, errors=("data",))


def cmd_zoo_import_log(args: argparse.Namespace) -> int:
    """`vidtempo zoo import-log RECIPE LOG…`: each log read (what it holds, what it could not
    read) and logged once as a reference run."""
    from vidtempo import tracking
    from vidtempo.report import zoo_log

    cfg = C.load(args.name)
    zoo_log.import_logs(cfg, args.logs, args.mlflow_uri or tracking.resolve_uri(cfg),
                        args.experiment or cfg.run.experiment)  # fmt: skip
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from vidtempo.report import zoo_card

    print(zoo_card.table())
    return 0


def cmd_zoo_show(args: argparse.Namespace) -> int:
    from vidtempo.report import zoo_card

    cfg = C.load(args.name, args.set or None)
    print(zoo_card.show(cfg))
    if args.measure:
        print(zoo_card.measured(cfg))
    return 0


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
               args.data, videos, args.decode_ms, args.format)  # fmt: skip
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
