"""``OUT/index.html`` of a build, from what a build leaves on disk (node markers, reports,
composition.json), without running one: every link resolves to a file that exists, the graph
shows every node with its status, time and counts, a failed node says why, and headless
Chromium finds no broken image and nothing wider than the window."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from tests.reports.browser import probe, screenshot
from tests.reports.page import read_page
from vl3data.builder.freshness import Status
from vl3data.builder.graph import Node
from vl3data.builder.index_page import write_build_index
from vl3data.builder.run_node import write_marker

COMPOSITION = {
    "stage": 1,
    "composition": [
        {"level": "source", "group": "images", "source": "curated", "target": 30,
         "epoch_samples": 24, "target_share": 0.75, "vs_target": 0.8},
        {"level": "source", "group": "images", "source": "more", "target": 10,
         "epoch_samples": 8, "target_share": 0.25, "vs_target": 0.8},
        {"level": "group", "group": "images", "source": None, "target": 40,
         "epoch_samples": 32, "target_share": None, "vs_target": 0.8},
    ],
}  # fmt: skip


def _node(name, kind, group, outputs, deps=()) -> Node:
    return Node(name, kind, group, None, [str(o) for o in outputs], {}, "h", deps=list(deps))


def fake_build(out: Path) -> tuple[SimpleNamespace, list[Node]]:
    """curate -> mix.stage1 -> train.stage1 (built), video.demo (failed), train.stage2 (not
    started), with the files each leaves."""
    state = out / ".build"
    curated, videos, mix, train = out / "curated", out / "videos", out / "mix/stage1", out / "train"
    for d in (curated, videos / "caption", videos / "grounding", mix, train / "stage1/final"):
        d.mkdir(parents=True)
    (curated / "report.html").write_text("<html>curated</html>")
    (videos / "caption" / "report.html").write_text("<html>caption</html>")  # failed mid-way
    (mix / "composition.json").write_text(json.dumps(COMPOSITION))
    (train / "report.html").write_text("<html>training</html>")
    nodes = [
        _node("curate", "curate", "syn7m", [curated]),
        _node("video.demo", "video", "video", [videos / "caption", videos / "grounding"]),
        _node("mix.stage1", "mix", "mix", [mix], ["curate"]),
        _node("train.stage1", "train", "train", [train / "stage1/final"], ["mix.stage1"]),
        _node("train.stage2", "train", "train", [train / "stage2/final"], ["train.stage1"]),
    ]
    done = {"state": "done", "fingerprint": "f"}
    write_marker(str(state), "curate", {**done, "wall_s": 75.5, "measured": {
        "unit": "images", "inputs": 24, "outputs": 17}})  # fmt: skip
    write_marker(str(state), "mix.stage1", {**done, "wall_s": 2.0, "measured": {
        "unit": "samples", "inputs": 32, "outputs": 32}})  # fmt: skip
    write_marker(str(state), "train.stage1", {**done, "wall_s": 130.0, "measured": {
        "unit": "steps", "inputs": 6, "outputs": 6}})  # fmt: skip
    write_marker(str(state), "video.demo", {"state": "failed", "error": "RuntimeError: ffmpeg <x>"})
    (state / "video.demo.log").write_text("Traceback ...")
    cfg = SimpleNamespace(name="small", paths={"out": str(out)}, state=str(state))
    return cfg, nodes


@pytest.fixture
def index(tmp_path) -> Path:
    cfg, nodes = fake_build(tmp_path)
    status = {
        "curate": Status("curate", False, "up to date"),
        "video.demo": Status("video.demo", True, "not built yet"),
        "mix.stage1": Status("mix.stage1", True, "its config changed"),
        "train.stage1": Status("train.stage1", True, "upstream mix.stage1 will run"),
        "train.stage2": Status("train.stage2", True, "not built yet"),
    }
    return write_build_index(
        cfg, nodes, status, ["mix.stage1", "train.stage1"], "failed at video.demo", ["video.demo"]
    )


def test_index_links_every_report_and_shows_the_graph(index, tmp_path):
    assert index == tmp_path / "index.html"
    doc = index.read_text(encoding="utf-8")
    page = read_page(doc)
    assert not page.errors
    # every link is relative and resolves to a file that exists; every report is linked
    files = [unquote(h) for h in page.links if not h.startswith("#")]
    assert all(not h.startswith(("/", "file:", "http")) for h in files)
    assert all((tmp_path / h).is_file() for h in files), files
    assert {
        "curated/report.html",
        "videos/caption/report.html",
        "mix/stage1/composition.json",
        "train/report.html",
        ".build/video.demo.log",
    } <= set(files)
    # the graph: one box per node, with its state, time and counts
    states = dict(re.findall(r'data-node="([^"]+)" data-state="([^"]+)"', doc))
    assert states == {
        "curate": "up to date",
        "video.demo": "failed",
        "mix.stage1": "built",
        "train.stage1": "built",
        "train.stage2": "not started",
    }
    assert "up to date · 1 min 15 s · 17 images" in doc
    assert "24 images in, 17 out" in page.text
    assert "RuntimeError: ffmpeg &lt;x&gt;" in doc  # the failed node says why, escaped
    assert "failed at video.demo" in page.text
    # the mixture's composition as a table
    assert "curated" in page.text and "75.0 %" in page.text and "0.80×" in page.text


def test_index_renders_in_chromium_without_broken_images_or_overflow(index, tmp_path):
    found = probe(index, tmp_path)
    assert found["broken"] == [] and found["wide"] == [] and found["spill"] == []
    assert found["scrollWidth"] <= found["width"] and found["svgs"] == 1
    shot = screenshot(index, tmp_path / "index.png", tmp_path, height=1200)
    from PIL import Image

    with Image.open(shot) as im:  # something was drawn: not one blank colour
        assert im.size[0] == 1280 and len(im.convert("RGB").getcolors(1 << 20) or []) > 50
