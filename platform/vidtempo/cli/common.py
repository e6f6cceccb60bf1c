"""What several commands share: the verbosity flag, the --node-wait flag, the error kinds of the
commands that run on Ray, and the config a run's flags resolve to."""

from __future__ import annotations

import argparse

from vidtempo import config as C

# The error kinds of train, evaluate and tune (`errors=` in a command's defaults); every command
# also reports a bad config, storage and an unreachable cluster (cli._error_types)
RUN_ERRORS = ("data", "resource", "missing")


class Renamed(argparse.Action):
    """An old spelling kept for one release: it sets what its new name sets and says so in one
    line (`new`: the new spelling, as the note shows it)."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        print(f"vidtempo: {option_string} is now {self.new}; the old spelling goes in the next "
              "release", file=sys.stderr)  # fmt: skip
        setattr(namespace, self.dest, values)


OLD = "__old"  # the suffix of an old spelling's dest: cli.run moves its value to the new one


def add_renamed(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """`old` as a hidden alias of the option `new` (dest `dest`). Its value is kept apart until
    cli.run moves it (a positional's default would overwrite it while parsing)."""
    p.add_argument(old, dest=dest + OLD, action=Renamed, new=new, help=argparse.SUPPRESS,
                   default=argparse.SUPPRESS, **kwargs)  # fmt: skip


def apply_renamed(args: argparse.Namespace) -> None:
    for key in [k for k in vars(args) if k.endswith(OLD)]:
        setattr(args, key.removesuffix(OLD), getattr(args, key))
        delattr(args, key)


def add_address_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="the Ray cluster: `auto` on its head, or "
                   "HOST:PORT (default: RAY_ADDRESS, else a Ray instance of this machine)")  # fmt: skip


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
