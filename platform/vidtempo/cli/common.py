"""What several commands share: the verbosity flag, the --node-wait flag, the error kinds of the
commands that run on Ray, and the config a run's flags resolve to."""

from __future__ import annotations

import argparse

from vidtempo import config as C

# The error kinds of train, evaluate and tune (`errors=` in a command's defaults); every command
# also reports a bad config, storage and an unreachable cluster (cli._error_types)
RUN_ERRORS = ("data", "resource", "missing")


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="also print Ray Train's and Ray "
                   "Data's INFO lines (or set VIDTEMPO_VERBOSE=1)")  # fmt: skip


def apply_verbose(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        from vidtempo import verbosity

        verbosity.set_verbose(True)


def add_node_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-wait", type=float, default=None, metavar="MINUTES",
                        help="on a cluster with an autoscaler: how long to wait for the nodes it "
                             "launches before giving up (default 20; run.node_wait_minutes)")  # fmt: skip


def run_config(args: argparse.Namespace) -> C.Config:
    overrides = list(args.overrides)
    for flag, key in (("workers", "run.num_workers"), ("batch", "run.batch_per_worker"),
                      ("storage", "run.storage_path"),
                      ("mlflow_uri", "run.mlflow_uri"), ("experiment", "run.experiment"),
                      ("decode_on", "run.decode_resource"),
                      ("node_wait", "run.node_wait_minutes")):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if getattr(args, "gpu", False):
        overrides.append("run.use_gpu=true")
    return C.load(args.config, overrides)


def precheck(args: argparse.Namespace) -> None:
    """The mistakes a parser can catch, caught before a command imports torch or Ray (within a
    second): an unknown recipe, a malformed or unknown --set key or value, a malformed --space
    item, a local --data that does not exist. Each raises the error its command reports."""
    if getattr(args, "config", None) and hasattr(args, "overrides"):
        run_config(args)  # the recipe, the flags' and --set's keys and values
    if getattr(args, "space", None):
        from vidtempo.tune import space as S

        S.parse(args.space, None)
    data = getattr(args, "data", None)
    if isinstance(data, str) and data and "://" not in data:
        from pathlib import Path

        if not Path(data).expanduser().exists():
            from vidtempo.data.schema import DataError

            raise DataError(f"data directory {data} does not exist; convert a dataset into it "
                            "with `vidtempo prepare …` (see datasets/README.md)")  # fmt: skip
