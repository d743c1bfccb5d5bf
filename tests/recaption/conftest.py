"""Fixtures for the recaption tests: the tiny InternVL, written once, and an engine on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaption.engines.base import EngineConfig


@pytest.fixture(scope="session")
def tiny_internvl(tmp_path_factory) -> Path:
    """A random ``InternVLForConditionalGeneration`` with its processor (vl3data.tiny_models)."""
    from vl3data.tiny_models import write_tiny_internvl

    return write_tiny_internvl(tmp_path_factory.mktemp("models") / "internvl")


@pytest.fixture(scope="session")
def hf_engine(tiny_internvl):
    """One loaded TransformersEngine for the session: images up to 112 pixels (2x2 tiles of 56
    plus a thumbnail), chunks of 3 so a batch of photos spans several generate calls."""
    from recaption.engines.hf import TransformersEngine

    engine = TransformersEngine(
        EngineConfig(model=str(tiny_internvl), max_image_side=112, batch_size=3)
    )
    engine.setup()
    return engine
