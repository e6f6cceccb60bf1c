"""Tracking: the lineage every run records (commit, diff, command, Ray job) and `vidtempo ui`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidtempo import config, lineage, tracking
from vidtempo.config import PROJECT_DIR


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


def test_source_of_a_clean_and_a_dirty_checkout(repo, monkeypatch):
    for var in (lineage.ENV_COMMIT, lineage.ENV_DIRTY, lineage.ENV_DIFF):
        monkeypatch.delenv(var, raising=False)
    clean = lineage.source(repo)
    assert clean == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False, "diff": "",
                     "from": "checkout"}  # fmt: skip
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    dirty = lineage.source(repo)
    assert dirty["dirty"] and "-x = 1" in dirty["diff"] and "+x = 2" in dirty["diff"]
    assert "# untracked: new.py" in dirty["diff"]
    # what `vidtempo runtime-env` hands a `ray job submit` driver, which has no .git
    env = lineage.runtime_env(repo)["env_vars"]
    assert env[lineage.ENV_COMMIT] == clean["commit"] and env[lineage.ENV_DIRTY] == "true"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    copy = repo.parent / "copy"
    copy.mkdir()
    assert lineage.source(copy) == {**dirty, "from": "submit"}
    with pytest.raises(RuntimeError, match="not a git checkout"):
        lineage.runtime_env(copy)


def test_entry_point_and_ray_job_id(monkeypatch):
    assert lineage.entry_point(["/x/.venv/bin/vidtempo", "train", "cfg", "--data", "d"]) == "vidtempo train"
    assert lineage.entry_point(["/x/.venv/bin/vidtempo", "bench", "temporal"]) == "vidtempo bench temporal"
    assert lineage.entry_point([str(PROJECT_DIR / "jobs" / "tin_sthv1.py")]) == "jobs/tin_sthv1.py"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"metadata": {"job_submission_id": "raysubmit_abc"}}))
    assert lineage.ray_submission_id() == "raysubmit_abc"


def test_a_run_records_its_commit_command_description_and_diff(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/vidtempo", "train", "tin_r18_synthetic",
                                      "--set", "run.seed=3"])  # fmt: skip
    cfg = config.load("tin_r18_synthetic", ["run.seed=3", "run.experiment=t"])
    run = tracking.get_run(uri, tracking.start_run(cfg, "r", uri))
    tags = run["tags"]
    src = lineage.source()
    assert tags["mlflow.source.git.commit"] == src["commit"]
    if (PROJECT_DIR / ".git").exists():  # the suite runs in a checkout (CI: a clean clone)
        assert tags["mlflow.source.git.commit"] == _git(PROJECT_DIR, "rev-parse", "HEAD")
    assert tags["mlflow.source.name"] == "vidtempo train"
    assert tags["vidtempo.command"] == "vidtempo train tin_r18_synthetic --set run.seed=3"
    assert tags["mlflow.user"] and tags["vidtempo.dirty"] == str(src["dirty"]).lower()
    note = tags["mlflow.note.content"]
    assert "run.seed: 0 → 3" in note and "tin_r50_1x1x8_40e_sthv1_rgb" in note
    from mlflow.tracking import MlflowClient

    names = [a.path for a in MlflowClient(uri).list_artifacts(_only_run(uri))]
    assert (lineage.DIFF_ARTIFACT in names) == bool(src["dirty"]), names


def test_a_dirty_tree_adds_the_diff_artifact(tmp_path, repo, monkeypatch):
    (repo / "a.py").write_text("x = 3\n")
    monkeypatch.setattr(lineage, "PROJECT_DIR", repo)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = tracking.start_run(config.load("tin_r18_synthetic", ["run.experiment=t"]), "d", uri)
    assert tracking.get_run(uri, run_id)["tags"]["vidtempo.dirty"] == "true"
    assert "+x = 3" in tracking.load_text(uri, run_id, lineage.DIFF_ARTIFACT)


def _only_run(uri: str) -> str:
    (run,) = tracking.runs(uri, "t")
    return run["run_id"]


def test_runs_page_url_and_missing_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = tracking.start_run(config.load("tin_r18_synthetic", ["run.experiment=t"]), "u", uri)
    exp = tracking.experiment_id(uri, "t")
    assert tracking.runs_page("http://127.0.0.1:5000", uri, "t") == \
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs"  # fmt: skip
    assert tracking.runs_page("http://h:1/", uri) == f"http://h:1/#/experiments/{exp}/runs"
    with pytest.raises(ValueError, match="no experiment 'nope'.*it has: .*t"):
        tracking.runs_page("http://h:1", uri, "nope")
    assert run_id


@pytest.mark.browser
@pytest.mark.slow
def test_vidtempo_ui_serves_the_runs_page_it_prints(tmp_path, page_text):
    """`vidtempo ui` starts the MLflow UI on a SQLite store, bound to 127.0.0.1, and prints the
    runs page of the experiment; headless Chromium renders that page with the run on it."""
    import signal

    from vidtempo.machine import free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.start_run(config.load("tin_r18_synthetic", ["run.experiment=ui"]), "shown-run", uri)
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "vidtempo"), "ui", "--mlflow-uri",
                             uri, "--experiment", "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("runs: "):
                break
        url = lines[-1].removeprefix("runs: ").strip()
        assert url == f"http://127.0.0.1:{port}/#/experiments/{tracking.experiment_id(uri, 'ui')}/runs", lines
        assert "shown-run" in page_text(url)
    finally:
        proc.send_signal(signal.SIGTERM)  # `vidtempo ui` stops its mlflow ui on the way out
        proc.wait(timeout=30)
    import urllib.request

    with pytest.raises(OSError):  # nothing left listening
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.slow
def test_a_tracking_server_with_a_login_refuses_anonymous_runs_and_takes_vidtempo_s(
        mlflow_server, monkeypatch):  # fmt: skip
    """MLflow's basic-auth app, as cluster.yaml runs it: an anonymous run creation gets 401;
    vidtempo, with MLFLOW_TRACKING_USERNAME / _PASSWORD in its environment, logs its run; no
    password or token ends up in the run's params or tags."""
    import urllib.error
    import urllib.request

    from conftest import MLFLOW_LOGIN

    exp_id = tracking.experiment_id(mlflow_server, "login")  # authenticated (the env's login)
    anonymous = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/create",
        data=json.dumps({"experiment_id": exp_id}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    cfg = config.load("tin_r18_synthetic", ["run.experiment=login",
                                            f"run.mlflow_uri={mlflow_server}"])  # fmt: skip
    run_id = tracking.start_run(cfg, "with-login", mlflow_server)
    tracking.log_metrics(mlflow_server, run_id, {"loss": 1.0}, step=1)
    run = tracking.get_run(mlflow_server, run_id)
    assert run["metrics"]["loss"] == 1.0
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    token_file = _get_default_token_path()
    token = token_file.read_text().strip() if token_file.exists() else None
    logged = " ".join([*run["params"].values(), *run["tags"].values()])
    for secret in filter(None, [MLFLOW_LOGIN[1], token]):
        assert secret not in logged
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(Exception, match="401|Unauthorized|credentials"):
        tracking.start_run(cfg, "wrong-login", mlflow_server)


def test_no_secret_in_the_repository():
    """Nothing the project tracks holds a Ray token or a password: cluster.yaml and the docs
    only refer to the files `vidtempo cluster-secrets` makes."""
    import re

    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    files = subprocess.run(["git", "-C", str(PROJECT_DIR), "ls-files"], capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    token_file = _get_default_token_path()
    token = token_file.read_text().strip() if token_file.exists() else None
    for name in files:
        path = PROJECT_DIR / name
        if not path.is_file() or path.suffix in (".json", ".parquet"):
            continue
        text = path.read_text(errors="ignore")
        if token:
            assert token not in text, name
        assert not re.search(r"MLFLOW_TRACKING_PASSWORD=[A-Za-z0-9_-]{8,}", text), name
        assert not re.search(r"RAY_AUTH_TOKEN=[A-Za-z0-9_-]{8,}", text), name


def test_cluster_secrets_are_private_and_kept(tmp_path):
    from vidtempo import cluster

    folder = tmp_path / "secrets"
    assert set(cluster.create(folder).values()) == {"created"}
    assert (folder.stat().st_mode & 0o777) == 0o700
    for f in (cluster.TOKEN_FILE, cluster.ENV_FILE):
        assert ((folder / f).stat().st_mode & 0o777) == 0o600
    env = (folder / cluster.ENV_FILE).read_text()
    assert "export RAY_AUTH_MODE=token" in env and "MLFLOW_TRACKING_PASSWORD=" in env
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=" in env
    before = {f: (folder / f).read_text() for f in (cluster.TOKEN_FILE, cluster.ENV_FILE)}
    assert set(cluster.create(folder).values()) == {"kept"}
    assert before == {f: (folder / f).read_text() for f in before}


def test_a_login_typed_into_a_uri_is_not_logged():
    assert lineage.redact("--mlflow-uri http://bob:hunter2@head:5000/x") == "--mlflow-uri http://***@head:5000/x"
    cfg = config.load("tin_r18_synthetic", ["run.mlflow_uri=http://bob:hunter2@head:5000"])
    assert tracking.run_params(cfg)["run.mlflow_uri"] == "http://***@head:5000"
