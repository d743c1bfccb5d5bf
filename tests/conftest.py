"""Shared fixtures: one embedded Ray for the whole session, the sample media, a pool on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray's usage statistics probe a cloud metadata address on every start: never from a test
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# keep every Ray we start on loopback (Ray otherwise binds the machine's routable address);
# set before ray is imported, and inherited by the CLI subprocesses the tests start
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_local():
    """An embedded Ray shared by every test that runs a pipeline in-process."""
    import ray

    from engine.ray_session import start_embedded

    if not ray.is_initialized():  # a private HOME for Ray's daemons: no cloud metadata probe
        start_embedded(num_cpus=2, object_store_mb=500)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def photos():
    from vl3data.sample_media import real_photos

    return real_photos()


@pytest.fixture(scope="session")
def demo_pool_master(tmp_path_factory) -> tuple[Path, dict]:
    """The demo's raw pool, written once (encoding its photos takes about a second): tests get
    a copy of it (``demo_pool``), never this folder."""
    from vl3data.sample_media import write_demo_pool

    root = tmp_path_factory.mktemp("demo_pool_master") / "pool"
    return root, write_demo_pool(root)


@pytest.fixture()
def demo_pool(tmp_path: Path, demo_pool_master) -> tuple[Path, dict]:
    """The demo's raw pool in a tmp folder (a copy of the session's: a test may change it), and
    what should happen to each file."""
    master, expected = demo_pool_master
    root = tmp_path / "pool"
    shutil.copytree(master, root)
    return root, dict(expected)


@pytest.fixture(scope="session")
def job_sets(tmp_path_factory, photos, ray_local) -> dict[str, Path]:
    """One shard set of each kind the real jobs write (image, video, streaming, grounding, text,
    mixed), made once: tests/manifests/test_readers.py and tests/export read them."""
    from tests.manifests.test_readers import build_sets

    return build_sets(tmp_path_factory.mktemp("job_sets"), photos)


SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "aesthetic"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Tiny random models of the real classes (open_clip, HF CLIP, BLIP-2), written once."""
    from vl3data.tiny_models import write_tiny_blip2, write_tiny_hf_clip, write_tiny_open_clip

    root = tmp_path_factory.mktemp("models")
    write_tiny_open_clip(root / "open_clip")
    write_tiny_hf_clip(root / "hf_clip")
    write_tiny_blip2(root / "blip2")
    return root


@pytest.fixture(scope="session")
def aesthetic_weights(tmp_path_factory) -> Path:
    """The real LAION improved predictor when shared/ is beside the checkout; otherwise a
    randomly initialised head of the same format (a user's clone has no shared/)."""
    real = SHARED_WEIGHTS / "sac+logos+ava1-l14-linearMSE.pth"
    if real.is_file():
        return real
    import torch

    from curation.stages.aesthetic import load_aesthetic_head  # noqa: F401 (format check below)

    sizes = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    state = {}
    for idx, (i, o) in zip((0, 2, 4, 6, 7), sizes, strict=True):
        state[f"layers.{idx}.weight"] = torch.randn(o, i) * 0.02
        state[f"layers.{idx}.bias"] = torch.zeros(o)
    path = tmp_path_factory.mktemp("weights") / "random_mlp_head.pth"
    torch.save(state, path)
    return path
