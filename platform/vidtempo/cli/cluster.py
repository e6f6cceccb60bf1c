"""`vidtempo doctor`, `ui`, `runtime-env` and `cluster-secrets`: the commands around a cluster
and its tracking."""

from __future__ import annotations

import argparse

from vidtempo.cli.common import add_address_argument, add_renamed, run_config

DOCTOR_RECIPE = "tin_r50_1x1x8_40e_sthv1_rgb"  # the flagship's, when no recipe is named


def add(sub) -> None:
    """This group's commands on the `vidtempo` parser."""
    add_doctor(sub)
    add_ui(sub)
    add_runtime_env(sub)
    add_cluster_secrets(sub)


def add_doctor(sub) -> None:
    doc = sub.add_parser("doctor", help="check the cluster before `ray job submit`: upload size, "
                         "the op on every node, storage, tracking, GPUs")  # fmt: skip
    doc.add_argument("config", nargs="?", default=None, metavar="RECIPE",
                     help=f"the recipe the job will run: its workers, storage, tracking "
                          f"(default: {DOCTOR_RECIPE}, said so)")  # fmt: skip
    add_renamed(doc, "--config", "the first argument (the recipe)", "config")
    doc.add_argument("--working-dir", default=".", help="what `--working-dir` would upload")
    add_address_argument(doc)
    doc.add_argument("--workers", type=int, default=None, help="Ray Train workers (run.num_workers)")
    doc.add_argument("--gpu", action="store_true", help="one GPU per worker (run.use_gpu)")
    doc.add_argument("--storage", default=None, help="checkpoint root: a path or s3://, gs:// "
                     "URI (run.storage_path)")  # fmt: skip
    doc.add_argument("--mlflow-uri", default=None, help="tracking URI (run.mlflow_uri)")
    doc.add_argument("--data", default=None, help="the dataset the job reads (train/ and val/ "
                     "shards, a path every node sees or s3://...): the decoding nodes read it")  # fmt: skip
    doc.add_argument("--decode-on", default=None, metavar="RESOURCE",
                     help="run.decode_resource: the nodes carrying it decode (cpu-decode nodes)")
    doc.add_argument("--experiment", default=None, help="MLflow experiment (run.experiment)")
    doc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    doc.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from vidtempo import doctor

    if not args.config:
        args.config = DOCTOR_RECIPE
        print(f"checking for {DOCTOR_RECIPE}, the default recipe (name the job's as the first "
              "argument)", flush=True)  # fmt: skip
    cfg = run_config(args)
    report = doctor.check(cfg, args.working_dir, args.address, data=args.data)
    print(doctor.render(report))
    return 0 if report["ok"] else 1


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


def cmd_ui(args: argparse.Namespace) -> int:
    from vidtempo import tracking
    from vidtempo.tracking import ui

    return ui.serve(args.mlflow_uri or tracking.resolve_uri(), args.host, args.port,
                    args.experiment)  # fmt: skip


def add_runtime_env(sub) -> None:
    re_ = sub.add_parser("runtime-env", help="--runtime-env-json for `ray job submit`: this "
                         "checkout's commit and uncommitted diff, who submits, for the run's "
                         "MLflow lineage")  # fmt: skip
    re_.add_argument("--verbose", action="store_true",
                     help="also VIDTEMPO_VERBOSE=1: the job prints Ray's INFO lines")
    re_.set_defaults(func=cmd_runtime_env, errors=("runtime",))


def cmd_runtime_env(args: argparse.Namespace) -> int:
    import json

    from vidtempo import lineage

    print(json.dumps(lineage.runtime_env(verbose=args.verbose)))
    return 0


def add_cluster_secrets(sub) -> None:
    cs = sub.add_parser("cluster-secrets", help="make the cluster's Ray token and MLflow login "
                        "once, before `ray up cluster.yaml` (kept private, never printed)")  # fmt: skip
    cs.add_argument("--folder", default="~/.vidtempo/secrets",
                    help="where (default ~/.vidtempo/secrets, which cluster.yaml mounts)")
    cs.set_defaults(func=cmd_cluster_secrets)


def cmd_cluster_secrets(args: argparse.Namespace) -> int:
    from vidtempo import cluster

    for path, what in cluster.create(args.folder).items():
        print(f"{what}: {path}")
    env = f"{args.folder.rstrip('/')}/{cluster.ENV_FILE}"
    print(f"cluster.yaml copies this folder to every node. On this machine, `source {env}` "
          "before `ray job submit`, `ray dashboard` or `vidtempo ui` against the cluster.")  # fmt: skip
    return 0
