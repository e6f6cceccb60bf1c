from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")


@pytest.fixture(scope="session")
def _ray_shutdown_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_ray_shutdown_at_exit):
    """One local Ray instance for the tests that need one (ray.init costs 7-10 s): started on
    first use, and again after a test that brought up a multi-node Cluster of its own."""
    import ray

    if not ray.is_initialized():
        # address="local": a new instance even when /tmp/ray/ray_current_cluster names another
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
    return ray


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic temporal dataset, converted once per test session."""
    from vidtempo.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, {"train": 3, "val": 2}, frames=24, size=48, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 (SQLite behind it, artifacts proxied to a folder): the
    tracking URI a cluster's workers would use. Yields its http:// URL."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from vidtempo.train.run import free_port

    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", f"--port={port}", "--workers=1",
         f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
         f"--artifacts-destination={root / 'artifacts'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
    yield url
    import os
    import signal

    os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
