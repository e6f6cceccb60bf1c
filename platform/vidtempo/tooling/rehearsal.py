"""The cluster path on one machine: the rehearsal of docs/cluster.md's workflow against the local
stand-ins of servers.py (an S3 server, a tracking server, a Ray head with Ray's own autoscaler).

    make cluster-rehearsal          # = python -m vidtempo.tooling.rehearsal --workdir rehearsal

The rehearsal, step by step as the README says, on a cluster that starts as its head alone:
`vidtempo cluster-secrets` → `prepare synthetic` to s3:// with `--ray --decode-on decode` (the
autoscaler adds a decode node) → the decode node gone after the idle timeout → `vidtempo doctor`
(what the run will have launched) → `ray job
submit … jobs/train.py` with s3:// data and checkpoints and the tracking server (a trainer node
added; then lost mid-run, replaced, and the run resumes from its S3 checkpoint) → its artifacts
in the bucket, served by the tracking server → `vidtempo evaluate` from an s3:// checkpoint →
`vidtempo zoo compare` → `ray job submit … jobs/tune.py` (two trials at a time on the trainer
nodes it adds), stopped with `ray job stop` and submitted again with `--resume`. Each step prints
the nodes the autoscaler added and removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from vidtempo.tooling.servers import (
    BIN,
    CHECKOUT,
    IDLE_MINUTES,
    AutoscalingHead,
    S3Server,
    isolation_available,
    start_mlflow_server,
    stop_process_group,
    summarize_events,
)

# ---- the rehearsal ----------------------------------------------------------------------------

BUCKET = "vidtempo-rehearsal"
STEPS = 10
EPOCHS = 4
RUN_SETS = [f"train.epochs={EPOCHS}", "train.min_steps=null", "run.batch_per_worker=4",
            "run.max_failures=2"]  # fmt: skip
SWEEP = "rehearsal-sweep"
SWEEP_EPOCHS = 3
# A 2 × 2 grid over lr and shift_div, two trials at a time on the two trainer nodes, ASHA with
# one rung at epoch 2. Trials run in grid order: the two with lr 0.005 (which learns: 25% after
# two epochs on this set, measured, chance 8.3%) first, then the two with lr 1e-5 (which barely
# moves from chance), so the rung holds good results before the weak trials come to it. Ranked
# on val/ (24 videos; the figures above were measured there): a held-out part of this small
# train/ (1 video a class) would rank by noise, and the holdout path is tested locally.
SWEEP_ARGS = ["--space", "optim.lr=grid:0.005,0.00001", "--space", "model.shift_div=grid:2,4",
              "--scheduler", "asha", "--grace-period", "2", "--reduction-factor", "2",
              "--set", f"train.epochs={SWEEP_EPOCHS}", "--set", "train.min_steps=96",
              "--set", "schedule.warmup_epochs=0", "--set", "run.batch_per_worker=4",
              "--rank-on", "val"]  # fmt: skip
SWEEP_RUNG = "2"  # the sweep's job is stopped once a trial is recorded at this milestone


def sourced(env_file: Path, env: dict) -> dict:
    """The environment after `source env_file` in bash, as the README has the user do."""
    out = subprocess.run(["bash", "-c", f'source "{env_file}" && env -0'], env=env,
                         capture_output=True, check=True).stdout  # fmt: skip
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


class Rehearsal:
    """The steps, each printed as it starts and ends with the nodes the autoscaler added and
    removed meanwhile; `results` collects what they found."""

    def __init__(self, workdir: str | Path, say=print, s3: S3Server | None = None):
        self.s3 = s3  # an S3 server already up (a test session's); else one of our own
        self.work = Path(workdir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.results: dict = {"nodes": {}}
        self.stack: list = []  # what to stop at the end, last started first
        self.step_no = 0
        self.head: AutoscalingHead | None = None

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
        if self.head:
            self.head.events()  # what came before this step is not its doing
        return time.monotonic()

    def done(self, started: float, what: str, key: str | None = None,
             events: list[str] | None = None) -> None:  # fmt: skip
        self.say(f"      {what} ({time.monotonic() - started:.0f} s)", flush=True)
        if self.head:
            events = (events or []) + self.head.events()
            if key:
                self.results["nodes"][key] = events
            self.say(f"      autoscaler: {summarize_events(events)}", flush=True)

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

    def submit(self, *args: str, submission_id: str | None = None) -> list:
        """`ray job submit` of this checkout, as the README has the user type it."""
        from vidtempo import lineage

        return [BIN / "ray", "job", "submit", f"--address={self.head.address}",
                *([f"--submission-id={submission_id}"] if submission_id else []),
                f"--working-dir={CHECKOUT}", "--runtime-env-json",
                json.dumps(lineage.runtime_env()), "--", "python", *args]  # fmt: skip

    # --------------------------------------------------------------------------------------
    def services(self) -> None:
        t = self.step("local stand-ins: an S3 server, the cluster's secrets, the tracking "
                      "server, a Ray head alone with its autoscaler")  # fmt: skip
        s3 = self.s3
        if s3 is None:
            s3 = S3Server(self.work)
            self.stack.append(s3.stop)
        root = s3.make_bucket(BUCKET)
        # the head's shell: a HOME of its own (in the working dir), the bucket's endpoint
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        base = {**os.environ, **s3.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                "HOME": str(home)}  # fmt: skip
        base.pop("RAY_ADDRESS", None)
        # `vidtempo cluster-secrets`, then `source ~/.vidtempo/secrets/cluster.env`, as the docs say
        secrets = home / ".vidtempo" / "secrets"
        self.run(BIN / "vidtempo", "cluster-secrets", env=base)
        env = sourced(secrets / "cluster.env", base)
        # a node sees what cluster.yaml gives it and nothing of the head (rehearsal_nodes.py):
        # the head's HOME (the user's, and this one), this working dir, the local runs and
        # tracking database are covered; its environment is cluster.env and the machine's
        self.why_shared = isolation_available()
        machine = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
        isolation = None if self.why_shared else {
            "secrets": str(secrets), "checkout": str(CHECKOUT),
            "hide": [os.path.expanduser("~"), str(self.work), *(str(CHECKOUT / d) for d in
                                                                ("runs", "mlflow", "demo"))],
            # the bucket's endpoint and keys: the instance profile's stand-in
            "env": {**s3.env, **machine}}  # fmt: skip
        login = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        (self.work / "mlflow").mkdir(exist_ok=True)
        server, url = start_mlflow_server(self.work / "mlflow", login, f"{root}/mlflow", env=env)
        self.stack.append(lambda: stop_process_group(server))
        # what cluster.yaml's head gives every job driver and shell (~/vidtempo.env, sourced
        # before `ray start`): the bucket for checkpoints, the tracking server
        env.update(VIDTEMPO_STORAGE=f"{root}/runs", VIDTEMPO_MLFLOW_URI=url)
        head = AutoscalingHead(env, self.work, isolation=isolation)
        self.stack.append(head.stop)
        self.env, self.s3, self.root, self.url, self.head = env, s3, root, url, head
        self.data = f"{root}/data/synthetic"
        from vidtempo.doctor import anonymous_status

        anonymous = anonymous_status(f"{head.address}/api/jobs/",
                                     json.dumps({"entrypoint": "echo anyone"}).encode())  # fmt: skip
        self.results.update(s3=s3.url, tracking=url, dashboard=head.address,
                            anonymous_job=anonymous, workers_at_start=dict(head.workers()))  # fmt: skip
        if anonymous not in (401, 403):
            raise RuntimeError(f"the Ray head took a job without its token (HTTP {anonymous})")
        kinds = ", ".join(f"{k} (up to {v['max_workers']})" for k, v in head.node_types.items())
        self.done(t, f"S3 {s3.url} (bucket {BUCKET}), MLflow {url} (basic-auth, artifacts in "
                     f"{root}/mlflow), Ray head {head.gcs} alone, token mode (a job without the "
                     f"token: HTTP {anonymous}); its autoscaler may add {kinds}")  # fmt: skip

    def prepare(self) -> None:
        t = self.step(f"vidtempo prepare synthetic --out {self.data} --ray {self.head.gcs} "
                      "--decode-on decode")  # fmt: skip
        out = self.run(BIN / "vidtempo", "prepare", "synthetic", "--out", self.data,
                       "--train-per-class", "4", "--val-per-class", "2", "--frames", "24",
                       "--size", "48", "--videos-per-shard", "16", "--ray", self.head.gcs,
                       "--decode-on", "decode")  # fmt: skip
        self.results["prepare"] = [line for line in out.splitlines() if " videos in " in line]
        self.results["prepare_waited"] = [ln for ln in out.splitlines() if "autoscaler" in ln]
        self.done(t, "; ".join(self.results["prepare"]), "prepare")

    def shares_nothing(self) -> None:
        """The negative control: a file the head's driver reads, read by a task on a node."""
        t = self.step("a node shares nothing with the head: a task on the decode node reads a "
                      "file of the head's")  # fmt: skip
        mine = self.work / "home" / "head-only.txt"
        mine.write_text("the head's own file\n")
        out = self.run(BIN / "python", "-m", "vidtempo.tooling.rehearsal_nodes", "probe",
                       self.head.gcs, "decode", mine)  # fmt: skip
        look = json.loads(out.strip().splitlines()[-1])
        self.results["isolation"] = {**look, "why_shared": self.why_shared,
                                     "driver_read": mine.read_text()}  # fmt: skip
        if self.why_shared:
            what = f"nodes share the head's files here ({self.why_shared}): {look['read']}"
        else:
            what = (f"the driver reads {mine}; the node: {look['read']}; its HOME "
                    f"{look['home']}; head-only variables there: {look['head_env'] or 'none'}")
        self.done(t, what, "isolation")

    def idle(self, timeout: float = IDLE_MINUTES * 60 + 90) -> None:
        t = self.step(f"the decode node gone after the idle timeout ({IDLE_MINUTES * 60:.0f} s)")
        deadline, events = time.monotonic() + timeout, []
        # until its raylet is gone and the autoscaler has said why (it logs after the kill)
        while self.head.workers() or not any("(idle)" in e for e in events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes still up {timeout:.0f} s after the conversion: "
                                   f"{dict(self.head.workers())}; the autoscaler: {events}")  # fmt: skip
            time.sleep(1)
            events += self.head.events()
        self.results["workers_after_idle"] = dict(self.head.workers())
        self.done(t, "the head is alone again", "idle", events)

    def doctor(self) -> None:
        t = self.step(f"vidtempo doctor --address {self.head.gcs} --data {self.data}")
        out = self.run(BIN / "vidtempo", "doctor", "--address", self.head.gcs, "--config",
                       "tin_r18_synthetic", "--workers", "2", "--data", self.data,
                       "--working-dir", CHECKOUT)  # fmt: skip
        self.results["doctor"] = out
        plan = next((ln for ln in out.splitlines() if ln.startswith("the run:")), "")
        self.done(t, ("all checks passed" if "all checks passed" in out else out[-300:])
                  + f"; {plan}", "doctor")  # fmt: skip

    def train_with_a_node_lost(self) -> None:
        from vidtempo import storage
        from vidtempo.train import checkpoint as ckpt

        t = self.step("ray job submit … -- python jobs/train.py --config tin_r18_synthetic "
                      f"--data {self.data} (its trainer node lost mid-run)")  # fmt: skip
        run_dir = f"{self.root}/runs/rehearsal"
        # no --storage, no --mlflow-uri: the job's driver has them from the head, as on AWS
        cmd = self.submit("jobs/train.py", "--config", "tin_r18_synthetic", "--data", self.data,
                          "--name", "rehearsal", "--experiment", "rehearsal",
                          *[a for s in RUN_SETS for a in ("--set", s)])  # fmt: skip
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
            run_id = ckpt.read_progress(run_dir)["mlflow_run_id"]
            node = json.loads(client.get_run(run_id).data.tags["vidtempo.worker_nodes"])[0]
            kind = self.head.kill_node(node)
            self.say(f"      the node with the workers ({kind} {node[-5:]}) lost after epoch "
                     f"{removed_after}", flush=True)  # fmt: skip
            rc = job.wait(timeout=900)
            text = (self.work / "job.log").read_text()
            if rc != 0:
                raise RuntimeError(f"the job failed (exit {rc}):\n{text[-4000:]}")
            run = client.get_run(run_id)
            epochs = sorted({m.step for m in client.get_metric_history(run_id, "epoch")})
            last = sorted(n for n in storage.listdir(run_dir) if n.startswith("epoch_"))[-1]
            state, _ = ckpt.load_state(storage.join(run_dir, last), 0)
        steps = int(run.data.metrics["steps_per_epoch"])
        self.results.update(
            run_id=run_id, run_dir=run_dir, removed_after=removed_after, epochs=epochs,
            lost=kind,
            tags=run.data.tags, params=run.data.params,
            resumed=[ln.split("] ", 1)[-1] for ln in text.splitlines() if "resumed after" in ln],
            waited=[ln for ln in text.splitlines() if "autoscaler" in ln],
            status=run.info.status, iterations=(state["iteration"], EPOCHS * steps),
            job_log=text)  # fmt: skip
        self.done(t, f"job succeeded; {'; '.join(self.results['resumed']) or 'no resume line'}; "
                     f"epochs logged {epochs}; steps {state['iteration']} of {EPOCHS * steps}",
                  "train")  # fmt: skip

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
        t = self.step(f"vidtempo evaluate tin_r18_synthetic {best}/{name} --data {self.data}")
        out = self.run(BIN / "vidtempo", "evaluate", "tin_r18_synthetic", f"{best}/{name}",
                       "--data", self.data, "--set", "run.batch_per_worker=4",
                       env={**self.env, "RAY_ADDRESS": self.head.gcs})  # fmt: skip
        found = re.search(r"(test/top1\S*)\s+([\d.]+)", out)
        if not found:
            raise RuntimeError(f"evaluate printed no test/top1:\n{out[-3000:]}")
        self.results["evaluate"] = float(found.group(2))
        self.done(t, f"{found.group(1)} {self.results['evaluate']}", "evaluate")

    def zoo_compare(self) -> None:
        t = self.step(f"vidtempo zoo compare --mlflow-uri {self.url}")
        report = self.work / "report"
        out = self.run(BIN / "vidtempo", "zoo", "compare", "--mlflow-uri", self.url,
                       "--experiment", "rehearsal", "--out", report)  # fmt: skip
        self.results["report"] = sorted(p.name for p in report.rglob("*") if p.is_file())
        self.results["report_text"] = out
        self.done(t, f"{report}: {', '.join(self.results['report'])}")

    def sweep_stopped_and_resumed(self) -> None:
        t = self.step(f"ray job submit … -- python jobs/tune.py --config tin_r18_synthetic "
                      f"--data {self.data} --name {SWEEP} (stopped with `ray job stop`, then "
                      "submitted again with --resume)")  # fmt: skip
        args = ["jobs/tune.py", "--config", "tin_r18_synthetic", "--data", self.data,
                "--name", SWEEP, "--experiment", "rehearsal-sweep", *SWEEP_ARGS]  # fmt: skip
        sweep_dir = f"{self.root}/runs/sweeps/{SWEEP}"
        first = self.work / "sweep-1.log"
        with open(first, "w") as log, self.client():
            job = subprocess.Popen([str(c) for c in self.submit(*args, submission_id=f"{SWEEP}-1")],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            deadline = time.monotonic() + 900
            while not asha_rungs(sweep_dir).get(SWEEP_RUNG):
                if job.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sweep ended before it was stopped:\n"
                                       f"{first.read_text()[-4000:]}")  # fmt: skip
                time.sleep(1)
            self.run(BIN / "ray", "job", "stop", f"--address={self.head.address}", f"{SWEEP}-1")
            job.wait(timeout=120)
            before = trial_epochs(sweep_dir)
            rungs_before = asha_rungs(sweep_dir)
        self.say(f"      stopped with {sum(before.values())} trial-epochs done "
                 f"({', '.join(f'{k[-5:]}: {v}' for k, v in sorted(before.items()))}) and ASHA's "
                 f"rung {SWEEP_RUNG} holding {', '.join(t[-5:] for t in rungs_before[SWEEP_RUNG])}",
                 flush=True)  # fmt: skip
        out = self.run(*self.submit(*args, "--resume", submission_id=f"{SWEEP}-2"), timeout=1500)
        (self.work / "sweep-2.log").write_text(out)
        with self.client() as client:
            after = trial_epochs(sweep_dir)
            rungs_after = asha_rungs(sweep_dir)
            marker = json.loads(storage_read(f"{sweep_dir}/vidtempo_sweep.json"))
            children = client.search_runs(
                [client.get_experiment_by_name("rehearsal-sweep").experiment_id],
                f"tags.`mlflow.parentRunId` = '{marker['parent_run_id']}'")  # fmt: skip
            histories = {c.data.tags.get("vidtempo.run_name"): [
                m.step for m in client.get_metric_history(c.info.run_id, "epoch")]
                for c in children}  # fmt: skip
            parent = client.get_run(marker["parent_run_id"])
            table = client.download_artifacts(parent.info.run_id, "trials.json", str(self.work))
            trials = json.loads(Path(table).read_text())
            best = storage_read(f"{sweep_dir}/best_config.yaml")
            files = storage_list(sweep_dir)
        self.results["sweep"] = {
            "before": before, "after": after, "rungs_before": rungs_before,
            "rungs_after": rungs_after, "children": histories, "parent": parent.info.status,
            "parent_tags": parent.data.tags, "trials": trials, "best_config": best.decode(),
            "params": {c.data.tags.get("vidtempo.run_name"): c.data.params for c in children},
            "diffs": {c.data.tags.get("vidtempo.run_name"): c.data.tags.get("vidtempo.config_diff")
                      for c in children},
            "statuses": {c.data.tags.get("vidtempo.run_name"): c.info.status for c in children},
            "stopped_names": [c.data.tags.get("vidtempo.run_name") for c in children
                              if c.data.tags.get("vidtempo.stopped_by") == "ASHA"],
            "files": files, "log": out, "first_log": first.read_text()}  # fmt: skip
        self.done(t, f"resumed to the end: {len(histories)} trials, "
                     f"{sum(len(h) for h in histories.values())} trial-epochs logged, "
                     f"{len(self.results['sweep']['stopped_names'])} stopped by ASHA; in {sweep_dir}: "
                     f"{', '.join(files)}", "sweep")  # fmt: skip


def trial_epochs(sweep_dir: str) -> dict[str, int]:
    """Epochs of each trial's Train run in the checkpoint it resumes from (the one Ray Train
    registered; its progress file may be an epoch ahead), by run name."""
    from vidtempo import storage
    from vidtempo.train import checkpoint as ckpt

    trials = storage.join(sweep_dir, "trials")
    return {name: ckpt.restored_epochs(storage.join(trials, name))
            for name in storage.listdir(trials)}  # fmt: skip


def asha_rungs(sweep_dir: str) -> dict[str, list[str]]:
    """ASHA's rungs as the sweep saved them: milestone → the trials recorded there."""
    import pickle

    for _ in range(10):
        raw = storage_read(f"{sweep_dir}/asha_state.pkl")
        if not raw:
            return {}
        try:
            state = pickle.loads(raw)
            break
        except (pickle.UnpicklingError, EOFError):
            # read while the sweep replaced it: a reader of an object store takes the size of one
            # version and the bytes of the next (the CI run of 2026-12-06: "pickle data was
            # truncated"); each write is whole, so the next read is
            time.sleep(0.5)
    else:
        raise RuntimeError(f"{sweep_dir}/asha_state.pkl did not unpickle in 10 reads")
    return {str(milestone): sorted(recorded) for bracket in state["_brackets"]
            for milestone, recorded in bracket._rungs}  # fmt: skip


def storage_read(path: str) -> bytes | None:
    from vidtempo import storage

    return storage.read_bytes(path)


def storage_list(path: str) -> list[str]:
    from vidtempo import storage

    return sorted(storage.listdir(path))


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
        r.shares_nothing()
        r.idle()
        r.doctor()
        r.train_with_a_node_lost()
        r.artifacts()
        r.evaluate()
        r.zoo_compare()
        r.sweep_stopped_and_resumed()
    finally:
        r.close()
    r.results["seconds"] = time.monotonic() - started
    say(f"rehearsal passed in {r.results['seconds'] / 60:.1f} min: the resumed run logged "
        f"epochs {r.results['epochs']}; the resumed sweep ran {len(r.results['sweep']['children'])} "
        "trials to the end")
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
