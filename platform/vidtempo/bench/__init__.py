"""Measurements behind BENCHMARKS.md (`vidtempo bench …`): ratios taken side by side in one run.

Each bench/X.py is one `vidtempo bench X`: its HELP, its options (`add_arguments`) and its
`main(args)`. Importing one costs no torch and no Ray: they are imported when it runs, so that
`vidtempo bench X --help` answers at once."""

from __future__ import annotations

import importlib
import json

NAMES = ("op", "models", "data", "prepare", "decode", "shuffle", "plan", "train", "tune",
         "temporal", "demo", "step")


def add_parsers(sub) -> None:
    """One subparser per bench, its options from the bench's own module."""
    for name in NAMES:
        module = importlib.import_module(f"vidtempo.bench.{name}")
        p = sub.add_parser(name, help=module.HELP)
        module.add_arguments(p)
        p.set_defaults(bench_main=module.main)


def emit(result: dict, table: str, json_path: str | None) -> int:
    """Print a benchmark's table and, when asked, write its results as JSON."""
    print(table)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {json_path}")
    return 0
