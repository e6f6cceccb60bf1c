"""The cluster path on one machine: real servers on 127.0.0.1 standing in for what cluster.yaml
starts on AWS, and the rehearsal of the README's "Running on a cluster" against them.

    make cluster-rehearsal          # = python -m vidtempo.rehearsal --workdir rehearsal

    S3Server             moto's standalone S3 server (`moto_server`, an S3 protocol endpoint);
                         everything reaches it through AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL,
                         the way a cluster reaches S3 (or MinIO) — no code path of our own
    start_mlflow_server  `mlflow server`, behind MLflow's basic-auth app, artifacts proxied to a
                         bucket, as on cluster.yaml's head
    RayNode              `ray start --head` or `ray start --address` in token mode, every port
                         its own, in a process group of its own (removing the node = killing it)

The rehearsal, step by step as the README says: `vidtempo cluster-secrets` → `prepare synthetic`
to s3:// with `--ray` → `vidtempo doctor --data s3://…` → `ray job submit … jobs/train.py` with
s3:// data and checkpoints and the tracking server → the worker node removed mid-run → the run
resumes from its S3 checkpoint and finishes every epoch → its artifacts in the bucket, served by
the tracking server → `vidtempo evaluate` from an s3:// checkpoint → `vidtempo zoo compare`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from pathlib import Path

from vidtempo.machine import free_port

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parents[2]


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


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process started with start_new_session and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGCONT)  # a paused server would never see the SIGTERM
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)
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


def start_mlflow_server(root: str | Path, login: tuple[str, str] | None = None,
                        artifacts: str | None = None, port: int | None = None,
                        env: dict | None = None):  # fmt: skip
    """`mlflow server` on 127.0.0.1 with SQLite behind it (root/mlflow.db) and artifacts proxied
    to `artifacts` (default root/artifacts; an s3:// URI as on the cluster); with `login`, behind
    MLflow's basic-auth app whose admin is that user. Returns (process, URL) once it answers.
    The same root and port start it again with its runs (a restart)."""
    root = Path(root)
    port = port or free_port()
    env = {**os.environ, **(env or {})}
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


# ---- the rehearsal ----------------------------------------------------------------------------

BUCKET = "vidtempo-rehearsal"
STEPS = 7
EPOCHS = 4
RUN_SETS = [f"train.epochs={EPOCHS}", "train.min_steps=null", "run.batch_per_worker=4",
            "run.max_failures=2", "run.placement_strategy=SPREAD"]  # fmt: skip


def sourced(env_file: Path, env: dict) -> dict:
    """The environment after `source env_file` in bash, as the README has the user do."""
    out = subprocess.run(["bash", "-c", f'source "{env_file}" && env -0'], env=env,
                         capture_output=True, check=True).stdout  # fmt: skip
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


class Rehearsal:
    """The steps, each printed as it starts and ends; `results` collects what they found."""

    def __init__(self, workdir: str | Path, say=print, s3: S3Server | None = None):
        self.s3 = s3  # an S3 server already up (a test session's); else one of our own
        self.work = Path(workdir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.results: dict = {}
        self.stack: list = []  # what to stop at the end, last started first
        self.step_no = 0

    def run(self, *cmd: str, env: dict | None = None, timeout: float = 600) -> str:
        done = subprocess.run([str(c) for c in cmd], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        out = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited {done.returncode}:\n{out[-4000:]}")
        return out

    def step(self, title: str):
        self.step_no += 1
        self.say(f"[{self.step_no}/{STEPS}] {title}", flush=True)
        return time.monotonic()

    def done(self, started: float, what: str) -> None:
        self.say(f"      {what} ({time.monotonic() - started:.0f} s)", flush=True)

    @contextlib.contextmanager
    def client(self):
        """This process as a user's shell after `source cluster.env`: the bucket's endpoint and
        the tracking server's login, for the MLflow client and vidtempo.storage (put back
        after, so that a test process keeps its own)."""
        keys = [*self.s3.env, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys})
        try:
            from vidtempo.tracking import store

            yield store.client(self.url)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def close(self) -> None:
        for stop in reversed(self.stack):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest anyway
                self.say(f"      (stopping: {exc})")
        self.stack = []

    # --------------------------------------------------------------------------------------
    def services(self) -> None:
        t = self.step("local stand-ins: an S3 server, the cluster's secrets, the tracking "
                      "server, a Ray head and a worker node")  # fmt: skip
        s3 = self.s3
        if s3 is None:
            s3 = S3Server(self.work)
            self.stack.append(s3.stop)
        root = s3.make_bucket(BUCKET)
        base = {**os.environ, **s3.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        base.pop("RAY_ADDRESS", None)
        # `vidtempo cluster-secrets`, then `source …/cluster.env`, as the README says
        secrets = self.work / "secrets"
        self.run(BIN / "vidtempo", "cluster-secrets", "--folder", secrets, env=base)
        env = sourced(secrets / "cluster.env", base)
        login = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        (self.work / "mlflow").mkdir(exist_ok=True)
        server, url = start_mlflow_server(self.work / "mlflow", login, f"{root}/mlflow", env=env)
        self.stack.append(lambda: stop_process_group(server))
        head = RayNode(env, num_cpus=2)
        self.stack.append(head.stop)
        node = RayNode(env, num_cpus=2, head=head)
        self.stack.append(node.stop)
        # what cluster.yaml's head gives every job driver and shell
        env.update(VIDTEMPO_STORAGE=f"{root}/runs", VIDTEMPO_MLFLOW_URI=url)
        self.env, self.s3, self.root, self.url, self.head, self.node = env, s3, root, url, head, node
        self.data = f"{root}/data/synthetic"
        from vidtempo.doctor import anonymous_status

        anonymous = anonymous_status(f"{head.address}/api/jobs/",
                                     json.dumps({"entrypoint": "echo anyone"}).encode())  # fmt: skip
        self.results.update(s3=s3.url, tracking=url, dashboard=head.address, anonymous_job=anonymous)
        if anonymous not in (401, 403):
            raise RuntimeError(f"the Ray head took a job without its token (HTTP {anonymous})")
        self.done(t, f"S3 {s3.url} (bucket {BUCKET}), MLflow {url} (basic-auth, artifacts in "
                     f"{root}/mlflow), Ray head {head.gcs} + 1 node, token mode (a job without "
                     f"the token: HTTP {anonymous})")  # fmt: skip

    def prepare(self) -> None:
        t = self.step(f"vidtempo prepare synthetic --out {self.data} --ray {self.head.gcs}")
        out = self.run(BIN / "vidtempo", "prepare", "synthetic", "--out", self.data,
                       "--train-per-class", "4", "--val-per-class", "2", "--frames", "24",
                       "--size", "48", "--videos-per-shard", "16", "--ray", self.head.gcs)  # fmt: skip
        self.results["prepare"] = [line for line in out.splitlines() if " videos in " in line]
        self.done(t, "; ".join(self.results["prepare"]))

    def doctor(self) -> None:
        t = self.step(f"vidtempo doctor --address {self.head.gcs} --data {self.data}")
        out = self.run(BIN / "vidtempo", "doctor", "--address", self.head.gcs, "--config",
                       "tin_r18_synthetic", "--workers", "2", "--data", self.data,
                       "--working-dir", CHECKOUT)  # fmt: skip
        self.results["doctor"] = out
        self.done(t, "all checks passed" if "all checks passed" in out else out[-300:])

    def train_with_a_node_lost(self) -> None:
        from vidtempo import lineage, storage
        from vidtempo.train import checkpoint as ckpt

        t = self.step("ray job submit … -- python jobs/train.py --config tin_r18_synthetic "
                      f"--data {self.data} (the worker node removed mid-run)")  # fmt: skip
        run_dir = f"{self.root}/runs/rehearsal"
        cmd = [BIN / "ray", "job", "submit", f"--address={self.head.address}",
               f"--working-dir={CHECKOUT}", "--runtime-env-json",
               json.dumps(lineage.runtime_env()), "--", "python", "jobs/train.py",
               "--config", "tin_r18_synthetic", "--data", self.data,
               "--storage", f"{self.root}/runs", "--mlflow-uri", self.url, "--name",
               "rehearsal", "--experiment", "rehearsal", *[a for s in RUN_SETS for a in ("--set", s)]]  # fmt: skip
        with open(self.work / "job.log", "w") as log, self.client() as client:
            job = subprocess.Popen([str(c) for c in cmd], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
            # once Ray Train has registered the checkpoint of epoch 1 (what a restart restores)
            deadline = time.monotonic() + 600
            while ckpt.restored_epochs(run_dir) < 1:
                if job.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            removed_after = ckpt.restored_epochs(run_dir)
            self.node.kill()
            self.say(f"      worker node removed after epoch {removed_after}", flush=True)
            rc = job.wait(timeout=900)
            text = (self.work / "job.log").read_text()
            if rc != 0:
                raise RuntimeError(f"the job failed (exit {rc}):\n{text[-4000:]}")
            run_id = ckpt.read_progress(run_dir)["mlflow_run_id"]
            run = client.get_run(run_id)
            epochs = sorted({m.step for m in client.get_metric_history(run_id, "epoch")})
            last = sorted(n for n in storage.listdir(run_dir) if n.startswith("epoch_"))[-1]
            state, _ = ckpt.load_state(storage.join(run_dir, last), 0)
        steps = int(run.data.metrics["steps_per_epoch"])
        self.results.update(
            run_id=run_id, run_dir=run_dir, removed_after=removed_after, epochs=epochs,
            tags=run.data.tags, params=run.data.params,
            resumed=[ln.split("] ", 1)[-1] for ln in text.splitlines() if "resumed after" in ln],
            status=run.info.status, iterations=(state["iteration"], EPOCHS * steps),
            job_log=text)  # fmt: skip
        self.done(t, f"job succeeded; {'; '.join(self.results['resumed']) or 'no resume line'}; "
                     f"epochs logged {epochs}; steps {state['iteration']} of {EPOCHS * steps}")  # fmt: skip

    def artifacts(self) -> None:
        from vidtempo import storage

        t = self.step("the run's artifacts: in the bucket, and served by the tracking server")
        with self.client() as client:
            run = client.get_run(self.results["run_id"])
            logged = sorted(a.path for a in client.list_artifacts(run.info.run_id))
            # proxied artifacts: mlflow-artifacts:/EXPERIMENT/RUN/artifacts under the bucket
            prefix = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
            in_bucket = storage.listdir(f"{self.root}/mlflow/{prefix}")
        login = (self.env["MLFLOW_TRACKING_USERNAME"], self.env["MLFLOW_TRACKING_PASSWORD"])
        served = {}
        for name in ("tin_offsets.png", "uncommitted.diff"):
            if name in logged:
                served[name] = http_get(f"{self.url}/get-artifact?path={name}&run_uuid="
                                        f"{run.info.run_id}", login)  # fmt: skip
        self.results.update(artifacts=logged, in_bucket=in_bucket, served=served,
                            dirty=run.data.tags.get("vidtempo.dirty"))  # fmt: skip
        self.done(t, f"{', '.join(logged)} in {self.root}/mlflow/{prefix}; served: "
                     + ", ".join(f"{k} {len(v)} bytes" for k, v in served.items()))  # fmt: skip

    def evaluate(self) -> None:
        from vidtempo import storage

        best = storage.join(self.results["run_dir"], "best")
        with self.client():
            (name,) = [n for n in storage.listdir(best) if n.endswith(".pt")]
        t = self.step(f"vidtempo evaluate tin_r18_synthetic {best}/{name}")
        out = self.run(BIN / "vidtempo", "evaluate", "tin_r18_synthetic", f"{best}/{name}",
                       "--data", self.data, "--set", "run.batch_per_worker=4",
                       env={**self.env, "RAY_ADDRESS": self.head.gcs})  # fmt: skip
        found = re.search(r"(test/top1\S*)\s+([\d.]+)", out)
        if not found:
            raise RuntimeError(f"evaluate printed no test/top1:\n{out[-3000:]}")
        self.results["evaluate"] = float(found.group(2))
        self.done(t, f"{found.group(1)} {self.results['evaluate']}")

    def zoo_compare(self) -> None:
        t = self.step(f"vidtempo zoo compare --mlflow-uri {self.url}")
        report = self.work / "report"
        out = self.run(BIN / "vidtempo", "zoo", "compare", "--mlflow-uri", self.url,
                       "--experiment", "rehearsal", "--out", report)  # fmt: skip
        self.results["report"] = sorted(p.name for p in report.rglob("*") if p.is_file())
        self.results["report_text"] = out
        self.done(t, f"{report}: {', '.join(self.results['report'])}")


def http_get(url: str, login: tuple[str, str]) -> bytes:
    import base64

    auth = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def rehearse(workdir: str | Path, say=print, s3: S3Server | None = None) -> dict:
    """Every step in order; the servers and nodes are stopped at the end, also on failure."""
    r = Rehearsal(workdir, say, s3)
    started = time.monotonic()
    try:
        r.services()
        r.prepare()
        r.doctor()
        r.train_with_a_node_lost()
        r.artifacts()
        r.evaluate()
        r.zoo_compare()
    finally:
        r.close()
    r.results["seconds"] = time.monotonic() - started
    say(f"rehearsal passed in {r.results['seconds'] / 60:.1f} min: the resumed run logged "
        f"epochs {r.results['epochs']}")
    return r.results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="rehearsal", help="servers' files, logs, the report")
    args = p.parse_args(argv)
    try:
        rehearse(args.workdir)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"rehearsal failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
