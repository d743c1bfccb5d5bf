"""Real and ffmpeg-made sample videos, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory) -> dict:
    """The demo's videos and JSONL annotations (real footage, test patterns, broken files)."""
    from video_prep.sample_videos import write_demo_videos

    return write_demo_videos(tmp_path_factory.mktemp("demo_videos"))


@pytest.fixture(scope="session")
def videos(demo_videos) -> Path:
    return Path(demo_videos["videos"])


@pytest.fixture(scope="session")
def vl3_processor(tmp_path_factory):
    """The tiny VideoLlama3Processor (our chat template renders through it), made once: every
    video test that renders records shares it."""
    from transformers import AutoProcessor

    from vl3data.tiny_models import write_tiny_videollama3_processor

    return AutoProcessor.from_pretrained(
        write_tiny_videollama3_processor(tmp_path_factory.mktemp("vl3proc"))
    )
