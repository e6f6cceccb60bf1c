"""`vidtempo prepare … --ray`: the conversion as Ray tasks, one per shard, across a cluster.

Each task decodes and validates its shard's inputs exactly as the local converter does (the
same worker code, in a child process of the Ray worker with the same timeout, so a hanging or
crashing decoder costs that input, not the task) and writes the shard to the output folder or bucket; the driver
records each finished shard in `.progress.json` as results come in. Inputs and output must be
where every node reads and writes them: a URI (s3://, gs://) or a folder on a shared mount.
"""

from __future__ import annotations

import ray

from vidtempo import capacity, storage
from vidtempo.capacity import DECODE_SHARE
from vidtempo.data import convert

_POOLS: dict[float, convert._Pool] = {}  # per Ray worker process: its decoder, started once


def _convert_shard(chunk: list[dict], location: str, kind: str, timeout: float):
    # the decoder process outlives the task: a Ray worker runs many shards' tasks, and starting
    # a process that imports the decoders costs about a second (the pool restarts it after a
    # timeout or a crash)
    pool = _POOLS.setdefault(timeout, convert._Pool(1, timeout))
    return convert.convert_chunk(chunk, location, kind, pool)


def check_shared(root: str, out: str, nodes: int, autoscaling: bool = False) -> None:
    """On several nodes (or nodes an autoscaler adds), a local input or output folder would be
    read and written on whichever node a task lands on: fail before any task starts."""
    local = [flag for flag, where_ in (("--root", root), ("--out", out))
             if not storage.is_uri(where_)]  # fmt: skip
    if (nodes > 1 or autoscaling) and local:
        where = "the nodes its autoscaler adds" if autoscaling else f"{nodes} nodes"
        raise convert.DataError(
            f"prepare --ray runs its tasks on {where}, but {' and '.join(local)} "
            "name a folder on this machine: use s3://BUCKET/PREFIX (or gs://), or file:///PATH "
            "on a mount every node sees")  # fmt: skip


def task_need(decode_resource: str | None) -> capacity.Need:
    """One conversion task: 1 CPU, on a node carrying `decode_resource` when given."""
    bundle = {"CPU": 1.0, **({decode_resource: DECODE_SHARE} if decode_resource else {})}
    return capacity.Need((bundle,), decode=decode_resource, what="the conversion's tasks",
                         what_asks="prepare --ray")  # fmt: skip


def ray_chunks(root: str, decode_resource: str | None = None):
    """A `run_chunks` for vidtempo.data.convert.convert: every shard still to do as one Ray
    task (1 CPU; on the nodes carrying `decode_resource` when given), yielded as each ends.
    The cluster must hold a task: now, or once its autoscaler adds a node (asked for and waited
    on up to opts.node_wait_minutes); on an autoscaling cluster the tasks may land on any node."""

    def run(todo, opts, out, bar):
        cap, need = capacity.read(), task_need(decode_resource)
        launch = cap.plan(need)
        if launch is None:
            raise capacity.ResourceError(capacity.impossible(need, cap))
        check_shared(str(root), out, len(cap.alive), cap.autoscaling)
        if launch:
            capacity.wait_for(need, cap, launch, opts.node_wait_minutes)
        place = {"resources": {decode_resource: DECODE_SHARE}} if decode_resource else {}
        task = ray.remote(_convert_shard).options(num_cpus=1, **place)
        pending = {task.remote(chunk, storage.join(out, name), opts.storage, opts.timeout):
                   (name, len(chunk)) for name, chunk in todo}  # fmt: skip
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name, n = pending.pop(ready[0])
                entry, bad = ray.get(ready[0])
                bar.update(n)
                yield name, entry, bad
        finally:
            for ref in pending:  # an error stops the rest; finished shards stay recorded
                ray.cancel(ref)

    return run
