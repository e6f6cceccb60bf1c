"""This machine: where vidtempo keeps its files here (`home`), the CPU's model name (for run
records and benchmark tables), and ports nothing listens on (`free_port`)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

from vidtempo.config import PROJECT_DIR


def home() -> Path:
    """`VIDTEMPO_HOME`, else the checkout — unless the checkout is a `ray job submit`
    working-dir copy, which Ray deletes when the job ends: then `~/vidtempo`. The default
    MLflow store, the runs and the demo's data live under it."""
    if os.environ.get("VIDTEMPO_HOME"):
        return Path(os.environ["VIDTEMPO_HOME"]).resolve()
    if "runtime_resources" in PROJECT_DIR.parts:  # a Ray job's working-dir copy
        return Path.home() / "vidtempo"
    return PROJECT_DIR


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# Ports handed out by free_port: from below the kernel's ephemeral range (32768+ on Linux),
# where every port-0 bind lands (each Ray worker's gRPC server, every client connection), and
# above Ray's worker ports (10002-19999). A port asked for with bind(0) and released can be taken
# by such a bind before the server that was to use it starts; gRPC's SO_REUSEPORT then lets two
# servers share it and requests reach the wrong one (a head whose GCS "does not answer").
_PORTS = range(20000, 32768)
_given: set[int] = set()


def free_port() -> int:
    """A port that nothing on this machine listens on, never the same twice in one process."""
    import random

    for port in random.SystemRandom().sample(_PORTS, 200):
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {_PORTS.start} and {_PORTS.stop - 1}")
