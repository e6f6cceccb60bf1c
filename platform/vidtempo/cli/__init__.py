"""The `vidtempo` command. Its commands come in groups, one module each (zoo.py, data.py,
train.py, cluster.py; the benches' options live in vidtempo/bench/): each command is an
`add_X(sub)` (its options) beside a `cmd_X(args)` (a call into the library). The errors a user can
cause are printed in one line, exit 2, in one place (`run`), from the error kinds each command
names (`errors=` in its defaults). Building the parser imports neither torch nor Ray: a command
imports what it needs when it runs."""

from __future__ import annotations

import argparse
import gc
import os
import sys

from vidtempo import config as C
from vidtempo import verbosity
from vidtempo.cli import cluster, data, train, zoo
from vidtempo.cli.common import apply_renamed, precheck


def _error_types(kinds: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    from vidtempo.storage import StorageError

    types: list[type[BaseException]] = [C.ConfigError, StorageError, ConnectionError]
    for kind in kinds:
        if kind == "data":
            from vidtempo.data.schema import DataError as t
        elif kind in ("resource", "checkpoint"):
            # their modules import Ray and torch: an error of theirs was raised only once the
            # command imported them, and a mistake caught before must not import them to say so
            module, name = {"resource": ("vidtempo.capacity", "ResourceError"),
                            "checkpoint": ("vidtempo.models.checkpoint", "CheckpointMismatch")}[kind]  # fmt: skip
            if module not in sys.modules:
                continue
            t = getattr(sys.modules[module], name)
        else:
            t = {"missing": FileNotFoundError, "exists": FileExistsError,
                 "value": ValueError, "os": OSError, "runtime": RuntimeError}[kind]  # fmt: skip
        types.append(t)
    return tuple(types)


class Version(argparse.Action):
    """`vidtempo --version`: the package's version and the checkout's commit (asked of git only
    when this flag is given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        from vidtempo import lineage

        try:
            number = version("vidtempo")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        src = lineage.source()
        dirty = " with uncommitted changes" if src["dirty"] else ""
        print(f"vidtempo {number}, commit {src['commit']}{dirty}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidtempo", description="Train, tune and evaluate TIN, "
                                "TAM/TANet and TPN on Ray, tracked in MLflow beside the MMAction2 "
                                "zoo's numbers.")  # fmt: skip
    p.add_argument("--version", action=Version, nargs=0, help="the version and the commit")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, train, zoo, cluster):
        group.add(sub)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the parsed command (`args.func`); an error of a kind it names (`args.errors`), or a
    bad config, storage or an unreachable cluster, is printed in one line and gives exit 2."""
    apply_renamed(args)  # an old spelling's value, under its new name
    try:
        precheck(args)  # what the parser can catch, before torch or Ray is imported
    except Exception as exc:
        from vidtempo.data.schema import DataError

        if not isinstance(exc, C.ConfigError | DataError):
            raise
        print(f"vidtempo: error: {exc}", file=sys.stderr)  # whatever kinds the command names
        return 2
    try:
        if getattr(args, "verbose", False):
            verbosity.set_verbose(True)
        verbosity.quiet_driver()  # MLflow's and Tune's own chatter, unless verbose
        address = getattr(args, "address", None)
        if address and not (address == "auto" and os.environ.get("RAY_ADDRESS")):
            # where this command's Ray connects; `auto` defers to RAY_ADDRESS, as Ray's own does
            # (on a head whose shell has it; the CI run of 87b8d6f: `auto` put over it found
            # another instance of the machine)
            os.environ["RAY_ADDRESS"] = address
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
