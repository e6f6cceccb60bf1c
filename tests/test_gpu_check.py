"""`make gpu-check` (vidtempo.tooling.gpu_check) on a machine without a GPU: the CPU half, with the
imports the GPU machine lacks (Ray, MLflow, decord, PyAV) made to fail."""

from __future__ import annotations

import os

import pytest
import torch

BLOCKER = '''
import importlib.abc
import sys

BLOCKED = {"ray", "mlflow", "decord", "av"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name}: not on the GPU machine (blocked by the test)")
        return None


sys.meta_path.insert(0, Block())
'''


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU machine runs the whole check")
@pytest.mark.skipif(bool(os.environ.get("VIDTEMPO_GPU_CHECK")), reason="inside a gpu check")
def test_gpu_check_runs_its_cpu_half_without_ray_mlflow_decord_or_pyav(tmp_path):
    """`python -m vidtempo.tooling.gpu_check` as on the GPU machine — the machine's own torch, no Ray,
    MLflow, decord or PyAV (their imports fail here) — says there is no GPU, builds the CPU
    kernel, runs the op's CPU tests and the CPU op bench, writes its report and exits 0."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{root / 'platform'}"}
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr  # the block holds
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "vidtempo.tooling.gpu_check", "--out", str(out),
                           "--op-repeats", "2"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no GPU: the CPU half only" in done.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["machine"]["cuda"] is False
    assert report["build"]["ok"] and not report["build"]["cuda_kernel"]
    assert report["tests"]["ok"] and report["tests"]["passed"] >= 25
    assert report["tests"]["failed"] == 0 and report["tests"]["marker"] == "not gpu"
    rows = report["bench_op"]["result"]["rows"]
    assert [r["side"] for r in rows] == [56, 56, 28, 14, 7] and all(r["copy_GBps"] > 0 for r in rows)
    md = (out / "gpu_check.md").read_text()
    assert "no GPU (CPU half only)" in md and "## tin_shift forward + backward" in md
    assert "bench_train" not in report
