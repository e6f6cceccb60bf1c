from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")  # as vidtempo's local instances (Ray's default)
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


def start_mlflow_server(root, login: tuple[str, str] | None = None):
    """`mlflow server` on 127.0.0.1 with SQLite behind it (root/mlflow.db) and artifacts proxied
    to root/artifacts; with `login`, behind MLflow's basic-auth app whose admin is that user.
    Returns (process, URL) once /health answers."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from vidtempo.train.run import free_port

    port = free_port()
    env = dict(os.environ)
    args = []
    if login:
        ini = Path(root) / "basic_auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{Path(root) / 'basic_auth.db'}\n"
                       f"admin_username = {login[0]}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")  # fmt: skip
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=login[1],
                   MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())  # fmt: skip
        args = ["--app-name", "basic-auth"]
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(Path(root) / "server.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(mlflow), "server", *args, "--host", "127.0.0.1", f"--port={port}", "--workers=1",
         f"--backend-store-uri=sqlite:///{Path(root) / 'mlflow.db'}",
         f"--artifacts-destination={Path(root) / 'artifacts'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(Path(root) / 'server.log').read_text()[-2000:]}")
            time.sleep(1)


def stop_process_group(proc) -> None:
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    if getattr(proc, "log", None):
        proc.log.close()


class RayHead:
    """`ray start --head --block` of the test's own, every port its own (the suite's Ray may
    hold the defaults), in a process group stopped by `stop()`; `address` is the dashboard's
    URL, `gcs` the address `ray.init` / `--address` take. Waits until the dashboard answers
    (HTTP 401 counts: a head in token mode asks who we are)."""

    def __init__(self, env: dict, num_cpus: int = 2):
        import subprocess
        import sys
        import time
        import urllib.error
        import urllib.request
        from pathlib import Path

        from vidtempo.train.run import free_port

        bin_dir = Path(sys.executable).parent
        self.gcs_port, dash = free_port(), free_port()
        self.gcs, self.address = f"127.0.0.1:{self.gcs_port}", f"http://127.0.0.1:{dash}"
        self.proc = subprocess.Popen(
            [str(bin_dir / "ray"), "start", "--head", f"--port={self.gcs_port}",
             f"--num-cpus={num_cpus}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             *(f"--{name}-port={free_port()}" for name in (
                 "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                 "runtime-env-agent", "ray-client-server", "node-manager", "object-manager")),
             "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except urllib.error.HTTPError as exc:
                assert exc.code in (401, 403), exc
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("the Ray head did not come up")
                time.sleep(1)

    def stop(self) -> None:
        import signal
        import subprocess
        from pathlib import Path

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        # `ray start` leaves its address for later `ray.init()` calls to join: not a dead head's
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()


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
