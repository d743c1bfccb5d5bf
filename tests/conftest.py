"""Shared fixtures: one embedded Ray for the whole session, the sample media, a pool on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# keep every Ray we start on loopback (Ray otherwise binds the machine's routable address);
# set before ray is imported, and inherited by the CLI subprocesses the tests start
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_local():
    """An embedded Ray shared by every test that runs a pipeline in-process."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=500 * 2**20,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def photos():
    from vl3data.sample_media import real_photos

    return real_photos()


@pytest.fixture()
def demo_pool(tmp_path: Path) -> tuple[Path, dict]:
    """The demo's raw pool in a tmp folder, and what should happen to each file."""
    from vl3data.sample_media import write_demo_pool

    root = tmp_path / "pool"
    expected = write_demo_pool(root)
    return root, expected
