"""Decode placement (run.decode_resource / --decode-on): Ray Data's read + decode + augment tasks
run on the nodes that carry the decode resource — CPU-only nodes in cluster.yaml — while the
training workers stay where they are placed, on a simulated cluster (ray.cluster_utils)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidtempo import config

DECODE = "decode"


@pytest.fixture(scope="module")
def decode_cluster(mlflow_server):
    """A head with no CPUs (driver, Train controller), one trainer node with 3 CPUs (the two
    1-CPU workers, STRICT_PACK, can only go there, and one CPU is left that decoding could take)
    and two 1-CPU nodes carrying the decode resource."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True,
        "_system_config": {"idle_worker_killing_time_threshold_ms": 60_000}})  # fmt: skip
    trainer = c.add_node(num_cpus=3)
    decoders = [c.add_node(num_cpus=1, resources={DECODE: 1000}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, trainer.node_id, {d.node_id for d in decoders}
    ray.shutdown()
    c.shutdown()
    current = Path("/tmp/ray/ray_current_cluster")
    if current.exists() and current.read_text().strip() == c.address:
        current.unlink()


def _cfg(tmp_path, server, *extra):
    return config.load("tin_r18_synthetic", [
        "train.epochs=2", "train.min_steps=null", "run.batch_per_worker=4",
        "run.cpus_per_worker=1", "run.data_cpus_per_worker=1", "run.placement_strategy=STRICT_PACK",
        f"run.storage_path=file://{tmp_path / 'runs'}", f"run.mlflow_uri={server}",
        "run.experiment=decode", *extra])  # fmt: skip


def _decode_tasks() -> list:
    from ray.util.state import list_tasks

    tasks = list_tasks(limit=10_000, detail=True, raise_on_missing_output=False)
    return [t for t in tasks if "ReadRowGroups" in (t.name or "")]


@pytest.mark.ray
@pytest.mark.slow
def test_decode_tasks_run_only_on_decode_nodes(decode_cluster, synthetic_data, mlflow_server,
                                               tmp_path):  # fmt: skip
    from vidtempo import tracking
    from vidtempo.train.run import fit

    _, trainer, decoders = decode_cluster
    res = fit(_cfg(tmp_path, mlflow_server, f"run.decode_resource={DECODE}"), synthetic_data,
              name="on-decoders")  # fmt: skip
    assert "test/top1:2x1" in res["metrics"]
    tags = tracking.get_run(res["mlflow_uri"], res["mlflow_run_id"])["tags"]
    assert set(json.loads(tags["vidtempo.worker_nodes"])) == {trainer}
    ran = _decode_tasks()
    # per worker: the training stream (both epochs), the validation pass and the test protocol
    # (a task takes up to pipeline.VIDEOS_PER_TASK videos: one task each at this size)
    assert len(ran) >= 6
    where = {t.node_id for t in ran}
    assert where <= decoders and trainer not in where, (where, decoders, trainer)
    # bytes of one uint8 clip, the unit that crosses the network to the trainers
    assert res["metrics"]["clip_bytes"] == 8 * 3 * 32 * 32


@pytest.mark.ray
@pytest.mark.slow
def test_without_decode_nodes_asked_for_the_run_is_as_before_and_a_missing_resource_fails_fast(
        decode_cluster, synthetic_data, mlflow_server, tmp_path):  # fmt: skip
    from vidtempo.preflight import ResourceError
    from vidtempo.train.run import fit

    res = fit(_cfg(tmp_path, mlflow_server), synthetic_data, name="anywhere")
    assert "test/top1:2x1" in res["metrics"]
    with pytest.raises(ResourceError, match="no alive node carries the Ray resource 'gpu-decode'"):
        fit(_cfg(tmp_path, mlflow_server, "run.decode_resource=gpu-decode"), synthetic_data,
            name="nowhere")  # fmt: skip
