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
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from vidtempo.tooling import doc_commands
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
# The documented commands, in this order: the dataset's conversion as the dataset's page shows it
# (on this machine), then the cluster's (docs/cluster.md; README.md's cluster section points
# there and shows none of its own)
PAGES = [("datasets/README.md", "Something-Something V1"), ("docs/cluster.md", None)]
RECIPE = "tin_r50_1x1x8_40e_sthv1_rgb"  # what jobs/tin_sthv1.py and jobs/tune_tin_sthv1.py run
WEIGHTS = "resnet50-0676ba61.pth"  # the file the docs upload (here: its format, random values)
# The cluster's size in the docs and the rehearsal's: trainer nodes (2 CPUs, up to 2) stand in
# for gpu8 nodes, one CPU worker for the 8 GPUs of one (a sweep's trial), two for a job's 16
SCALE = [("--workers 16 --gpu", "--workers 2"), ("--workers 8 --gpu", "--workers 1"),
         ("--samples 16", "--samples 2")]  # fmt: skip
# What the rehearsal adds to the docs' job and sweep: two epochs, not 40; and 1 video a step per
# worker, not the recipe's 6 (a GPU's): two CPU workers of TIN-R50 at 6 videos of 8 frames of
# 224² hold ~7.2 GB each, and with the servers beside them Ray's memory monitor killed one on this
# 24 GB machine; at 2 videos (~3 GB each) it still did so in the test suite, whose own process and
# Ray instance hold some GB more (measured)
ADDITION = "--set train.epochs=2 --set run.batch_per_worker=1"
DRILLS = 9  # the steps after the documented commands (below)
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
        self.job_id: str | None = None
        self.total = 3 + DRILLS + sum(len(doc_commands.fenced_commands(CHECKOUT / page, section))
                                      for page, section in PAGES)  # fmt: skip

    def run(self, *cmd: str, env: dict | None = None, timeout: float = 600) -> str:
        done = subprocess.run([str(c) for c in cmd], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        out = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited {done.returncode}:\n{out[-4000:]}")
        return out

    def step(self, title: str):
        self.step_no += 1
        self.say(f"[{self.step_no}/{self.total}] {title}", flush=True)
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
    def stand_ins(self) -> None:
        t = self.step("local stand-ins: an S3 server and its bucket, the user's shell, a miniature "
                      "Something-Something V1 and an ImageNet-format ResNet-50 state dict")  # fmt: skip
        s3 = self.s3
        if s3 is None:
            s3 = S3Server(self.work)
            self.stack.append(s3.stop)
        self.s3, self.root = s3, s3.make_bucket(BUCKET)
        # the user's (and the head's) shell: a HOME of its own in the working dir, where the
        # checkout is ~/vidtempo as cluster.yaml's setup puts it on the head; AWS credentials and
        # the bucket's endpoint as a user's ~/.aws would give them
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            (home / "vidtempo").symlink_to(CHECKOUT)
        self.shell = {**os.environ, **s3.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                      "HOME": str(home)}  # fmt: skip
        self.shell.pop("RAY_ADDRESS", None)
        from vidtempo.tooling import miniature

        counts = miniature.make_sthv1(self.work / "data" / "sthv1")
        miniature.make_imagenet_resnet50(self.work / WEIGHTS)
        self.done(t, f"S3 {s3.url} (bucket {BUCKET}); {self.work / 'data' / 'sthv1'}: "
                     f"{counts['train']} train and {counts['val']} val videos of "
                     f"{len(miniature.LABELS)} classes, 100 px high; {self.work / WEIGHTS}")  # fmt: skip

    def up(self) -> str:
        """`ray up cluster.yaml`, here: the tracking server (basic-auth, artifacts in the bucket)
        and a Ray head alone with its autoscaler, with the secrets `vidtempo cluster-secrets`
        made, as cluster.yaml's head gets them."""
        s3, root = self.s3, self.root
        secrets = Path(self.shell["HOME"]) / ".vidtempo" / "secrets"
        env = sourced(secrets / "cluster.env", self.shell)
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
        self.env, self.url, self.head = env, url, head
        self.data = f"{root}/data/synthetic"
        from vidtempo.doctor import anonymous_status

        anonymous = anonymous_status(f"{head.address}/api/jobs/",
                                     json.dumps({"entrypoint": "echo anyone"}).encode())  # fmt: skip
        self.results.update(s3=s3.url, tracking=url, dashboard=head.address,
                            anonymous_job=anonymous, workers_at_start=dict(head.workers()))  # fmt: skip
        if anonymous not in (401, 403):
            raise RuntimeError(f"the Ray head took a job without its token (HTTP {anonymous})")
        kinds = ", ".join(f"{k} (up to {v['max_workers']})" for k, v in head.node_types.items())
        return (f"MLflow {url} (basic-auth, artifacts in {root}/mlflow), Ray head {head.gcs} "
                f"alone, token mode (a job without the token: HTTP {anonymous}); its autoscaler "
                f"may add {kinds}")  # fmt: skip

    # ---- the documented commands ------------------------------------------------------------
    def substitutions(self) -> list[tuple[str, str]]:
        """The docs' placeholders and what stands for them here, longest first."""
        subs = [("/data/sthv1", str(self.work / "data" / "sthv1")), ("YOUR-BUCKET", BUCKET),
                *SCALE]  # fmt: skip
        if self.head:
            subs += [("http://localhost:8265", self.head.address),
                     ("http://localhost:5000", self.url)]  # fmt: skip
        if self.job_id:
            subs.append(("JOB_ID", self.job_id))
        return subs

    def as_run_here(self, command: str) -> str:
        for placeholder, value in self.substitutions():
            # a placeholder where a word starts (/data/sthv1, not …/vidtempo/data/sthv1)
            start = r"(?<![\w./-])" if placeholder.startswith("/") else ""
            command = re.sub(start + re.escape(placeholder), value, command)
        if " python jobs/" in command:
            command += f" {ADDITION}"
        return command

    def documented(self) -> None:
        """Each fenced command of PAGES in order, as a reader pastes it, with the placeholders
        substituted; the cluster launcher's own commands (`ray up/exec/dashboard/attach/down
        cluster.yaml`) act on the local stand-ins instead of AWS."""
        self.job_id = None
        for page, section in PAGES:
            for command in doc_commands.fenced_commands(CHECKOUT / page, section):
                self.documented_step(page, command)

    def documented_step(self, page: str, command: str) -> None:
        here = self.as_run_here(command)
        t = self.step(f"{page}: $ {here}")
        words = here.split()
        if words[:3] == ["ray", "up", "cluster.yaml"]:
            self.done(t, "stand-in: " + self.up(), "ray up")
        elif words[:2] == ["ray", "exec"]:
            # on the head: its shell (cluster.env, the storage and tracking it gives every job),
            # where `--address auto` finds its own Ray (RAY_ADDRESS here)
            inner = shlex.split(here)[3]
            out = self.shell_run(inner, {**self.env, "HOME": self.shell["HOME"],
                                         "RAY_ADDRESS": self.head.gcs}, CHECKOUT)  # fmt: skip
            self.documented_check(inner, out, t)
        elif words[:2] in (["ray", "dashboard"], ["ray", "attach"]):
            what = ("the dashboard " + self.head.address if words[1] == "dashboard"
                    else "the tracking server " + self.url)  # fmt: skip
            self.done(t, f"stand-in: no port to forward: {what} stands for localhost in the "
                         "commands below")  # fmt: skip
        elif words[:2] == ["ray", "down"]:
            self.down_step = t  # after the drills: everything stops at the end
            self.say("      stand-in: at the end (after the drills), everything the rehearsal "
                     "started stops", flush=True)  # fmt: skip
        elif words[0] == "source":
            self.shell = sourced(Path(words[1].replace("~", self.shell["HOME"], 1)), self.shell)
            self.done(t, "this shell: " + ", ".join(sorted(
                k for k in self.shell if k.startswith(("RAY_", "MLFLOW_TRACKING_")))))  # fmt: skip
        else:
            cwd = CHECKOUT if words[:2] == ["ray", "job"] else self.work
            out = self.shell_run(here, self.shell, cwd)
            self.documented_check(here, out, t)

    def shell_run(self, command: str, env: dict, cwd: Path, timeout: float = 1800) -> str:
        name = re.sub(r"\W+", "-", command[:60]).strip("-")
        log = self.work / "logs" / f"{self.step_no:02d}-{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as f:
            done = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout)  # fmt: skip
        out = log.read_text()
        if done.returncode != 0:
            raise RuntimeError(f"`{command}` exited {done.returncode} (log: {log}):\n{out[-4000:]}")
        return out

    def documented_check(self, command: str, out: str, t: float) -> None:
        """What each kind of command must have done, checked and printed."""
        docs = self.results.setdefault("docs", {})
        words = command.split()
        if "prepare" in words:
            lines = [ln.strip() for ln in out.splitlines() if " videos in " in ln]
            key = f"prepare {'--ray' if '--ray' in words else 'local'} {words[words.index('--split') + 1]}"
            docs[key] = lines
            self.done(t, "; ".join(lines) or out[-300:], key)
        elif "doctor" in words:
            docs["doctor"] = out
            plan = next((ln for ln in out.splitlines() if ln.startswith("the run:")), "")
            self.done(t, ("all checks passed" if "all checks passed" in out else out[-300:])
                      + f"; {plan}", "doctor sthv1")  # fmt: skip
        elif words[:3] == ["ray", "job", "submit"]:
            found = re.search(r"Job '(raysubmit_\w+)' submitted successfully", out)
            if not found:
                raise RuntimeError(f"`ray job submit` printed no job id:\n{out[-2000:]}")
            self.job_id = found.group(1)
            script = next(w for w in words if w.startswith("jobs/"))
            docs.setdefault("jobs", []).append((script, self.job_id))
            self.done(t, f"submitted: {self.job_id}")
        elif words[:3] == ["ray", "job", "logs"]:
            status = self.run(BIN / "ray", "job", "status", f"--address={self.head.address}",
                              self.job_id, env=self.shell)  # fmt: skip
            docs.setdefault("logs", {})[self.job_id] = out
            if f"Job '{self.job_id}' succeeded" not in status:
                raise RuntimeError(f"job {self.job_id}: {status.strip()[-500:]}\n{out[-4000:]}")
            self.job_id_done, self.job_id = self.job_id, None
            said = [ln.strip() for ln in out.splitlines() if "test/top1" in ln]
            self.done(t, f"job {self.job_id_done} succeeded; " + (said[-1] if said else ""),
                      "job")  # fmt: skip
        elif words[:3] == ["vidtempo", "zoo", "compare"]:
            docs["zoo_compare"] = out
            self.done(t, " | ".join(ln for ln in out.splitlines() if "tin_r50" in ln)[:400])
        else:
            docs.setdefault("other", []).append((command, out))
            self.done(t, (out.strip().splitlines() or ["done"])[-1][:300])

    def holding(self) -> str:
        """What Ray has alive on the cluster now (actors, placement groups, running tasks, the
        nodes' use), for the message of a node that should have gone and did not."""
        found = []
        for what, where in (("actors", "state=ALIVE"), ("placement-groups", "state=CREATED"),
                            ("tasks", "state=RUNNING")):  # fmt: skip
            try:
                done = subprocess.run([str(BIN / "ray"), "list", what, "--address", self.head.address,
                                       "--filter", where, "--format", "json", "--detail"],
                                      env=self.env, capture_output=True, text=True, timeout=60)  # fmt: skip
                rows = json.loads(done.stdout[done.stdout.index("["):])
            except Exception as exc:  # noqa: BLE001 - a message, not a step
                found.append(f"{what}: ({exc})")
                continue
            keep = ("class_name", "name", "node_id", "job_id", "creator_job_id", "pid",
                    "is_detached", "bundles", "strategy")  # fmt: skip
            found.append(f"{what}: " + json.dumps([{k: r[k] for k in keep if k in r} for r in rows]))
        with contextlib.suppress(Exception):
            found.append(self.run(BIN / "ray", "status", "-v", "--address", self.head.gcs)[-3000:])
        return "\n".join(found)

    def tracked(self) -> None:
        """What the documented job and sweep left in the tracking server: TIN-R50's test numbers,
        the sweep's trials and its final run."""
        t = self.step("in the tracking server: the job's test numbers, the sweep's final run")
        with self.client() as client:
            exp = client.get_experiment_by_name("vidtempo")
            runs = client.search_runs([exp.experiment_id])
            found = {}
            for run in runs:
                name = run.data.tags.get("vidtempo.run_name") or run.info.run_name
                found[name] = {"status": run.info.status, "metrics": dict(run.data.metrics),
                               "params": dict(run.data.params), "tags": dict(run.data.tags)}  # fmt: skip
        self.results["tracked"] = found
        scores = {}
        for name in (RECIPE, "sthv1-sweep-final"):
            # the test protocol's top-1 (test/top1:1x1 for the sthv1 recipes)
            keys = sorted(k for k in found.get(name, {}).get("metrics", {})
                          if k.startswith("test/top1"))  # fmt: skip
            if not keys:
                raise RuntimeError(f"no test/top1 for {name} among {sorted(found)}")
            scores[name] = (keys[0], found[name]["metrics"][keys[0]])
        self.results["test_top1"] = scores
        self.done(t, "; ".join(f"{name}: {k} {v:.2f}" for name, (k, v) in scores.items())
                  + f", precision {found[RECIPE]['params'].get('run.precision')}; "
                  f"{len(found)} runs in 'vidtempo'")  # fmt: skip

    def prepare(self) -> None:
        t = self.step(f"vidtempo prepare synthetic --out {self.data} --ray --address {self.head.gcs} "
                      "--decode-on decode")  # fmt: skip
        out = self.run(BIN / "vidtempo", "prepare", "synthetic", "--out", self.data,
                       "--train-per-class", "4", "--val-per-class", "2", "--frames", "24",
                       "--size", "48", "--videos-per-shard", "16", "--ray", "--address", self.head.gcs,
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

    def idle(self, what: str = "the decode node", after: str = "the conversion",
             key: str = "idle", timeout: float = IDLE_MINUTES * 60 + 90) -> None:  # fmt: skip
        """Every worker node gone once idle: nothing of a finished run keeps one (a live actor
        does: Ray Data's cluster-wide actors once kept a trainer node up for good)."""
        t = self.step(f"{what} gone after the idle timeout ({IDLE_MINUTES * 60:.0f} s)")
        deadline, events = time.monotonic() + timeout, []
        up = bool(self.head.workers())
        # until the raylets are gone and the autoscaler has said why (it logs after the kill)
        while self.head.workers() or (up and not any("(idle)" in e for e in events)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes still up {timeout:.0f} s after {after}: "
                                   f"{dict(self.head.workers())}; the autoscaler: {events}; "
                                   f"what Ray holds: {self.holding()}")  # fmt: skip
            time.sleep(1)
            events += self.head.events()
        self.results[f"workers_after_{key}"] = dict(self.head.workers())
        self.done(t, "the head is alone again", key, events)

    def doctor(self) -> None:
        t = self.step(f"vidtempo doctor --address {self.head.gcs} --data {self.data}")
        out = self.run(BIN / "vidtempo", "doctor", "tin_r18_synthetic", "--address", self.head.gcs,
                       "--workers", "2", "--data", self.data,
                       "--working-dir", CHECKOUT)  # fmt: skip
        self.results["doctor"] = out
        plan = next((ln for ln in out.splitlines() if ln.startswith("the run:")), "")
        self.done(t, ("all checks passed" if "all checks passed" in out else out[-300:])
                  + f"; {plan}", "doctor")  # fmt: skip

    def train_with_a_node_lost(self) -> None:
        from vidtempo import storage
        from vidtempo.train import checkpoint as ckpt

        t = self.step("ray job submit … -- python jobs/train.py tin_r18_synthetic "
                      f"--data {self.data} (its trainer node lost mid-run)")  # fmt: skip
        run_dir = f"{self.root}/runs/rehearsal"
        # no --storage, no --mlflow-uri: the job's driver has them from the head, as on AWS
        cmd = self.submit("jobs/train.py", "tin_r18_synthetic", "--data", self.data,
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
        t = self.step(f"ray job submit … -- python jobs/tune.py tin_r18_synthetic "
                      f"--data {self.data} --name {SWEEP} (stopped with `ray job stop`, then "
                      "submitted again with --resume)")  # fmt: skip
        args = ["jobs/tune.py", "tin_r18_synthetic", "--data", self.data,
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


def rehearse(workdir: str | Path, say=print, s3: S3Server | None = None,
             drills: bool = True) -> dict:  # fmt: skip
    """Every step in order; the servers and nodes are stopped at the end, also on failure.
    `drills=False`: the documented commands alone."""
    r = Rehearsal(workdir, say, s3)
    if not drills:
        r.total -= DRILLS
    started = time.monotonic()
    try:
        r.stand_ins()
        r.documented()
        r.tracked()
        r.idle("the job's and the sweep's nodes", "the documented runs", "idle_after_docs")
        if drills:
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
    say("      `ray down cluster.yaml`: the servers and the Ray head stopped, the nodes with it")
    r.results["seconds"] = time.monotonic() - started
    summary = "the documented commands ran verbatim: " + ", ".join(
        f"{name} {key} {value:.2f}" for name, (key, value) in r.results["test_top1"].items())
    if drills:
        summary += (f"; the resumed run logged epochs {r.results['epochs']}; the resumed sweep ran "
                    f"{len(r.results['sweep']['children'])} trials to the end")  # fmt: skip
    say(f"rehearsal passed in {r.results['seconds'] / 60:.1f} min: {summary}")
    return r.results


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="rehearsal", help="servers' files, logs, the report")
    p.add_argument("--docs-only", action="store_true", help="the documented commands alone, "
                   "without the drills (a node lost mid-run, a sweep stopped and resumed)")  # fmt: skip
    args = p.parse_args(argv)
    # a `kill` stops what the rehearsal started, as Ctrl-C does (rehearse's `finally`)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        rehearse(args.workdir, drills=not args.docs_only)
    except KeyboardInterrupt:
        print("rehearsal interrupted: its servers and nodes are stopped", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"rehearsal failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
