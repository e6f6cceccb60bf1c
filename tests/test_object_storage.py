"""Object storage for real: datasets, checkpoints and the tracking server's artifacts on an S3
server (moto's standalone server on 127.0.0.1, conftest's `s3`), reached through
AWS_ENDPOINT_URL as a cluster reaches S3; `prepare --ray` against the local process pool; the
README's cluster workflow rehearsed end to end; and the faults: S3 down or refusing the
credentials at start, S3 unresponsive while a checkpoint uploads, the tracking server restarted
mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vidtempo import config, storage, tracking
from vidtempo.data import convert as conv
from vidtempo.data import prepare, synthetic
from vidtempo.data.decode import decode_video
from vidtempo.data.schema import read_manifest
from vidtempo.machine import free_port
from vidtempo.storage import StorageError
from vidtempo.tooling.servers import Outage, S3Server, start_mlflow_server, stop_process_group
from vidtempo.train import checkpoint as ckpt

BIN = Path(sys.executable).parent


def _rows(split_dir: str) -> list[dict]:
    rows = []
    for shard in read_manifest(split_dir)["shards"]:
        with storage.open_input_file(storage.join(split_dir, shard["file"])) as f:
            rows += pq.read_table(f).to_pylist()
    return rows


def _options(out, **kw) -> conv.Options:
    return conv.Options(out=out, dataset="synthetic", split="val", videos_per_shard=8, workers=2,
                        classes=list(synthetic.CLASSES), progress=False, **kw)  # fmt: skip


def test_files_in_a_bucket_are_whole_or_absent_and_errors_name_the_endpoint(s3, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    root = s3.make_bucket("vt-storage")
    storage.write_bytes(f"{root}/a/b.json", b"{}")
    assert storage.read_bytes(f"{root}/a/b.json") == b"{}"
    assert storage.is_dir(f"{root}/a") and storage.listdir(f"{root}/a") == ["b.json"]
    assert storage.read_bytes(f"{root}/a/missing") is None
    # a write that fails half-way leaves nothing, in a bucket (an aborted multipart upload) and
    # in a folder (a temporary name never renamed)
    for where in (f"{root}/a", str(tmp_path)):
        with pytest.raises(RuntimeError), storage.open_output(f"{where}/half.parquet") as f:
            f.write(b"x" * (12 << 20))
            raise RuntimeError("crash mid-write")
        assert not storage.exists(f"{where}/half.parquet")
    assert storage.listdir(tmp_path) == [] and storage.listdir(f"{root}/a") == ["b.json"]

    with pytest.raises(StorageError, match="the bucket 'nobucket' does not exist"):
        read_manifest("s3://nobucket/data/train")
    # the endpoint down: the URI and the endpoint named, in one line
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(StorageError) as down:
        read_manifest(f"{root}/data/train")
    said = str(down.value)
    assert f"{root}/data/train (endpoint {dead})" in said and "\n" not in said
    # credentials the server refuses
    refusing = S3Server(tmp_path, auth=True)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", refusing.url)
        with pytest.raises(StorageError, match=f"endpoint {refusing.url}.*ACCESS_DENIED"):
            read_manifest(f"{root}/data/train")
    finally:
        refusing.stop()


@pytest.mark.ray
def test_prepare_on_ray_into_a_bucket_gives_the_local_pools_rows(s3, ray_session, synthetic_data,
                                                                 tmp_path):  # fmt: skip
    """The same list converted by this machine's process pool into a folder and by Ray tasks
    (one per shard) from videos in a bucket into a bucket: the same video ids, labels, frame
    counts and decoded pixels; a re-run after a crash redoes only the unfinished shard."""
    bucket = s3.make_bucket("vt-prepare")
    raw = synthetic_data / "raw"
    videos = prepare.upload(raw / "videos", f"{bucket}/raw/videos")
    local = prepare.prepare_videos(raw / "val_list.txt", raw / "videos", _options(tmp_path / "val"))
    out = f"{bucket}/data/val"
    remote = prepare.prepare_videos(raw / "val_list.txt", videos, _options(out), ray_address="")
    assert remote["num_videos"] == local["num_videos"] == 24 and len(remote["shards"]) == 3
    assert [s["rows"] for s in remote["shards"]] == [s["rows"] for s in local["shards"]]
    assert remote["source"]["root"] == f"{bucket}/raw/videos"
    a, b = _rows(str(tmp_path / "val")), _rows(out)
    assert [(r["video_id"], r["label"], r["num_frames"]) for r in a] == \
        [(r["video_id"], r["label"], r["num_frames"]) for r in b]  # fmt: skip
    for x, y in zip(a, b):
        frames = np.arange(x["num_frames"])
        assert np.array_equal(decode_video(x["video"], frames), decode_video(y["video"], frames))

    # a crash after two of the three shards: the re-run converts only the third
    state = json.loads(storage.read_bytes(f"{out}/.progress.json"))
    del state["shards"]["part-00002.parquet"]
    storage.write_bytes(f"{out}/.progress.json", json.dumps(state).encode())
    storage.delete(f"{out}/manifest.json")
    converted = []

    def spy(todo, opts, where, bar):
        converted.extend(name for name, _ in todo)
        from vidtempo.data.convert_ray import ray_chunks

        yield from ray_chunks(videos)(todo, opts, where, bar)

    jobs, _ = conv.video_jobs(raw / "val_list.txt", videos, _options(out))
    again = conv.convert(jobs, _options(out), remote["source"], spy)
    assert converted == ["part-00002.parquet"]
    assert again["shards"] == remote["shards"] and read_manifest(out) == again


def test_bad_uris_and_refused_credentials_stop_the_run_with_one_line(s3, tmp_path):
    """`vidtempo train --data s3://…` with the S3 server down, or refusing the credentials:
    exit 2, one error line naming the URI and the endpoint, before anything starts or is
    written."""
    bucket = s3.make_bucket("vt-down")
    dead = f"http://127.0.0.1:{free_port()}"
    refusing = S3Server(tmp_path, auth=True)
    try:
        for endpoint in (dead, refusing.url):
            env = {**__import__("os").environ, **S3Server.env_for(endpoint)}
            t = time.monotonic()
            done = subprocess.run(
                [str(BIN / "vidtempo"), "train", "tin_r18_synthetic", "--data", f"{bucket}/data",
                 "--storage", str(tmp_path / "runs"), "--mlflow-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}"],
                env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
            errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
            assert done.returncode == 2, done.stdout + done.stderr
            assert len(errors) == 1 and errors[0].startswith("vidtempo: error: cannot reach")
            assert f"{bucket}/data (endpoint {endpoint})" in errors[0], errors
            assert time.monotonic() - t < 60
    finally:
        refusing.stop()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def _when_epoch_done(run_dir: str, epoch: int, then) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 300
        while ckpt.read_progress(run_dir).get("epochs_done", 0) < epoch:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_outlasts_s3_going_silent_and_the_tracking_server_restarting(
        s3, ray_session, synthetic_data, tmp_path):  # fmt: skip
    """Training from shards in the bucket with checkpoints in the bucket, logging to an `mlflow
    server`. Once epoch 1 is in, the S3 server is paused (SIGSTOP: connections open, no
    answers) for 15 s, so that epoch 2's checkpoint uploads into the silence; once epoch 2 is
    in, the tracking server is stopped and started again (same store, same port). The run goes
    on (retrying, or failing an epoch and resuming from the last committed checkpoint) and
    finishes every epoch once; every checkpoint in the bucket is whole (it loads, and holds the
    steps of its epoch); what it logged after the restart is in its MLflow run."""
    from vidtempo.train.run import fit

    bucket = s3.make_bucket("vt-faults")
    data = f"{bucket}/data"
    for split in ("train", "val"):
        prepare.upload(synthetic_data / split, f"{data}/{split}")
    root = tmp_path / "mlflow"
    root.mkdir()
    port = free_port()
    server, url = start_mlflow_server(root, port=port)
    cfg = config.load("tin_r18_synthetic", [
        "run.batch_per_worker=4", "train.min_steps=null", "train.epochs=4", "run.max_failures=3",
        f"run.storage_path={bucket}/runs", f"run.mlflow_uri={url}", "run.experiment=faults"])  # fmt: skip
    run_dir = f"{bucket}/runs/faults"
    events = {}

    def pause_s3():
        s3.pause()
        time.sleep(15)
        s3.resume()
        events["paused"] = True

    def restart_tracking():
        while "paused" not in events:  # one fault at a time
            time.sleep(0.1)
        stop_process_group(server)
        time.sleep(3)
        events["server"], _ = start_mlflow_server(root, port=port)
        events["restarted_after"] = ckpt.read_progress(run_dir)["epochs_done"]

    watchers = [_when_epoch_done(run_dir, 1, pause_s3), _when_epoch_done(run_dir, 2, restart_tracking)]
    try:
        res = fit(cfg, data, name="faults")
        for w in watchers:
            w.join(timeout=120)
        assert events.get("paused") and "server" in events, events
        run = tracking.get_run(url, res["mlflow_run_id"])
        assert run["status"] == "FINISHED" and "test/top1:2x1" in run["metrics"]
        # every epoch once, and epochs logged after the tracking server came back
        losses = sorted({s for s, _ in tracking.metric_history(url, res["mlflow_run_id"], "loss")})
        assert losses == [1, 2, 3, 4] and max(losses) > events["restarted_after"]
        steps = run["metrics"]["steps_per_epoch"]
        kept = [n for n in storage.listdir(run_dir) if n.startswith("epoch_")]
        assert kept and kept[-1] == "epoch_0004"
        for name in kept:
            state, _ = ckpt.load_state(storage.join(run_dir, name), 0)
            epoch = int(name.split("_")[1])
            assert state["epoch"] == epoch - 1 and state["iteration"] == epoch * steps
    finally:
        stop_process_group(events.get("server", server))


@pytest.mark.ray
@pytest.mark.slow
def test_row_group_reads_outlast_s3_going_down_with_no_restart(s3, synthetic_data, tmp_path):
    """`vidtempo train` reading its shards from the bucket through a front that goes down (every
    connection cut, each new one closed: a stopped server) for 20 s once epoch 1 is in, then comes
    back. pyarrow gives up on such a read at once; vidtempo reads the row group again with
    backoff. The run finishes with no worker-group restart (no `resumed_after_epoch` point), every
    step once, and every validation and the test over each video once."""
    bucket = s3.make_bucket("vt-reads")
    data = f"{bucket}/data"
    for split in ("train", "val"):
        prepare.upload(synthetic_data / split, f"{data}/{split}")
    videos = {split: read_manifest(synthetic_data / split)["num_videos"] for split in ("train", "val")}
    front = Outage(s3.url)
    runs, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **S3Server.env_for(front.url)}  # the run's processes, Ray's among them
    env.pop("RAY_ADDRESS", None)  # a Ray instance of its own, started with that environment
    cmd = [str(BIN / "vidtempo"), "train", "tin_r18_synthetic", "--data", data, "--storage",
           str(runs), "--mlflow-uri", db, "--name", "outage", "--set", "train.epochs=4",
           "--set", "train.min_steps=null", "--set", "run.batch_per_worker=4",
           "--set", "run.max_failures=2"]  # fmt: skip
    log = tmp_path / "train.log"
    try:
        with open(log, "w") as out:
            job = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 600
            while ckpt.read_progress(str(runs / "outage")).get("epochs_done", 0) < 1:
                assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            front.down()
            time.sleep(20)
            front.up()
            rc = job.wait(timeout=600)
    finally:
        front.close()
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert front.refused > 0 and "retry 1 of 6" in text, (front.refused, text[-4000:])
    run_id = ckpt.read_progress(str(runs / "outage"))["mlflow_run_id"]
    run = tracking.get_run(db, run_id)
    assert run["status"] == "FINISHED" and "resumed after" not in text
    assert not tracking.metric_history(db, run_id, "resumed_after_epoch")  # no restart
    for epoch, n in tracking.metric_history(db, run_id, "val/videos"):
        assert n == videos["val"], (epoch, n)
    validated = sorted(e for e, _ in tracking.metric_history(db, run_id, "val/videos"))
    assert validated == sorted(set(validated)) and validated[-1] == 4, validated  # each once
    assert [k for k, v in run["metrics"].items() if k.startswith("test/videos")] and all(
        v == videos["val"] for k, v in run["metrics"].items() if k.startswith("test/videos"))
    state, _ = ckpt.load_state(str(runs / "outage" / "epoch_0004"), 0)
    assert state["iteration"] == 4 * run["metrics"]["steps_per_epoch"]  # every step once


@pytest.mark.ray
@pytest.mark.slow
def test_the_readmes_cluster_workflow_rehearsed(s3, tmp_path):
    """`make cluster-rehearsal`'s steps (vidtempo.tooling.rehearsal), on the session's S3 server, on a
    cluster that starts as its head alone and grows and shrinks by Ray's own autoscaler."""
    import ray

    from vidtempo.tooling.rehearsal import EPOCHS, SWEEP_EPOCHS, rehearse

    # the session's own Ray instance (and its idle workers, torch loaded) is not the rehearsal's:
    # its memory is what TIN-R50's CPU workers need (the CI run of 764f0d3: Ray's memory monitor
    # killed 8 workers of the documented sweep at 96% of 24 GB); ray_session starts it again
    ray.shutdown()
    lines: list[str] = []
    results = rehearse(tmp_path / "rehearsal", say=lambda *a, **k: lines.append(" ".join(a)),
                       s3=s3)  # fmt: skip
    text = "\n".join(lines)
    nodes = {step: " | ".join(events) for step, events in results["nodes"].items()}
    assert results["workers_at_start"] == {}  # the head alone
    # the documented commands, verbatim in their order (placeholders substituted), printed as
    # they ran: the miniature Something-Something V1 as distributed, converted on this machine
    # and on a decode node from the bucket, the TIN-R50 job and sweep from ImageNet-format
    # weights in the bucket, on nodes that share nothing with the head
    from vidtempo.tooling.rehearsal import RECIPE

    docs = results["docs"]
    for split, videos in (("train", 24), ("val", 12)):
        line = f"{split}: {videos} videos in 1 shards, 174 classes, 0 quarantined"
        assert docs[f"prepare local {split}"] == docs[f"prepare --ray {split}"] == [line], docs
    assert "Adding 1 node(s) of type cpu-decode" in nodes["prepare --ray train"], text
    assert "all checks passed" in docs["doctor"], docs["doctor"]
    assert "the run: the autoscaler will add 2 × trainer when it starts" in docs["doctor"]
    assert [script for script, _ in docs["jobs"]] == ["jobs/tin_sthv1.py", "jobs/tune_tin_sthv1.py"]
    for command in ("datasets/README.md: $ vidtempo prepare rawframes --dataset sthv1",
                    "docs/cluster.md: $ aws s3 sync ", "docs/cluster.md: $ ray up cluster.yaml",
                    "docs/cluster.md: $ ray job submit --address http://127.0.0.1:",
                    "docs/cluster.md: $ vidtempo zoo compare --mlflow-uri http://127.0.0.1:"):
        assert command in text, text  # fmt: skip
    tracked = results["tracked"]
    job, final = tracked[RECIPE], tracked["sthv1-sweep-final"]
    assert job["status"] == final["status"] == "FINISHED", tracked
    assert job["params"]["run.precision"] == "fp32" and job["params"]["model.arch"] == "tin_r50"
    scores = results["test_top1"]  # the test protocol's top-1 of each (test/top1:1x1)
    assert set(scores) == {RECIPE, "sthv1-sweep-final"}, scores
    assert all(key == "test/top1:1x1" and 0 <= v <= 100 for key, v in scores.values()), scores
    assert job["tags"]["vidtempo.source"] == "submit"
    trials = [name for name in tracked if name.startswith("sthv1-sweep-") and name != "sthv1-sweep-final"]
    assert len(trials) == 2, sorted(tracked)
    assert RECIPE in docs["zoo_compare"], docs["zoo_compare"]
    # prepare --ray --decode-on decode: the conversion asked for a decode node, and got it
    assert results["prepare"] == [
        "train: 48 videos in 3 shards, 12 classes, 0 quarantined",
        "val: 24 videos in 2 shards, 12 classes, 0 quarantined"], text  # fmt: skip
    assert "Adding 1 node(s) of type cpu-decode" in nodes["prepare"], text
    # the negative control: a task on a node the autoscaler launched cannot read a file that the
    # head's driver reads; the node has a HOME of its own and none of the head's variables
    iso = results["isolation"]
    assert iso["driver_read"] == "the head's own file\n"
    if os.geteuid() == 0:  # CI and the project's machines: a mount namespace per node
        assert iso["why_shared"] is None, iso
        assert iso["read"].startswith("FileNotFoundError"), iso
        assert not iso["home"].startswith(str(tmp_path)) and iso["head_env"] == [], iso
    waited = "\n".join(results["prepare_waited"])
    assert "waiting for the autoscaler: 1 × cpu-decode for the conversion's tasks" in waited, text
    # doctor on the cold cluster: what the run will have launched, not a failure
    assert "all checks passed" in results["doctor"], results["doctor"]
    assert "the run: the autoscaler will add 1 × trainer when it starts" in results["doctor"]
    assert results["anonymous_job"] in (401, 403)  # the Jobs API refuses a job without the token
    # the job: a trainer node added for it, lost mid-run, replaced; the run resumed from its
    # checkpoint in the bucket
    assert any("waiting for the autoscaler: 1 × trainer for 2 workers" in ln
               for ln in results["waited"]), results["job_log"][-3000:]  # fmt: skip
    assert nodes["train"].count("Adding 1 node(s) of type trainer") >= 2, text
    assert "of type trainer (lost contact with raylet)" in nodes["train"], text
    assert 1 <= results["removed_after"] < EPOCHS, text
    assert results["resumed"] and results["status"] == "FINISHED", results["job_log"][-3000:]
    assert results["epochs"] == list(range(1, EPOCHS + 1))
    assert results["iterations"][0] == results["iterations"][1]  # no step lost or repeated
    # the lineage `vidtempo runtime-env` recorded at submit time (the job's copy has no .git)
    from vidtempo import lineage

    tags, params = results["tags"], results["params"]
    assert tags["mlflow.source.git.commit"] == lineage.source()["commit"] != "unknown"
    assert tags["vidtempo.source"] == "submit" and tags["vidtempo.ray_job_id"].startswith("raysubmit_")
    assert tags["mlflow.source.name"] == "jobs/train.py" and tags["mlflow.source.type"] == "JOB"
    assert params["model.arch"] == "tin_r50" and float(params["lr.effective"]) > 0
    # artifacts: logged through the server into the bucket, and served back
    for name in ("tin_offsets.png", "config.yaml"):
        assert name in results["artifacts"] and name in results["in_bucket"], results
    assert results["served"]["tin_offsets.png"].startswith(b"\x89PNG")
    if results["dirty"] == "true":  # a checkout with uncommitted changes
        assert "uncommitted.diff" in results["in_bucket"]
        assert results["served"]["uncommitted.diff"]
    assert results["evaluate"] is not None and 0 <= results["evaluate"] <= 100
    assert "zoo_compare.md" in results["report"]
    # the sweep: stopped mid-way (`ray job stop`: the driver gone) once ASHA's rung held a
    # result, resumed with --resume to the end, on the trainer nodes the autoscaler added
    sweep = results["sweep"]
    assert sweep["rungs_before"].get("2"), sweep["first_log"][-3000:]
    assert len(sweep["children"]) == 4 and len(sweep["trials"]) == 4, sweep  # each once
    for name, epochs in sweep["children"].items():
        # no epoch of the checkpoint a trial resumed from trained again; one logged whose
        # checkpoint Ray Train had not registered when the job was stopped is trained again, and
        # MLflow holds both (the CI run of 2026-12-02 logged [1, 2, 3, 3])
        done = sweep["before"].get(name, 0)
        assert sorted(set(epochs)) == list(range(1, max(epochs) + 1)), (name, epochs)
        assert all(epochs.count(e) == 1 for e in range(1, done + 1)), (name, epochs, done)
        assert all(epochs.count(e) <= 2 for e in epochs) and max(epochs) >= done, (name, epochs)
    for milestone, trials in sweep["rungs_before"].items():  # ASHA's rungs survived the stop
        assert set(trials) <= set(sweep["rungs_after"][milestone]), sweep
    trials = sweep["trials"]
    assert {t["status"] for t in trials} <= {"done", "stopped"}, trials  # none pending or failed
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped and all(t["epochs"] == 2 for t in stopped), trials  # ASHA stopped some, at its rung
    assert any(t["status"] == "done" and t["epochs"] == SWEEP_EPOCHS for t in trials), trials
    for name, p in sweep["params"].items():
        # the searched lr is the base lr at the reference batch (2 × 8); this batch is 2 × 4
        assert float(p["lr.effective"]) == pytest.approx(float(p["optim.lr"]) * 8 / 16)
        assert p["batch.global"] == "8"
        assert set(json.loads(sweep["diffs"][name])) <= {"optim.lr", "model.shift_div"}
        assert (sweep["statuses"][name] == "KILLED") == (name in sweep["stopped_names"])
    assert sweep["parent"] == "FINISHED" and sweep["parent_tags"]["space.model.shift_div"]
    best_file = tmp_path / "best_config.yaml"
    best_file.write_text(sweep["best_config"])
    best, top = config.load(best_file), max(trials, key=lambda t: t["best"])
    assert best.optim.lr == pytest.approx(top["params"]["optim.lr"])
    assert best.model.shift_div == top["params"]["model.shift_div"]
    assert {"asha_state.pkl", "best_config.yaml", "trials", "vidtempo_sweep.json"} <= set(sweep["files"])
    assert "Adding" in nodes["sweep"] and "trainer" in nodes["sweep"], text
    # nothing of the documented job and sweep keeps a node up (Ray Data's actors once did)
    assert results["workers_after_idle_after_docs"] == {}, text
    # the decode node went once idle, before the job: the head alone again
    assert results["workers_after_idle"] == {} and "cpu-decode (idle)" in nodes["idle"], text
    assert f"epochs {list(range(1, EPOCHS + 1))}" in lines[-1]
