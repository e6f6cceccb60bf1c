"""The MLflow UI: the command that opens it, its runs page, and the `mlflow ui` process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vidtempo.tracking.store import (
    client,
    default_uri,
    experiments,
    is_server,
    newest_experiment_id,
    sqlite_path,
)


def ui_command(uri: str, experiment: str | None = None) -> str:
    """The command that opens the runs of `uri` (and of one experiment) in the MLflow UI."""
    exp = f" --experiment {experiment}" if experiment else ""
    store = "" if uri == default_uri() else f" --mlflow-uri {uri}"
    exe = Path(sys.executable).parent / "vidtempo"  # .venv/bin/vidtempo after `make demo`
    prog = "vidtempo"
    if exe.exists():
        prog = os.path.relpath(exe) if exe.is_relative_to(Path.cwd()) else str(exe)
    return f"{prog} ui{exp}{store}"


def runs_page(base_url: str, uri: str, experiment: str | None = None) -> str:
    """The UI's runs table of an experiment (`#/experiments/<id>/runs`, not MLflow 3's GenAI
    overview): the one named, else the one with the newest run."""
    base = base_url.rstrip("/")
    if experiment:
        exp = client(uri).get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(experiments(uri)) or "none yet"
            raise ValueError(f"no experiment '{experiment}' in {uri} (it has: {names})")
        return f"{base}/#/experiments/{exp.experiment_id}/runs"
    exp_id = newest_experiment_id(uri)
    return f"{base}/#/experiments/{exp_id}/runs" if exp_id else f"{base}/#/experiments"


def _answers(url: str, timeout: float) -> bool:
    try:
        urllib.request.urlopen(url, timeout=timeout)
        return True
    except OSError:
        return False


def start_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, timeout: float = 120.0):
    """`mlflow ui` on a local store (SQLite), bound to `host`; returns (process, base URL) once
    it answers. An http(s) tracking URI is a server already: nothing starts (process None)."""
    if is_server(uri):
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10)
        return None, uri
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise FileNotFoundError(f"{uri} does not exist yet: train something first (make demo)")
    base = f"http://{host}:{port}"
    if _answers(f"{base}/health", timeout=2):
        raise OSError(f"port {port} on {host} is taken (another MLflow UI?): pass --port")
    log_path = (db.parent if db is not None else Path(tempfile.gettempdir())) / (
        "ui.log" if db is not None else "vidtempo-mlflow-ui.log")  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not _answers(f"{base}/health", timeout=2):
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"mlflow ui did not answer on {base} in {timeout:.0f} s")
        time.sleep(0.5)
    return proc, base


def serve(uri: str, host: str, port: int, experiment: str | None) -> int:
    """`vidtempo ui`: the UI on `uri` until Ctrl-C or a `kill` (a tracking server is only
    checked), with the URL of the experiment's runs page."""
    import signal

    proc, base = start_ui(uri, host, port)
    url = runs_page(base, uri, experiment)
    if proc is None:
        print(f"the tracking server {base} is up; its runs: {url}")
        return 0
    print(f"MLflow UI on {base} (serving {uri}); Ctrl-C stops it", flush=True)
    print(f"runs: {url}", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a `kill` stops the UI too, as Ctrl-C does
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # mlflow ui stops its server workers
        proc.wait(timeout=30)
    return 0
