"""Scale-out: cluster.yaml checked offline with Ray's own validator; training on a simulated
multi-node cluster (ray.cluster_utils.Cluster: a head and three 1-CPU nodes, each its own raylet
on this machine, no autoscaler) with shared storage (file://) and an `mlflow server`; the
fail-fast rules for local storage / SQLite tracking and for runs the nodes cannot hold;
`vidtempo doctor`; `vidtempo zoo compare`; and the MLflow UI in headless Chromium."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vidtempo import config, lineage, tracking
from vidtempo.config import ConfigError
from vidtempo.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


# ---- cluster.yaml ---------------------------------------------------------------------------


def test_cluster_yaml_is_valid_and_installs_the_project_and_the_op():
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "cluster.yaml").read_text()
    raw = yaml.safe_load(text)
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu8"]["min_workerz"] = 0
    with pytest.raises(Exception, match="min_workerz"):  # the validator is really looking
        validate_config(prepare_config(broken))

    nodes = cfg["available_node_types"]
    head, gpu = nodes[cfg["head_node_type"]], nodes["gpu8"]
    assert gpu["node_config"]["InstanceType"] in ("p4d.24xlarge", "p5.48xlarge")  # 8 GPUs
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1  # autoscaling
    assert head["node_config"]["InstanceType"].startswith("m5")  # a CPU head
    # CPU-only decode nodes, autoscaled from 0, carrying the resource --decode-on asks for
    decode = nodes["cpu-decode"]
    assert decode["min_workers"] == 0 and decode["max_workers"] >= 1
    assert decode["resources"]["decode"] > 0 and "GPU" not in decode["resources"]
    assert decode["node_config"]["InstanceType"].startswith("c")  # compute-optimised
    assert cfg["provider"]["type"] == "aws"
    # every node gets the checkout and installs it with the project's pins ...
    assert cfg["file_mounts"] == {"/home/ubuntu/vidtempo": ".",
                                  "/home/ubuntu/.vidtempo/secrets": "~/.vidtempo/secrets"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    for cmds in (cfg["head_setup_commands"], cfg["worker_setup_commands"]):  # merged with setup_commands
        joined = "\n".join(cmds)
        for pin in ("torch==2.14.1", "torchvision==0.29.1"):
            assert pin in joined and pin in pyproject
        assert re.search(r"cd ~/vidtempo && .*pip install .*--no-build-isolation -e \.", joined)
    # ... and builds the op: its CUDA kernel on the GPU nodes, checked before Ray starts there
    workers = "\n".join(cfg["worker_setup_commands"])
    assert "VIDTEMPO_BUILD_CUDA=1" in workers and "CUDA_HOME=" in workers
    assert "native.has_cuda_kernel()" in workers
    assert "native.load() is not None" in "\n".join(cfg["head_setup_commands"])
    # shared storage and the tracking server, given to every job driver on the head
    start = "\n".join(cfg["head_start_ray_commands"])
    assert "mlflow server" in start and "--host 0.0.0.0" in start
    env = next(c for c in cfg["head_setup_commands"] if ">> ~/vidtempo.env" in c)
    assert "VIDTEMPO_STORAGE=%s" in env and "s3://YOUR-BUCKET/" in env
    assert "VIDTEMPO_MLFLOW_URI=http://%s:5000" in env
    assert "source ~/vidtempo.env" in start
    assert "idle_worker_killing_time_threshold_ms" in start
    assert "$RAY_HEAD_IP:6379" in "\n".join(cfg["worker_start_ray_commands"])
    # secure by default: token authentication on every node, the tracking server behind a
    # login, the secrets from `vidtempo cluster-secrets` (none in this file)
    assert "RAY_AUTH_MODE=disabled" not in text and "disabled" not in text
    setup = "\n".join(cfg["setup_commands"])
    assert "test -s ~/.vidtempo/secrets/ray_auth_token" in setup
    assert "source ~/.vidtempo/secrets/cluster.env" in setup
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        starts = [c for c in cmds if "ray start" in c]
        assert starts and all(c.startswith("source ~/vidtempo.env;") for c in starts), starts
    server = next(c for c in cfg["head_start_ray_commands"] if "nohup" in c)
    assert "--app-name basic-auth" in server and "MLFLOW_AUTH_CONFIG_PATH=" in server
    assert not re.search(r"(PASSWORD|TOKEN)=[^$\s]", text)  # only references, no values
    # placeholders only where the user's account is needed, each explained at the top
    placeholders = set(re.findall(r"YOUR-[A-Z0-9-]+", text))
    assert placeholders == {"YOUR-BUCKET", "YOUR-ACCOUNT-ID", "YOUR-CUDA13-AMI"}
    header = text.split("cluster_name:")[0]
    assert all(f"#   {p}" in header for p in placeholders)


# ---- a simulated multi-node cluster -----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(mlflow_server):
    """A head with no CPUs (driver, Train controller) and three 1-CPU nodes, started after the
    tracking server so that every node has its login in the environment, as on a cluster."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the suite's single-node instance; conftest restarts it later
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"idle_worker_killing_time_threshold_ms": 60_000}})  # fmt: skip
    for _ in range(3):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()
    current = Path("/tmp/ray/ray_current_cluster")  # written by Cluster for ray.init("auto")
    if current.exists() and current.read_text().strip() == c.address:
        current.unlink()


def cluster_cfg(shared, server, *extra):
    return config.load("tin_r18_synthetic", [
        "run.batch_per_worker=4", "run.placement_strategy=STRICT_SPREAD", "train.min_steps=null",
        f"run.storage_path=file://{shared / 'runs'}", f"run.mlflow_uri={server}",
        "run.experiment=cluster", *extra])  # fmt: skip


def _alive() -> int:
    """Alive nodes (one fewer after the node-loss test)."""
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"])


def _head_id():
    import ray

    return next(n["NodeID"] for n in ray.nodes()
                if n["Alive"] and "node:__internal_head__" in n["Resources"])  # fmt: skip


@pytest.fixture(scope="module")
def spread_run(cluster, synthetic_data, mlflow_server, tmp_path_factory):
    """A 2-worker run of the demo recipe, one worker per node (STRICT_SPREAD)."""
    from vidtempo.train.run import fit

    shared = tmp_path_factory.mktemp("shared")
    cfg = cluster_cfg(shared, mlflow_server, "train.epochs=2")
    return cfg, fit(cfg, synthetic_data, name="spread")


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_on_two_nodes(spread_run, mlflow_server):
    cfg, res = spread_run
    run = tracking.get_run(mlflow_server, res["mlflow_run_id"])
    assert run["status"] == "FINISHED"
    nodes = json.loads(run["tags"]["vidtempo.worker_nodes"])
    assert len(nodes) == 2 and len(set(nodes)) == 2 and _head_id() not in nodes
    assert "test/top1:2x1" in run["metrics"] and run["metrics"]["epoch"] == 2
    assert res["run_dir"].startswith("file://")
    assert ckpt.read_progress(res["run_dir"])["epochs_done"] == 2


@pytest.mark.ray
def test_local_storage_or_sqlite_on_many_nodes_fails_at_once(cluster, synthetic_data, tmp_path):
    from vidtempo.train.run import fit
    from vidtempo.tune.sweep import Plan, sweep

    cfg = config.load("tin_r18_synthetic", [f"run.storage_path={tmp_path / 'runs'}",
                                            f"run.mlflow_uri=sqlite:///{tmp_path / 'm.db'}"])  # fmt: skip
    t = time.monotonic()
    with pytest.raises(ConfigError) as err:
        fit(cfg, synthetic_data, name="local")
    message = str(err.value)
    assert f"spans {_alive()} nodes" in message
    assert f"checkpoints would go to {tmp_path / 'runs'}" in message and "s3://" in message
    assert "MLflow would write to sqlite:" in message and "mlflow server" in message
    with pytest.raises(ConfigError, match=f"spans {_alive()} nodes"):
        sweep(cfg, synthetic_data, Plan(space={"optim.lr": "choice:0.01,0.02"}, samples=2))
    assert time.monotonic() - t < 30
    assert not list(tmp_path.iterdir())  # nothing written: no run folder, no database


@pytest.mark.ray
def test_local_imagenet_weights_on_many_nodes_fail_before_any_worker_starts(
        cluster, synthetic_data, mlflow_server, tmp_path):  # fmt: skip
    """Every worker reads the ImageNet weights itself: a file of the driver's node is refused on
    a run that spans nodes (storage and tracking are shared here, so only the weights fail);
    the same file as a file:// URI every node reaches passes the check."""
    import torch

    from vidtempo import preflight
    from vidtempo.train.run import fit, imagenet_weights

    weights = tmp_path / "resnet50.pth"
    torch.save({}, weights)
    cfg = cluster_cfg(tmp_path, mlflow_server, "model.pretrained=imagenet")
    with pytest.raises(ConfigError) as err:
        fit(cfg, synthetic_data, name="local-weights", imagenet=str(weights))
    message = str(err.value)
    assert f"spans {_alive()} nodes" in message
    assert f"the ImageNet weights {weights} are a file on this node only" in message
    assert "s3://BUCKET/resnet50.pth" in message and "torchvision://resnet50" in message
    assert "checkpoints would go" not in message and "MLflow would write" not in message
    assert not (tmp_path / "runs").exists()  # nothing written
    shared = imagenet_weights(cfg, f"file://{weights}")
    assert shared == f"file://{weights}"
    preflight.check_cluster(cfg, f"file://{tmp_path}", mlflow_server, 2, shared)  # no error


@pytest.mark.ray
def test_a_cluster_without_an_autoscaler_is_checked_as_it_is(cluster, mlflow_server, tmp_path):
    """No autoscaler (nodes started by hand): only the alive nodes count — a run they cannot
    hold, or a decode resource none carries, fails at once (Ray would wait forever)."""
    from vidtempo import capacity, preflight
    from vidtempo.capacity import ResourceError

    assert not capacity.read().autoscaling
    cfg = cluster_cfg(tmp_path, mlflow_server)
    assert preflight.check_resources(cfg)[1] == {}  # fits: nothing to launch
    with pytest.raises(ResourceError, match=r"asks for 8 workers .* in total \(no autoscaler\): "
                                            r"room for \d workers\."):  # fmt: skip
        preflight.check_resources(config.override(cfg, {"run.num_workers": 8}))
    with pytest.raises(ResourceError, match="no alive node carries the Ray resource 'gpu-decode' "
                                            ".* and the cluster has no autoscaler to add one"):  # fmt: skip
        preflight.check_resources(config.override(cfg, {"run.decode_resource": "gpu-decode"}))


@pytest.mark.ray
def test_doctor_checks_every_node(cluster, mlflow_server, tmp_path):
    from vidtempo import doctor

    cfg = cluster_cfg(tmp_path, mlflow_server)
    report = doctor.check(cfg, ROOT)
    assert report["ok"], report["problems"]
    # token mode on every node, the dashboard asks for the token, the server for a login
    assert report["security"] == "checked"
    assert all(n["ray_auth"] == "token" for n in report["nodes"])
    assert len(report["nodes"]) == _alive() >= 3 and sum(n["head"] for n in report["nodes"]) == 1
    for n in report["nodes"]:
        assert n["vidtempo"] == "ok" and n["op"] and n["storage"] == "ok" and n["tracking"] == "ok"
    wd = report["working_dir"]
    assert 0 < wd["bytes"] < wd["limit"]
    uploaded = {name for name, _, _ in wd["entries"]}
    assert not uploaded & {".venv", "runs", "mlflow"}  # .gitignore is honoured, as Ray does
    text = doctor.render(report)
    assert "all checks passed" in text and "| worker |" in text

    bad = doctor.check(config.override(cfg, {"run.mlflow_uri": f"sqlite:///{tmp_path}/x.db",
                                             "run.storage_path": str(tmp_path / "local")}))  # fmt: skip
    assert not bad["ok"]
    assert any("MLflow would write to sqlite" in p for p in bad["problems"])
    assert any("checkpoints would go to" in p for p in bad["problems"])
    down = doctor.check(config.override(cfg, {"run.mlflow_uri": "http://127.0.0.1:9"}))
    assert sum("tracking http://127.0.0.1:9" in p for p in down["problems"]) == _alive()


def test_an_address_where_no_head_listens_fails_fast_with_what_to_do():
    from vidtempo.machine import free_port
    from vidtempo.ray_session import ClusterUnreachable, check_gcs_answers

    address = f"127.0.0.1:{free_port()}"
    t = time.monotonic()
    with pytest.raises(ClusterUnreachable, match=f"no Ray head answers at {address}.*ray start --head"):
        check_gcs_answers(address, timeout=1)
    assert time.monotonic() - t < 10
    check_gcs_answers("auto")  # Ray's own lookups are left to Ray
    check_gcs_answers("ray://somewhere:10001")


@pytest.mark.ray
@pytest.mark.slow
def test_doctor_reports_an_open_cluster(tmp_path):
    """A head started with RAY_AUTH_MODE=disabled and a tracking server without a login:
    `vidtempo doctor` names both (and the dashboard that takes jobs from anyone) and fails."""
    from conftest import RayHead, start_mlflow_server, stop_process_group

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = RayHead(env, num_cpus=1)
    server, url = start_mlflow_server(tmp_path, login=None)
    try:
        done = subprocess.run(
            [str(bin_dir / "vidtempo"), "doctor", "--address", head.gcs,
             "tin_r18_synthetic", "--workers", "1", "--mlflow-uri", url,
             "--storage", f"file://{tmp_path / 'runs'}", "--working-dir", str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    finally:
        stop_process_group(server)
        head.stop()
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Ray runs without token authentication (RAY_AUTH_MODE=disabled)" in out, out
    assert "answers the Jobs API without a token" in out, out
    assert f"the tracking server {url} answers requests without a login" in out, out


# ---- the zoo report and the MLflow UI ------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_zoo_compare_prints_and_logs_the_report(spread_run, mlflow_server, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from vidtempo.cli import main as cli

    assert cli(["zoo", "compare", "--experiment", "cluster", "--mlflow-uri", mlflow_server,
                "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "## tin_r50_1x1x8_40e_sthv1_rgb" in out
    zoo = config.load("tin_r50_1x1x8_40e_sthv1_rgb").reference
    assert f"top-1 {zoo.results[0].top1:.2f} / top-5 {zoo.results[0].top5:.2f}" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("| spread |"))
    # the demo recipe is not the zoo's: marked, with why, and no difference computed
    assert "**no**" in line and "dataset synthetic (zoo: sthv1)" in line and "2x1" in line
    assert "| – |" in line  # no Δ
    rows = json.loads((tmp_path / "cluster" / "zoo_compare.json").read_text())
    (spread,) = [r for r in rows if r["run"] == "spread"]
    assert spread["diff_top1"] is None and not spread["comparable"]
    assert (tmp_path / "cluster" / "zoo_compare.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cluster")
    (report,) = client.search_runs([exp.experiment_id], "tags.`vidtempo.kind` = 'zoo-compare'")
    logged = {a.path for a in client.list_artifacts(report.info.run_id)}
    # (and the uncommitted diff when this checkout has one: lineage, tested in test_tracking)
    assert logged - {lineage.DIFF_ARTIFACT} == {"zoo_compare.md", "zoo_compare.png",
                                                 "zoo_compare.json"}  # fmt: skip


@pytest.mark.browser
@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_ui_shows_the_runs_and_the_zoo_tags(spread_run, mlflow_server, mlflow_server_db,
                                                  page_text, capsys):  # fmt: skip
    """The runs the cluster logged, in the MLflow UI. The tracking server asks for a login, which
    headless Chromium cannot type: the pages come from `vidtempo ui` on the server's own SQLite
    store, bound to 127.0.0.1 (what an admin on the head would open)."""
    from mlflow.tracking import MlflowClient

    from vidtempo.cli import main as cli
    from vidtempo.machine import free_port

    _, res = spread_run
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cluster").experiment_id
    # `vidtempo ui` against a tracking server starts nothing: it checks it and prints the page
    assert cli(["ui", "--mlflow-uri", mlflow_server, "--experiment", "cluster"]) == 0
    url = capsys.readouterr().out.split("its runs: ")[1].strip()
    assert url == f"{mlflow_server}/#/experiments/{exp}/runs"
    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "vidtempo"), "ui", "--mlflow-uri",
                           mlflow_server_db, "--experiment", "cluster", "--port", str(port)],
                          stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        local = next(line for line in ui.stdout if line.startswith("runs: ")).split()[1]
        assert local == f"http://127.0.0.1:{port}/#/experiments/{exp}/runs"
        _check_ui_pages(page_text, local, res["mlflow_run_id"])
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def _check_ui_pages(page_text, runs_url: str, run_id: str) -> None:
    runs_page = page_text(runs_url)
    assert "spread" in runs_page, runs_page[:2000]
    run_page = page_text(f"{runs_url}/{run_id}")
    zoo = config.load("tin_r50_1x1x8_40e_sthv1_rgb").reference.results[0]
    assert "zoo.top1" in run_page and str(zoo.top1) in run_page, run_page[:3000]
    assert "zoo.config" in run_page and "tin_r50_1x1x8_40e_sthv1_rgb" in run_page
    assert "test/top1:2x1" in run_page


def test_zoo_compare_marks_what_is_not_comparable(tmp_path):
    """Runs logged as training logs them: one of the zoo recipe under the zoo's protocol
    (comparable, with a difference), one tested under another protocol, one with other frames."""
    from vidtempo.report.zoo_compare import collect, markdown

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    zoo = config.load("tin_r50_1x1x8_40e_sthv1_rgb", ["run.experiment=z"])
    for name, cfg, metrics in [
        ("same", zoo, {"test/top1@1x1": 43.0, "test/top5@1x1": 72.5, "epoch": 40}),
        ("views", zoo, {"test/top1@2x3": 46.0, "test/top5@2x3": 75.0, "epoch": 40}),
        ("frames", config.override(zoo, {"model.num_segments": 16,
                                         "data.train.sampler.num_clips": 16}),
         {"test/top1@1x1": 45.0, "test/top5@1x1": 74.0, "epoch": 40}),
        ("gpu-bf16", config.override(zoo, {"run.use_gpu": True, "run.precision": "bf16"}),
         {"test/top1@1x1": 44.0, "test/top5@1x1": 73.0, "epoch": 40}),
    ]:  # fmt: skip
        run_id = tracking.start_run(cfg, name, uri)
        tracking.log_metrics(uri, run_id, metrics, step=40)
        tracking.end_run(uri, run_id)
    rows = {r["run"]: r for r in collect(uri, "z")}
    same = rows["same"]
    assert same["comparable"] and same["diff_top1"] == pytest.approx(43.0 - 44.25)
    assert same["zoo_top1"] == 44.25 and same["reference_top1"] == 44.04
    assert same["epochs"] == 40 and same["zoo_epochs"] == 40 and same["zoo_gpus"] == "8x4"
    assert not rows["views"]["comparable"] and rows["views"]["diff_top1"] is None
    assert "tested 2x3 (zoo: 1x1)" in rows["views"]["not_comparable"]
    assert "frames 1x16x1 (zoo: 1x8x1)" in rows["frames"]["not_comparable"]
    text = markdown(list(rows.values()), "z")
    assert "| same | 43.00 | 72.50 | 1x1 | 44.25 | 73.94 | 44.04 | 72.72 | -1.25 |" in text
    # the precision: a zoo recipe's is fp32, recorded as a parameter and shown with the GPUs
    assert zoo.run.precision == "fp32" and tracking.get_run(uri, same["run_id"])["params"][
        "run.precision"] == "fp32"  # fmt: skip
    assert "| 2 GPU (8x4) | bf16 |" in text and "| 2 CPU workers (8x4) | fp32 |" in text
