"""Real servers on 127.0.0.1 standing in for what cluster.yaml starts on AWS: for the rehearsal
(rehearsal.py), the tests (tests/conftest.py) and `vidtempo bench data --s3`.

    S3Server             moto's standalone S3 server (`moto_server`, an S3 protocol endpoint);
                         everything reaches it through AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL,
                         the way a cluster reaches S3 (or MinIO) — no code path of our own
    start_mlflow_server  `mlflow server`, behind MLflow's basic-auth app, artifacts proxied to a
                         bucket, as on cluster.yaml's head
    AutoscalingHead      `ray start --head --autoscaling-config=…` in token mode: Ray's own
                         autoscaler, launching the nodes of cluster.yaml's types as raylets on
                         this machine (its fake multi-node provider, rehearsal_nodes.py) — the
                         head starts alone
    RayNode              `ray start --head` or `ray start --address` in token mode, every port
                         its own, in a process group of its own (removing the node = killing it)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

from vidtempo.machine import free_port

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parents[3]


def wait_for(url: str, proc: subprocess.Popen, what: str, log: Path | None = None,
             timeout: float = 120) -> None:  # fmt: skip
    """Until `url` answers at all (any HTTP status counts: a server asking who we are is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process_group(proc)
                tail = log.read_text()[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{what} did not come up at {url}\n{tail}") from None
            time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                       grace: float = 20) -> None:  # fmt: skip
    """Stop a process started with start_new_session and everything it started (killed after
    `grace` seconds)."""
    try:
        os.killpg(proc.pid, signal.SIGCONT)  # a paused server would never see the SIGTERM
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if getattr(proc, "log", None):
        proc.log.close()


class S3Server:
    """moto's standalone S3 server on 127.0.0.1. `env` is what a process needs to use it."""

    KEYS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal"}

    def __init__(self, root: str | Path, port: int | None = None, auth: bool = False):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = Path(root) / f"s3-{self.port}.log"
        # with auth, moto checks every request's credentials (and knows none: all refused)
        extra = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {}
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 - closed on stop
            start_new_session=True, env={**os.environ, **extra})  # fmt: skip
        self.proc.log = self.proc.stdout
        wait_for(self.url, self.proc, "the S3 server (moto_server)", log)

    @staticmethod
    def env_for(url: str) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url, **S3Server.KEYS,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        return self.env_for(self.url)

    def make_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id=self.KEYS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=self.KEYS["AWS_SECRET_ACCESS_KEY"],
                     ).create_bucket(Bucket=name)  # fmt: skip
        return f"s3://{name}"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def pause(self) -> None:
        """Unresponsive: connections open, nothing answers (its buckets are kept)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        stop_process_group(self.proc)


class Outage:
    """A TCP front for a server (the S3 server's port behind `url`) that can go down and come
    back, as a stopped and restarted server does, without losing what the server holds (moto
    keeps its objects in memory): while down, every open connection is cut and each new one is
    closed at once (`refused` counts them); `up()` forwards again on the same port."""

    def __init__(self, target: str):
        import threading

        self.target = target.split("//", 1)[-1].rsplit(":", 1)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused = 0
        self._down = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._down:
                    self.refused += 1
                    client.close()
                    continue
            try:
                server = socket.create_connection((self.target[0], int(self.target[1])))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._open.discard(sock)

    def down(self) -> None:
        with self._lock:
            self._down = True
            cut, self._open = list(self._open), set()
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def up(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self.down()
        self._listener.close()


def start_mlflow_server(root: str | Path, login: tuple[str, str] | None = None,
                        artifacts: str | None = None, port: int | None = None,
                        env: dict | None = None):  # fmt: skip
    """`mlflow server` on 127.0.0.1 with SQLite behind it (root/mlflow.db) and artifacts proxied
    to `artifacts` (default root/artifacts; an s3:// URI as on the cluster); with `login`, behind
    MLflow's basic-auth app whose admin is that user. Returns (process, URL) once it answers.
    The same root and port start it again with its runs (a restart)."""
    root = Path(root)
    port = port or free_port()
    # without MLflow's job runner (its GenAI jobs; vidtempo runs none): it started seven huey
    # processes of ~0.24 GB each beside every server, memory the rehearsal's R50 workers need
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    args = []
    if login:
        ini = root / "basic_auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
                       f"admin_username = {login[0]}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")  # fmt: skip
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=login[1])
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", os.urandom(16).hex())
        args = ["--app-name", "basic-auth"]
    log_path = root / "server.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", *args, "--host", "127.0.0.1", f"--port={port}",
         "--workers=1", f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
         f"--artifacts-destination={artifacts or root / 'artifacts'}"],
        stdout=open(log_path, "a"), stderr=subprocess.STDOUT,  # noqa: SIM115 - closed on stop
        start_new_session=True, env=env,
    )  # fmt: skip
    proc.log = proc.stdout
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/health", proc, "the MLflow server", log_path)
    return proc, url


class RayNode:
    """`ray start --block` of our own: a head (`address` is its dashboard's URL, `gcs` what
    `ray.init` / `--address` take) or, given `head`, a node joining it. Every port is its own
    (another Ray may hold the defaults). A head waits until its dashboard answers (HTTP 401
    counts: a head in token mode asks who we are); a node until its raylet listens."""

    def __init__(self, env: dict, num_cpus: int = 2, head: RayNode | None = None):
        self.node_port = free_port()
        common = [f"--num-cpus={num_cpus}", f"--node-manager-port={self.node_port}",
                  *(f"--{name}-port={free_port()}" for name in (
                      "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                      "runtime-env-agent", "object-manager"))]  # fmt: skip
        if head is None:
            self.gcs_port, dash = free_port(), free_port()
            self.gcs, self.address = f"127.0.0.1:{self.gcs_port}", f"http://127.0.0.1:{dash}"
            args = ["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--ray-client-server-port={free_port()}",
                    '--system-config={"idle_worker_killing_time_threshold_ms":60000}']  # fmt: skip
        else:
            self.gcs_port, self.gcs, self.address = head.gcs_port, head.gcs, head.address
            # a node's own temp dir, as on its own machine: nodes sharing one would delete each
            # other's copies of a job's working dir and tail each other's logs
            self.temp = tempfile.mkdtemp(prefix="ray-node-")
            args = [f"--address={head.gcs}", f"--temp-dir={self.temp}"]
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", *args, *common, "--block"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        if head is None:
            wait_for(f"{self.address}/api/version", self.proc, "the Ray head", timeout=90)
            return
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.node_port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Ray node did not come up")
            time.sleep(0.5)

    def kill(self) -> None:
        """The node is lost: its raylet and every worker on it, at once."""
        stop_process_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop_process_group(self.proc)
        if getattr(self, "temp", None):
            shutil.rmtree(self.temp, ignore_errors=True)
        # `ray start` leaves its address for later `ray.init()` calls: not a dead head's
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()


# ---- a cluster with Ray's autoscaler --------------------------------------------------------

# cluster.yaml's worker types at min_workers 0, on one machine: "trainer" stands in for gpu8
# (CPUs only here), "cpu-decode" carries the `decode` resource; the head has no CPUs, as the
# measured cold cluster (drivers, Train controllers and Tune's trial actors need none)
NODE_TYPES = {
    "trainer": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 2},
    "cpu-decode": {"resources": {"CPU": 1, "decode": 1000}, "min_workers": 0, "max_workers": 1},
}
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's type
IDLE_MINUTES = 0.5
# the autoscaler's loop every second (Ray's own tests do so; 5 s by default), and a node that
# stops answering is given up after 20 s (30 by default) and replaced
AUTOSCALER_ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                  "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "20"}  # fmt: skip


def autoscaling_config(gcs: str, node_types: dict, idle_minutes: float, temp_root: str,
                       isolation: dict | None = None) -> dict:  # fmt: skip
    """The cluster config the head's autoscaler reads (what `ray up` writes to the head as
    ~/ray_bootstrap_config.yaml): the provider, the node types, the idle timeout, and the keys
    its monitor reads, empty (nothing to copy or run on a node of this machine). `isolation`:
    what a node sees of this machine (rehearsal_nodes.py), None for nodes sharing everything."""
    kinds = {name: {"node_config": {}, **spec} for name, spec in node_types.items()}
    kinds[HEAD_TYPE] = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": "rehearsal", "upscaling_speed": 1.0, "idle_timeout_minutes": idle_minutes,
        "max_workers": sum(spec["max_workers"] for spec in node_types.values()),
        # without disable_node_updaters every launch counts as failed (no SSH to a raylet);
        # node ids as IPs: every node of this machine has the same IP
        "provider": {"type": "external", "module": "vidtempo.tooling.rehearsal_nodes.LocalNodeProvider",
                     "gcs_address": gcs, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "use_node_id_as_ip": True,
                     "node_temp_root": temp_root, "isolation": isolation},
        "auth": {}, "available_node_types": kinds, "head_node_type": HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }  # fmt: skip


class AutoscalingHead:
    """`ray start --head --autoscaling-config=FILE --block` in token mode: a head with no CPUs
    whose autoscaler (Ray's own) launches the nodes of `node_types` when something asks for their
    resources and removes them after `idle_minutes` idle. `address` is the dashboard's URL, `gcs`
    what `ray.init` / `--address` take. Its own temp dir, with a folder in it for each node (as
    on its own machine), so that the autoscaler's log (what it added and removed: `events`) is
    its own, and its nodes are found by their raylets' socket paths under it."""

    def __init__(self, env: dict, workdir: str | Path, node_types: dict = NODE_TYPES,
                 idle_minutes: float = IDLE_MINUTES, isolation: dict | None = None):  # fmt: skip
        self.gcs_port, dash = free_port(), free_port()
        self.gcs, self.address = f"127.0.0.1:{self.gcs_port}", f"http://127.0.0.1:{dash}"
        self.node_types = node_types
        self.temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths live under it
        self.config = Path(workdir).resolve() / "autoscaler.yaml"
        if isolation:  # see below: the state API's address, on the nodes' workers too
            isolation = {**isolation, "env": {**isolation.get("env", {}),
                                              "RAY_API_SERVER_ADDRESS": self.address}}  # fmt: skip
        self.config.write_text(yaml.safe_dump(
            autoscaling_config(self.gcs, node_types, idle_minutes, self.temp, isolation)))
        self._log_offset = 0
        args = ["--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", "--num-cpus=0",
                f"--autoscaling-config={self.config}", f"--temp-dir={self.temp}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
                *(f"--{name}-port={free_port()}" for name in (
                    "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                    "runtime-env-agent", "object-manager")),
                '--system-config={"idle_worker_killing_time_threshold_ms":60000}']  # fmt: skip
        # the state API's address for Ray Train's placement-group cleaner (in a worker): on this
        # machine it finds this cluster at two addresses (127.0.0.1 and the machine's IP) and
        # gave up with "Found multiple active Ray instances" (vidtempo's local instances, too,
        # tell their workers; a cloud node runs one instance)
        env = {**env, **AUTOSCALER_ENV, "RAY_API_SERVER_ADDRESS": self.address}
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", *args, "--block"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        wait_for(f"{self.address}/api/version", self.proc, "the Ray head", timeout=90)

    def _monitor_log(self) -> Path:
        return Path(self.temp) / "session_latest" / "logs" / "monitor.log"

    def events(self) -> list[str]:
        """What the autoscaler did since the last call ("Adding 1 node(s) of type trainer.",
        "Removing 1 nodes of type trainer (idle).")."""
        log = self._monitor_log()
        if not log.exists():
            return []
        with open(log, errors="replace") as fh:
            fh.seek(self._log_offset)
            text = fh.read()
            self._log_offset = fh.tell()
        return [line.split(":event_summary:", 1)[1].strip() for line in text.splitlines()
                if ":event_summary:" in line]  # fmt: skip

    def raylets(self) -> list:
        """The raylets of the nodes the autoscaler launched (processes of this machine)."""
        import psutil

        out = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if proc.info.get("name") == "raylet" and any(
                    a.startswith(f"--raylet_socket_name={self.temp}") for a in cmd):  # fmt: skip
                with contextlib.suppress(psutil.Error):
                    if proc.environ().get("RAY_NODE_TYPE_NAME") in self.node_types:
                        out.append(proc)
        return out

    def workers(self) -> Counter:
        """Nodes of each type up now."""
        import psutil

        kinds = Counter()
        for proc in self.raylets():
            with contextlib.suppress(psutil.Error):
                kinds[proc.environ()["RAY_NODE_TYPE_NAME"]] += 1
        return kinds

    def kill_node(self, node_id: str) -> str:
        """The node `node_id` lost: its raylet and every process under it, at once (the
        autoscaler notices when the raylet stops answering). Returns the node's type."""
        import psutil

        for proc in self.raylets():
            if f"--node_id={node_id}" in proc.cmdline():
                kind = proc.environ().get("RAY_NODE_TYPE_NAME", "?")
                for p in [*proc.children(recursive=True), proc]:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                return kind
        raise RuntimeError(f"no node {node_id} of the autoscaler's is up to remove")

    def stop(self) -> None:
        # the monitor's nodes are in the head's process group — except isolated ones, each in a
        # group of its own (rehearsal_nodes.py): ended first, or they outlive the head; a head's
        # orderly stop takes 20-30 s on 2 cores, and nothing of it is kept
        for pgid in {os.getpgid(p.pid) for p in self.raylets()} - {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        stop_process_group(self.proc, grace=5)
        shutil.rmtree(self.temp, ignore_errors=True)
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()


def isolation_available() -> str | None:
    """None when a node may have a mount namespace of its own here (rehearsal_nodes.py), else
    why not."""
    if os.geteuid() != 0:
        return "not root: `unshare --mount` needs CAP_SYS_ADMIN"
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux)"
    ok = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                        capture_output=True)  # fmt: skip
    return None if ok.returncode == 0 else f"`unshare --mount` failed: {ok.stderr.decode()[-200:]}"


def summarize_events(events: list[str]) -> str:
    """'added 1 × trainer, 1 × cpu-decode; removed 1 × trainer (lost contact with raylet)'."""

    added, removed = Counter(), Counter()
    for e in events:
        if m := re.match(r"Adding (\d+) node\(s\) of type (\S+?)\.?$", e):
            added[m.group(2)] += int(m.group(1))
        elif m := re.match(r"Removing (\d+) nodes of type (\S+) \((.*)\)\.?$", e):
            removed[f"{m.group(2)} ({m.group(3)})"] += int(m.group(1))
    parts = []
    if added:
        parts.append("added " + ", ".join(f"{n} × {k}" for k, n in sorted(added.items())))
    if removed:
        parts.append("removed " + ", ".join(f"{n} × {k}" for k, n in sorted(removed.items())))
    return "; ".join(parts) or "no nodes added or removed"
