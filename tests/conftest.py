from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that needs one (ray.init costs 7-10 s)."""
    import ray

    if not ray.is_initialized():
        # address="local": a new instance even when /tmp/ray/ray_current_cluster names another
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic temporal dataset, converted once per test session."""
    from vidtempo.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(out, {"train": 3, "val": 2}, frames=24, size=48, workers=2, progress=False)
    return out
