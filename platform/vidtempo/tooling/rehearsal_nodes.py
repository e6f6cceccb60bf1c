"""The node provider of the rehearsal's autoscaling head (vidtempo.tooling.servers.AutoscalingHead),
imported by Ray's autoscaler monitor on that head — its own module, so that importing the
rehearsal does not import Ray (a process's Ray reads RAY_AUTH_MODE once, when it is imported).

With `provider.isolation` (the rehearsal's), a node shares nothing with the head but what
cluster.yaml gives a node: it starts as `ray start --address=… --block` in a mount namespace of its
own (`unshare --mount`, root only) where a tmpfs covers each of the head's private folders (its
HOME, the rehearsal's working dir with the secrets, the local runs and tracking database), with
a HOME of its own holding a copy of the cluster's secrets folder (cluster.yaml's file_mounts), and
an environment of only what a node's setup gives it: `source ~/.vidtempo/secrets/cluster.env` and
the machine's own variables (the S3 endpoint and keys stand in for the instance profile).

    python -m vidtempo.tooling.rehearsal_nodes probe GCS RESOURCE PATH
        # a task on a node carrying RESOURCE: what it sees of PATH, its HOME and environment
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ray._private.node import Node
from ray._private.parameter import RayParams
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)


class LocalNodeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider — the autoscaler launches each node as a raylet on this
    machine — with two changes that make its nodes behave as a cloud's do:

    - a node is up to date once it runs. Ray's class keeps the launcher's "uninitialized"
      status (its set_node_tags refuses every change), and the autoscaler never gives up a node
      in that status when its raylet dies: a lost node held its place under max_workers for
      good (measured);
    - a node has a temp dir of its own (under provider.node_temp_root), as on its own machine.
      Ray's class gives every node the head's: a starting node's runtime-env agent then emptied
      the job working-dir copies the head's job drivers ran in (measured: the driver's cwd
      vanished, `[Errno 2] No such file or directory`)."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = dict(resources)
        with self.lock:
            node_id = self._next_hex_node_id()
            kind = tags[TAG_RAY_USER_NODE_TYPE]
            temp = Path(self.provider_config["node_temp_root"]) / f"node-{node_id[-5:]}"
            cpus, gpus = resources.pop("CPU", 0), resources.pop("GPU", 0)
            store = resources.pop("object_store_memory", None)
            # the node's id is the provider's (the autoscaler maps one to the other); its type
            # is in the raylet's environment (the rehearsal finds nodes by it)
            ids = {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id, "RAY_CLOUD_INSTANCE_ID": node_id,
                   "RAY_NODE_TYPE_NAME": kind}  # fmt: skip
            entry = {"tags": {**tags, TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                              TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE},
                     "temp": temp}  # fmt: skip
            isolation = self.provider_config.get("isolation")
            if isolation:
                entry["proc"] = start_isolated_node(isolation, self._gcs_address, temp, ids, cpus,
                                                    gpus, resources)  # fmt: skip
            else:
                params = RayParams(
                    gcs_address=self._gcs_address, redis_address=self._gcs_address,
                    temp_dir=str(temp), min_worker_port=0, max_worker_port=0, dashboard_port=None,
                    dashboard_agent_listen_port=0, num_cpus=cpus, num_gpus=gpus,
                    object_store_memory=store, resources=resources, labels=labels, env_vars=ids,
                )  # fmt: skip
                entry["node"] = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = entry

    def _terminate_node(self, node):
        if "proc" in node:
            stop_isolated_node(node["proc"])
        else:
            super()._terminate_node(node)
        shutil.rmtree(node["temp"], ignore_errors=True)


# ---- a node in a mount namespace of its own ------------------------------------------------


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def mount_script(hide: list[str], keep: list[str], stash: str) -> str:
    """Shell lines, run in the node's new mount namespace: an empty tmpfs over each folder of
    `hide` that exists. What a node has installed stays visible when a hidden folder holds it —
    each folder of `keep` (the checkout, which cluster.yaml copies to every node, and the Python
    the environment runs on) is bound aside under `stash` first and moved back after; then the
    hidden folders inside those (the rehearsal's working dir, local runs) are covered too."""
    q = shlex.quote
    held = [k for k in keep if any(_under(k, h) for h in hide)]
    inner = sorted((h for h in hide if any(_under(h, k) for k in held)
                    and not any(_under(k, h) for k in held)), key=len)  # fmt: skip
    outer = sorted((h for h in hide if h not in inner), key=len)
    cover = "if [ -d {0} ]; then mount -t tmpfs -o mode=700 vidtempo-hidden {0}; fi"
    lines = ["set -e"]
    for i, k in enumerate(held):
        lines += [f"mkdir -p {q(f'{stash}/{i}')}", f"mount --bind {q(k)} {q(f'{stash}/{i}')}"]
    lines += [cover.format(q(h)) for h in outer]
    for i, k in enumerate(held):
        lines += [f"mkdir -p {q(k)}", f"mount --move {q(f'{stash}/{i}')} {q(k)}"]
    lines += [cover.format(q(h)) for h in inner]
    return "\n".join(lines)


def start_isolated_node(iso: dict, gcs: str, temp: Path, ids: dict, cpus: float, gpus: float,
                        resources: dict) -> subprocess.Popen:  # fmt: skip
    """`ray start --address=GCS --block` in a mount namespace of its own (see the module's note),
    its process group its own (removing the node = ending the group)."""
    from vidtempo.machine import free_port

    home = temp / "home"
    secrets = home / ".vidtempo" / "secrets"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(iso["secrets"], secrets)  # cluster.yaml's file_mounts
    secrets.chmod(0o700)
    (temp / "tmp").mkdir(exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    args = [f"{bindir}/ray", "start", f"--address={gcs}", "--block", f"--temp-dir={temp}",
            f"--num-cpus={cpus:g}", f"--num-gpus={gpus:g}", f"--resources={json.dumps(resources)}",
            f"--node-manager-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0",
            *(f"--{name}-port={free_port()}" for name in (
                "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                "runtime-env-agent", "object-manager"))]  # fmt: skip
    script = "\n".join([
        mount_script(iso["hide"], [iso["checkout"], python_home()], str(temp / "keep")),
        # what cluster.yaml's setup gives every node (~/vidtempo.env sources cluster.env)
        'source "$HOME/.vidtempo/secrets/cluster.env"',
        "exec " + shlex.join(args),
    ])  # fmt: skip
    env = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "TMPDIR": str(temp / "tmp"), "LANG": "C.UTF-8", **iso.get("env", {}), **ids}  # fmt: skip
    log = open(temp / "node.log", "ab")  # noqa: SIM115 - the node's lifetime
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def python_home() -> str:
    """The Python installation the environment's interpreter links to (a venv's is elsewhere)."""
    return str(Path(os.path.realpath(sys.executable)).parents[1])


def stop_isolated_node(proc: subprocess.Popen) -> None:
    """The node's `ray start --block` and everything under it (raylet, workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


# ---- the negative control -------------------------------------------------------------------


def _look(path: str) -> dict:
    """Run on a node: can it read `path`; its HOME; the head-only variables it has."""
    import ray

    try:
        with open(path, "rb") as fh:
            read = f"read {len(fh.read())} bytes"
    except OSError as exc:
        read = f"{type(exc).__name__}: {exc.strerror or exc}"
    env = sorted(k for k in os.environ if k.startswith(("VIDTEMPO_STORAGE", "VIDTEMPO_MLFLOW")))
    return {"node": ray.get_runtime_context().get_node_id(), "read": read,
            "home": os.environ.get("HOME", ""), "head_env": env}  # fmt: skip


def probe(gcs: str, resource: str, path: str) -> dict:
    import ray

    ray.init(address=gcs, log_to_driver=False, logging_level="ERROR")
    try:
        look = ray.remote(_look).options(num_cpus=0, resources={resource: 0.001}, max_retries=0)
        return ray.get(look.remote(path), timeout=600)
    finally:
        ray.shutdown()


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    print(json.dumps(probe(*sys.argv[2:5])))
