"""Measurements behind BENCHMARKS.md (`vidtempo bench …`): ratios taken side by side in one run."""

from __future__ import annotations

import json


def emit(result: dict, table: str, json_path: str | None) -> int:
    """Print a benchmark's table and, when asked, write its results as JSON."""
    print(table)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {json_path}")
    return 0
