"""Measurements behind BENCHMARKS.md (`vidtempo bench …`): ratios taken side by side in one run."""

from __future__ import annotations

import json
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def emit(result: dict, table: str, json_path: str | None) -> int:
    """Print a benchmark's table and, when asked, write its results as JSON."""
    print(table)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {json_path}")
    return 0
