"""The pre-flight on a cluster that autoscales from zero: Ray's own autoscaler on a head started
with `--autoscaling-config` (vidtempo.tooling.servers.AutoscalingHead: a head with no CPUs, alone, and
cluster.yaml's worker types at min_workers 0, launched as raylets on this machine by Ray's fake
multi-node provider). A run the cluster can never hold fails at once with the numbers and nothing
written; one it can hold once nodes come asks for them and waits, saying so; a deadline ends the
wait; doctor says what will be launched; a sweep counts the trials the cluster holds at its
largest; a run's decoding goes to the decode node it had launched. Fixed clusters keep the strict
checks (test_cluster, test_train)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from vidtempo import config

ROOT = Path(__file__).resolve().parents[1]
# the rehearsal's types, smaller: trainers of 2 CPUs (up to 2), one decode node of 1 CPU
NODE_TYPES = {
    "trainer": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 2},
    "cpu-decode": {"resources": {"CPU": 1, "decode": 1000}, "min_workers": 0, "max_workers": 1},
}


@pytest.fixture(scope="module")
def cold_cluster(mlflow_server, tmp_path_factory):
    """The head alone; this process its driver (as `ray job submit`'s driver on the head)."""
    import ray

    from vidtempo.tooling.servers import AutoscalingHead

    if ray.is_initialized():  # the suite's single-node instance; conftest restarts it later
        ray.shutdown()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = AutoscalingHead(env, tmp_path_factory.mktemp("autoscaling"), NODE_TYPES,
                           idle_minutes=2)  # fmt: skip
    try:
        ray.init(address=head.gcs, log_to_driver=False)
        yield head
    finally:
        ray.shutdown()
        head.stop()


def _cfg(tmp_path, server, *extra):
    return config.load("tin_r18_synthetic", [
        "train.epochs=2", "train.min_steps=null", "run.batch_per_worker=4",
        f"run.storage_path=file://{tmp_path / 'runs'}", f"run.mlflow_uri={server}",
        "run.experiment=autoscaling", *extra])  # fmt: skip


def _no_run_named(server: str, name: str) -> bool:
    from vidtempo.tracking import store

    return store.find_run(server, "autoscaling", name) is None


@pytest.mark.ray
def test_the_cluster_as_its_autoscaler_can_make_it(cold_cluster, synthetic_data, mlflow_server,
                                                   tmp_path):  # fmt: skip
    from vidtempo import capacity
    from vidtempo.capacity import Need, ResourceError
    from vidtempo.train.run import fit

    cap = capacity.read()
    assert cap.autoscaling and str(cold_cluster.config) in cap.source
    assert {t.name: (t.resources, t.max_workers) for t in cap.types} == {
        "trainer": ({"CPU": 2.0}, 2), "cpu-decode": ({"CPU": 1.0, "decode": 1000.0}, 1)}
    assert cap.max_workers == 3 and len(cap.alive) == 1  # the head alone, no CPUs
    run = Need.for_run(_cfg(tmp_path, mlflow_server))  # 2 workers × (0.5 + 0.5 for data)
    assert cap.plan(run) == {"trainer": 1}
    assert cap.plan(Need.for_run(_cfg(tmp_path, mlflow_server, "run.decode_resource=decode"))) \
        == {"cpu-decode": 1, "trainer": 1}
    assert cap.most(run) == 2  # 5 CPUs at its largest, 2 a run: what a sweep runs at once

    # more than the largest shape: at once, with the numbers, nothing written
    t = time.monotonic()
    with pytest.raises(ResourceError) as err:
        fit(_cfg(tmp_path, mlflow_server, "run.num_workers=8"), synthetic_data, name="too-big")
    message = str(err.value)
    assert "8 workers × (0.5 CPU) + 0.5 CPU each for data = 8 CPUs" in message, message
    assert "room for 5 workers at its largest" in message  # 5 CPUs: 2 trainers and a decoder
    assert "trainer (2 CPU; up to 2)" in message and "at most 3 worker nodes" in message
    with pytest.raises(ResourceError, match="no node type of its autoscaler carries it either"):
        fit(_cfg(tmp_path, mlflow_server, "run.decode_resource=gpu-decode"), synthetic_data,
            name="no-such-nodes")  # fmt: skip
    assert time.monotonic() - t < 30
    assert not (tmp_path / "runs").exists()
    assert _no_run_named(mlflow_server, "too-big") and _no_run_named(mlflow_server, "no-such-nodes")
    assert not any(t.running for t in capacity.read().types)  # nothing asked of the autoscaler


@pytest.mark.ray
def test_doctor_on_a_cold_cluster_says_what_will_be_launched(cold_cluster, mlflow_server, tmp_path):
    from vidtempo import doctor

    report = doctor.check(_cfg(tmp_path, mlflow_server), address=cold_cluster.gcs)
    assert report["ok"], report["problems"]
    assert report["launch"] == {"trainer": 1} and report["spans"] == 2
    text = doctor.render(report)
    assert "the run: the autoscaler will add 1 × trainer when it starts" in text, text
    big = doctor.check(_cfg(tmp_path, mlflow_server, "run.num_workers=8"), address=cold_cluster.gcs)
    assert not big["ok"] and any("room for 5 workers at its largest" in p for p in big["problems"])


@pytest.mark.ray
def test_a_run_that_fits_once_nodes_come_asks_for_them_and_waits(cold_cluster, mlflow_server,
                                                                 tmp_path, capsys):  # fmt: skip
    import ray

    from vidtempo import capacity, preflight

    cfg = _cfg(tmp_path, mlflow_server)
    root = preflight.before_run(cfg, mlflow_server)
    out = capsys.readouterr().out
    assert root == f"file://{tmp_path / 'runs'}"
    assert "waiting for the autoscaler: 1 × trainer for 2 workers — 0/1 up, 0m00s" in out, out
    assert "the autoscaler brought up 1 × trainer for 2 workers in" in out
    assert cold_cluster.workers() == {"trainer": 1}
    assert capacity.read().plan(capacity.Need.for_run(cfg)) == {}  # now it fits: no wait
    # the wait's placement groups are gone: their CPUs are free for the run's own
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == 2


@pytest.mark.ray
def test_the_wait_for_nodes_ends_at_its_deadline_with_nothing_written(
        cold_cluster, synthetic_data, mlflow_server, tmp_path):  # fmt: skip
    from vidtempo.capacity import ResourceError
    from vidtempo.train.run import fit

    # 4 workers × (0.5 + 0.5) CPUs, 2 up: a second trainer node — not up within 0.3 s
    cfg = _cfg(tmp_path, mlflow_server, "run.num_workers=4", "run.node_wait_minutes=0.005")
    with pytest.raises(ResourceError) as err:
        fit(cfg, synthetic_data, name="impatient")
    message = str(err.value)
    assert "the autoscaler did not bring up 1 × trainer for 4 workers within 0.005 min" in message
    assert "nothing was started or written" in message and "--node-wait" in message
    assert not (tmp_path / "runs").exists() and _no_run_named(mlflow_server, "impatient")


@pytest.mark.ray
def test_a_sweep_runs_as_many_trials_as_the_cluster_holds_at_its_largest(cold_cluster,
                                                                         mlflow_server, tmp_path):  # fmt: skip
    from vidtempo.capacity import ResourceError
    from vidtempo.tune.sweep import concurrent_trials

    assert concurrent_trials(_cfg(tmp_path, mlflow_server)) == 2  # not 1: what is up now
    assert concurrent_trials(_cfg(tmp_path, mlflow_server, "run.num_workers=1")) == 5
    with pytest.raises(ResourceError, match="room for"):
        concurrent_trials(_cfg(tmp_path, mlflow_server, "run.num_workers=9"))


@pytest.mark.ray
def test_prepare_on_the_cluster_asks_for_a_decode_node_or_says_none_can_come(cold_cluster,
                                                                             capsys):  # fmt: skip
    from vidtempo import capacity
    from vidtempo.data import convert
    from vidtempo.data.convert_ray import check_shared, task_need

    assert capacity.ensure(task_need("decode"), minutes=5) == {"cpu-decode": 1}
    out = capsys.readouterr().out
    assert "waiting for the autoscaler: 1 × cpu-decode for the conversion's tasks" in out, out
    assert cold_cluster.workers()["cpu-decode"] == 1
    assert capacity.ensure(task_need("decode"), minutes=5) == {}  # up now: no wait
    cap = capacity.read()
    assert capacity.impossible(task_need("gpu-decode"), cap).startswith(
        "no alive node carries the Ray resource 'gpu-decode'")  # fmt: skip
    # tasks may land on nodes the autoscaler adds: local folders are refused before any task
    with pytest.raises(convert.DataError, match="the nodes its autoscaler adds, but --out"):
        check_shared("s3://bucket/raw", "/tmp/shards", 1, autoscaling=True)
    check_shared("s3://bucket/raw", "s3://bucket/shards", 1, autoscaling=True)


def _decode_tasks(dashboard: str) -> list:
    from ray.util.state import list_tasks

    # the dashboard named: on one machine the state API finds this cluster at two addresses
    tasks = list_tasks(address=dashboard, limit=10_000, detail=True,
                       raise_on_missing_output=False)  # fmt: skip
    return [t for t in tasks if "ReadRowGroups" in (t.name or "")]


@pytest.mark.ray
@pytest.mark.slow
def test_decode_tasks_run_only_on_decode_nodes(cold_cluster, synthetic_data, mlflow_server,
                                               tmp_path):  # fmt: skip
    """run.decode_resource (--decode-on): Ray Data's read + decode + augment tasks run only on
    the nodes carrying it (the decode node the autoscaler added), the training workers where
    they are placed (two 1-CPU workers, STRICT_PACK: only a trainer node holds both)."""
    import ray

    from vidtempo import tracking
    from vidtempo.train.run import fit

    cfg = _cfg(tmp_path, mlflow_server, "run.decode_resource=decode", "run.cpus_per_worker=1",
               "run.data_cpus_per_worker=0.5", "run.placement_strategy=STRICT_PACK")  # fmt: skip
    res = fit(cfg, synthetic_data, name="on-decoders")
    assert "test/top1:2x1" in res["metrics"]
    workers = set(json.loads(tracking.get_run(res["mlflow_uri"], res["mlflow_run_id"])["tags"]
                             ["vidtempo.worker_nodes"]))  # fmt: skip
    decoders = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("decode")}
    ran = _decode_tasks(cold_cluster.address)
    # per worker: the training stream (both epochs), the validation pass and the test protocol
    # (a task takes up to pipeline.VIDEOS_PER_TASK videos: one task each at this size)
    assert len(ran) >= 6
    where = {t.node_id for t in ran}
    assert decoders and where <= decoders and not where & workers, (where, decoders, workers)
    # bytes of one uint8 clip, the unit that crosses the network to the trainers
    assert res["metrics"]["clip_bytes"] == 8 * 3 * 32 * 32


def test_nodes_are_counted_by_the_type_whose_resources_they_carry():
    """The worker nodes of each type come from Ray's node table (current), matched on the
    resources a type declares; the head and nodes of no declared type are told apart."""
    from vidtempo.capacity import alive_by_type

    specs = {"trainer": {"CPU": 2.0}, "cpu-decode": {"CPU": 1.0, "decode": 1000.0}}
    alive = ({"CPU": 0.0, "node:__internal_head__": 1.0, "memory": 1e9},
             {"CPU": 2.0, "memory": 4e9, "node:127.0.0.1": 1.0},
             {"CPU": 1.0, "decode": 1000.0, "memory": 2e9},
             {"CPU": 2.0, "object_store_memory": 1e9},
             {"CPU": 8.0})  # fmt: skip
    counts, unmatched = alive_by_type(specs, alive)
    assert counts == {"trainer": 2, "cpu-decode": 1} and unmatched == 1


def test_the_autoscalers_config_is_read_from_its_monitor_not_a_nodes_log_monitor(tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    """Every node runs Ray's log_monitor.py with the GCS's address; only the head's monitor.py
    names the autoscaler's config. A worker node's log monitor listed first (its PID sorted
    lower) once made the head read as having no autoscaler."""
    import psutil

    from vidtempo.capacity import monitor_config

    cfg = tmp_path / "autoscaling.yaml"
    cfg.write_text("max_workers: 3\navailable_node_types: {trainer: {resources: {CPU: 2}}}\n")
    py, ray_dir = sys.executable, "/venv/lib/python3.11/site-packages/ray"

    class Proc:
        def __init__(self, *cmd):
            self.info = {"cmdline": [py, "-u", *cmd], "cwd": str(tmp_path)}

    procs = [Proc(f"{ray_dir}/_private/log_monitor.py", "--session-dir=/tmp/ray/x",
                  "--gcs-address=127.0.0.1:6380"),
             Proc(f"{ray_dir}/autoscaler/_private/monitor.py", "--logs-dir=/tmp/ray/x/logs",
                  "--gcs-address=127.0.0.1:6379"),  # another cluster's
             Proc(f"{ray_dir}/autoscaler/_private/monitor.py", "--logs-dir=/tmp/ray/y/logs",
                  "--gcs-address=127.0.0.1:6380", f"--autoscaling-config={cfg}")]  # fmt: skip
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter(procs))
    found, source = monitor_config("6380")
    assert found["max_workers"] == 3 and str(cfg) in source
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter(procs[:2]))
    assert monitor_config("6380") == (None, "no autoscaler monitor on the head")
