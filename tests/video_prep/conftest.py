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
