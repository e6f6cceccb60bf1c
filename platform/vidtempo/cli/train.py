"""`vidtempo train`, `evaluate`, `tune`, `demo` and `bench`: the commands that train; also the
options of the jobs/ entry points (`add_run_arguments`, `add_tune_arguments`)."""

from __future__ import annotations

import argparse
import shlex

from vidtempo import config as C
from vidtempo.cli.common import (
    RUN_ERRORS,
    add_address_argument,
    add_node_wait_argument,
    add_renamed,
    add_verbose_argument,
    apply_verbose,
    run_config,
)


def add(sub) -> None:
    """This group's commands on the `vidtempo` parser."""
    add_train(sub)
    add_evaluate(sub)
    add_tune(sub)
    add_demo(sub)
    add_bench(sub)


def add_train(sub) -> None:
    tr = sub.add_parser("train", help="train a config on Ray Train, evaluate it, log to MLflow")
    add_run_arguments(tr)


def add_run_arguments(p: argparse.ArgumentParser, config: str | None = None,
                      required: bool = True) -> None:  # fmt: skip
    """The options of `vidtempo train` and of the jobs/ entry points. `config`: None for a
    positional CONFIG, "--config" for a required option, or a config name as its default;
    `required=False`: CONFIG and --data may be left out (`vidtempo tune --report` reads MLflow)."""
    if config in (None, "--config"):
        p.add_argument("config", nargs="?" if (config or not required) else None,
                       help="the recipe: a zoo config name or a YAML file (`vidtempo zoo list`)")  # fmt: skip
    else:
        p.add_argument("config", nargs="?", default=config,
                       help=f"the recipe (default: {config})")  # fmt: skip
    add_renamed(p, "--config", "the first argument (the recipe)", "config")
    p.add_argument("--data", required=required, help="folder with train/ and val/ shard "
                   "folders: a local path or a URI (s3://BUCKET/data/sthv1, gs://…, file://…)")  # fmt: skip
    p.add_argument("--name", default=None, help="run name (default: the config name); "
                   "a name that has checkpoints resumes")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. --set optim.lr=0.01 (repeatable)")
    add_address_argument(p)
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (run.num_workers)")
    p.add_argument("--batch", type=int, default=None, help="videos per step on each worker "
                   "(run.batch_per_worker; default: the recipe's videos per GPU); the lr "
                   "follows by the linear scaling rule")  # fmt: skip
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (run.use_gpu)")
    p.add_argument("--imagenet", default=None, metavar="SOURCE", help="ImageNet ResNet-50 "
                   "weights for model.pretrained=imagenet: torchvision://resnet50 (downloaded "
                   "on each node), a URI every node reads (s3://BUCKET/resnet50.pth) or, on one "
                   "machine, a local file (or VIDTEMPO_IMAGENET)")  # fmt: skip
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


def cmd_train(args: argparse.Namespace) -> int:
    """`vidtempo train` and the jobs/ scripts: train, then print the final metrics."""
    if not args.config:
        raise C.ConfigError("which recipe? name it first: python jobs/train.py RECIPE --data DIR "
                            "(`vidtempo zoo list` shows them)")  # fmt: skip
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
    add_address_argument(ev)
    ev.add_argument("--workers", type=int, default=None, help="Ray Train workers (run.num_workers)")
    ev.add_argument("--gpu", action="store_true", help="one GPU per worker (run.use_gpu)")
    ev.add_argument("--storage", default=None, help="checkpoint root: a path or s3://, gs:// URI "
                    "(run.storage_path; Ray Train's scratch of the evaluation goes there)")  # fmt: skip
    ev.add_argument("--mlflow-uri", default=None, help="tracking URI: with it or --experiment, "
                    "the scores are also logged as a run, evaluate-<recipe>")  # fmt: skip
    ev.add_argument("--experiment", default=None, help="MLflow experiment (run.experiment)")
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
    if args.mlflow_uri or args.experiment:
        from vidtempo import tracking
        from vidtempo.tracking import record

        uri = tracking.resolve_uri(cfg)
        run_id = record.evaluation(cfg, uri, str(args.checkpoint), args.protocol, result)
        print(f"MLflow run {run_id} (evaluate-{cfg.name}) in experiment {cfg.run.experiment} of {uri}")
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
    p.add_argument("--search-seed", type=int, default=None, help="seed of the search's draws "
                   "alone (default: run.seed, which also seeds each trial's training)")  # fmt: skip
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
                   "train/ and test it on val/ (run <sweep>-final): the number to report; with "
                   "--resume, at the --workers/--batch/--gpu given (the lr rescaled by the "
                   "linear scaling rule)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep --name (its space, samples and scheduler)")
    p.add_argument("--report", default=None, metavar="SWEEP", help="print sweep SWEEP's trial "
                   "table again from MLflow (running or finished; --mlflow-uri, --experiment)")  # fmt: skip
    p.add_argument("--plot", default=None, metavar="PNG", help="with --report: draw its plot here")
    p.set_defaults(func=cmd_tune, errors=RUN_ERRORS + ("exists",))


def cmd_tune(args: argparse.Namespace) -> int:
    apply_verbose(args)
    if args.report:
        return tune_report(args)
    if not args.config or not args.data:
        raise C.ConfigError("vidtempo tune needs CONFIG and --data (or --report SWEEP)")
    from vidtempo.tune import report
    from vidtempo.tune import space as S
    from vidtempo.tune.sweep import Plan, final, sweep

    cfg = run_config(args)
    plan = None
    if not args.resume:
        file = args.space_file or (None if args.space else S.preset(cfg))
        if file and not args.space_file:
            print(f"[sweep] the preset space of {cfg.model.arch}: {file}", flush=True)
        space = S.parse(args.space, file)
        plan = Plan(space=S.describe(space), samples=args.samples, search=args.search,
                    scheduler=args.scheduler, grace_period=args.grace_period,
                    reduction_factor=args.reduction_factor, rank_on=args.rank_on,
                    search_seed=args.search_seed)  # fmt: skip
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
        res = final(cfg, args.data, name, args.imagenet, final_scale(args))
        shown = {k: v for k, v in sorted(res["metrics"].items()) if k.startswith("test/top")}
        print(f"\n{res['name']}: " + "  ".join(f"{k} {v:.2f}" for k, v in shown.items()))
        print(f"MLflow run {res['mlflow_run_id']}")
    elif out.get("best") and out["plan"].rank_on == "holdout":
        print(f"the number to report: the best config on all of train/, tested on val/:\n"
              f"  {shlex.join(tune_command(args, name))} --resume --final")  # fmt: skip
    return 0


def final_scale(args: argparse.Namespace) -> dict:
    """What this command sets of a final run's scale (--workers, --batch, --gpu, or --set of
    those keys); the rest stays the trials'."""
    from vidtempo.tune.sweep import FINAL_SCALE

    scale = {k: v for k, v in C._parse_overrides(args.overrides).items() if k in FINAL_SCALE}
    for flag, key in (("workers", "run.num_workers"), ("batch", "run.batch_per_worker")):
        if getattr(args, flag, None) is not None:
            scale[key] = getattr(args, flag)
    if getattr(args, "gpu", False):
        scale["run.use_gpu"] = True
    return scale


def tune_command(args: argparse.Namespace, name: str) -> list[str]:
    """The command that resumes sweep `name` as this one was started: config, data, every run
    flag given (ImageNet weights, decode nodes, node wait, …) and the --set items."""
    cmd = ["vidtempo", "tune", args.config, "--data", str(args.data), "--name", name]
    for flag in ("address", "workers", "batch", "imagenet", "storage", "mlflow_uri",
                 "experiment", "decode_on", "node_wait"):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    cmd += ["--gpu"] if args.gpu else []
    cmd += ["--verbose"] if getattr(args, "verbose", False) else []
    for item in args.overrides:
        cmd += ["--set", item]
    return cmd


def tune_report(args: argparse.Namespace) -> int:
    """`vidtempo tune --report SWEEP`: the table (and --plot) from the tracking store."""
    from vidtempo import tracking
    from vidtempo.tune import report

    print(report.from_mlflow_text(args.mlflow_uri or tracking.resolve_uri(), args.experiment,
                                  args.report, args.plot))  # fmt: skip
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


def add_bench(sub) -> None:
    from vidtempo import bench

    p = sub.add_parser("bench", help="measurements behind BENCHMARKS.md")
    bench.add_parsers(p.add_subparsers(dest="bench_command", required=True))
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """`vidtempo bench X`: the main of vidtempo.bench.X."""
    apply_verbose(args)
    return args.bench_main(args)
