"""Ray for this process: connect to the cluster a command names (which must answer), else start a
local instance — token authentication on, its dashboard where Ray Train's cleaner finds it, and
the environment CPU workers run with. Below data/ (whose Ray conversion starts Ray here) and
preflight.py (which checks what a run needs of the Ray it gets)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

import ray

from vidtempo import verbosity
from vidtempo.machine import free_port

# glibc returns big freed blocks to the OS at once (mmap) and page-faults them back on every
# step; CPU workers keep them instead (BENCHMARKS.md, tin_shift section: 2.75x → 5.36x)
CPU_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}

# Ray kills idle task workers after 1 s once there are more worker processes than CPUs — and a
# training run's actors alone outnumber the CPUs of a small box. Every validation pass then
# started fresh workers that import torch again (~7 s per pass on 2 cores instead of <1 s).
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


class ClusterUnreachable(ConnectionError):
    """No Ray head listens at the address a command was given."""


def check_gcs_answers(address: str, timeout: float = 10.0) -> None:
    """A `host:port` address (not "auto", not ray://) must accept a connection within `timeout`
    seconds: ray.init itself retries a dead address for minutes before it gives up."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ClusterUnreachable(
                    f"no Ray head answers at {address} ({exc.strerror or exc}): start one with "
                    "`ray start --head`, or pass the address `ray status` prints on the head"
                ) from None
            time.sleep(0.5)


def cluster_runtime_env() -> dict | None:
    """What this driver's tasks and actors (a sweep's trials, Train's controller) take on a
    cluster started before it: the log levels and quiet settings of verbosity.worker_env(), which
    a local instance's processes inherit from this one, and the quiet run's worker setup hook. A
    variable (or a setup hook) the submitted job's runtime env already has is left to it (Ray
    refuses two values for one key)."""
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    job_env = (json.loads(job).get("runtime_env") or {}) if job else {}
    taken = set(job_env.get("env_vars") or {})
    env = {k: v for k, v in verbosity.worker_env().items() if k not in taken}
    hooked = bool(job_env.get("worker_process_setup_hook")) or (
        WORKER_PROCESS_SETUP_HOOK_ENV_VAR in taken)  # fmt: skip
    extras = verbosity.worker_runtime_env_extras(has_hook=hooked)
    return ({"env_vars": env} if env else {}) | extras or None


# Ray Data's cluster-wide actors (one of each per cluster, detached, 0 CPUs) that its
# executions create, each pinned to the node of the process that first needs it
RAY_DATA_ACTORS = [
    ("ray.data._internal.stats", "get_or_create_stats_actor"),
    ("ray.data._internal.usage.actor", "get_or_create_usage_collection_actor"),
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
     "get_or_create_autoscaling_coordinator"),
]  # fmt: skip


def keep_ray_data_actors_here() -> None:
    """Create Ray Data's cluster-wide actors on this driver's node (the head, under `ray job
    submit`) before any worker does. Ray Data pins each to the node of the first process that
    needs it, and vidtempo's Train workers build their own datasets: the first run on a cluster
    left `datasets_stats_actor` and `DataUsageCollectionActor` on a trainer node, and a node
    with a live actor is never idle — the autoscaler kept that (GPU) node up after every run
    had ended (measured in the rehearsal: `ray list actors` after the documented sweep). An
    actor that already exists stays where it is. A function this Ray no longer has is skipped
    (tests/test_train.py fails on such an upgrade)."""
    import importlib

    for module, function in RAY_DATA_ACTORS:
        with contextlib.suppress(ImportError, AttributeError):
            getattr(importlib.import_module(module), function)()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS, as inside `ray job submit`), else start a local
    instance for this process."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_gcs_answers(address)
        ray.init(address=address, runtime_env=cluster_runtime_env(),
                 logging_level=verbosity.log_level())  # fmt: skip
        keep_ray_data_actors_here()
        return
    # A new local instance keeps Ray's own default: token authentication, with the token Ray
    # makes in ~/.ray/auth_token when there is none (RAY_AUTH_MODE set by the user wins). Ray
    # switches its cached config to token mode itself; setting the variable here instead would
    # leave this process's config behind (its GCS then refuses the driver). Its notice that it
    # did so, and how to opt out, is about a choice vidtempo makes on purpose: not printed.
    verbosity.quiet_auth_notice()
    # The dashboard stays on: when Tune stops a trial, its Train controller dies with it, and
    # Ray Train's placement-group cleaner asks the dashboard's state API whether the controller
    # is gone before it frees the trial's CPUs. The cleaner finds that API by looking for Ray
    # processes on the machine and gives up when there are two instances ("Found multiple
    # active Ray instances") — the placement group then leaks and the next trial never starts.
    # So this instance's workers are told where its dashboard is.
    port = free_port()
    env = {**CPU_WORKER_ENV, **verbosity.worker_env(),
           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}  # fmt: skip
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), dashboard_port=port,
             runtime_env={"env_vars": env, **verbosity.worker_runtime_env_extras()},
             _system_config=LOCAL_SYSTEM_CONFIG,
             logging_level=verbosity.log_level())  # fmt: skip
