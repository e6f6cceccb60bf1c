from __future__ import annotations

import os

import pytest

from vidtempo.machine import free_port
from vidtempo.tooling.servers import RayNode as RayHead  # noqa: F401 - the tests' `ray start --head`
from vidtempo.tooling.servers import S3Server, start_mlflow_server, stop_process_group

os.environ.setdefault("RAY_AUTH_MODE", "token")  # as vidtempo's local instances (Ray's default)
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")

# S3 in this session is the local server of the `s3` fixture, never AWS: its endpoint and
# keys are in the environment from the start, so every Ray instance the tests start (and so
# every Ray worker) reaches the bucket the way a cluster reaches S3 (AWS_ENDPOINT_URL).
S3_PORT = free_port()
os.environ.update(S3Server.env_for(f"http://127.0.0.1:{S3_PORT}"))


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
    """A small synthetic temporal dataset, converted once per test session. Its shards hold
    the H.264 clips (the decode tests read them); the demo's, JPEG frames (test_tune's set)."""
    from vidtempo.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, {"train": 3, "val": 2}, frames=24, size=48, workers=2, progress=False,
                      storage_kind="video")  # fmt: skip
    return out


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's standalone S3 server on 127.0.0.1 (the endpoint the environment already names),
    for the whole session; `s3.make_bucket(name)` returns "s3://name"."""
    server = S3Server(tmp_path_factory.mktemp("s3"), port=S3_PORT)
    yield server
    server.stop()


MLFLOW_LOGIN = ("vidtempo", "test-" + os.urandom(12).hex())  # made per session, never stored


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` behind MLflow's basic-auth app, as cluster.yaml runs it: the tracking URI
    a cluster's drivers and workers use, with the login in their environment
    (MLFLOW_TRACKING_USERNAME / _PASSWORD, set here for this session and the Ray nodes it
    starts). Yields its http:// URL; its SQLite file is root/mlflow.db (`mlflow_server_db`)."""
    root = tmp_path_factory.getbasetemp() / "mlflow_server"
    root.mkdir(exist_ok=True)
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = MLFLOW_LOGIN
    proc, url = start_mlflow_server(root, MLFLOW_LOGIN)
    yield url
    stop_process_group(proc)


@pytest.fixture(scope="session")
def mlflow_server_db(mlflow_server, tmp_path_factory):
    """The SQLite store behind `mlflow_server` (what `vidtempo ui` can serve on 127.0.0.1)."""
    return f"sqlite:///{tmp_path_factory.getbasetemp() / 'mlflow_server' / 'mlflow.db'}"


@pytest.fixture
def page_text():
    """A function: the page at a URL as headless Chromium renders it (after its scripts ran),
    tags stripped. Skips the test without Chromium (.ci/run installs Debian's)."""
    import re
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium; "
                    "apt-get install chromium)")  # fmt: skip

    def render(url: str) -> str:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=20000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
        return " ".join(re.sub(r"<[^>]+>", " ", dom).split())

    return render


@pytest.fixture
def screenshot(page_text):
    """A function: a PNG of the page at a URL as headless Chromium draws it (after its scripts
    ran), written to a path; returns the path."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")

    def shoot(url: str, path):
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=20000", "--window-size=1400,1000", f"--screenshot={path}",
             url], capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        return path

    return shoot
