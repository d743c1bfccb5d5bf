"""Inputs of the small build (tests/builds/small_build.yaml): a photo pool and pattern videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

SMALL_BUILD = Path(__file__).parent / "small_build.yaml"


def write_small_inputs(root: Path, pool: Path) -> Path:
    """The demo's photo pool (a copy of ``pool``, with its bad files), three short pattern
    videos, one broken file, and dense captions for them."""
    from video_prep.sample_videos import pattern_video

    shutil.copytree(pool, root / "pool")
    videos = root / "videos"
    videos.mkdir(parents=True)
    for name, seconds in (("a", 6), ("b", 8), ("c", 5)):
        pattern_video(videos / f"{name}.mp4", seconds, size="96x72")
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    lines = [
        {
            "video": "a.mp4",
            "segments": [
                {"start": 0, "end": 3, "text": "Colour bars."},
                {"start": 3, "end": 6, "text": "A clock counts."},
            ],
        },
        {"video": "b.mp4", "segments": [{"start": 0, "end": 8, "text": "The pattern moves."}]},
        {"video": "c.mp4", "segments": [{"start": 1, "end": 4, "text": "A short pattern."}]},
        {"video": "broken.mp4", "segments": [{"start": 0, "end": 1, "text": "Unusable."}]},
    ]
    (root / "annotations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="session")
def small_inputs(tmp_path_factory, demo_pool_master) -> Path:
    return write_small_inputs(tmp_path_factory.mktemp("small_build_inputs"), demo_pool_master[0])


@pytest.fixture()
def small_build(tmp_path, small_inputs):
    """A copy of the small build config in tmp_path (tests edit it) and its output folder."""

    def write(edit=None) -> Path:
        doc = yaml.safe_load(SMALL_BUILD.read_text())
        doc["paths"] = {"data": str(small_inputs), "out": str(tmp_path / "out")}
        if edit:
            edit(doc)
        path = tmp_path / "build.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    yield write
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
