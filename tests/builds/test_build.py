"""The build for real: the small graph's jobs run as Ray tasks on the session's embedded Ray.

Reruns run exactly what is stale: nothing when nothing changed, the video branch alone when its
config changed, the failed node (and not its finished predecessors) after a failure.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from manifests.configs import load_config
from vl3data.builder.config import BuildConfig
from vl3data.builder.execute import BuildFailed, run_build
from vl3data.builder.run_node import read_marker

ALL = ["curate", "mix.stage1", "mix.stage3", "video.patterns"]


def build(path: Path, targets=None):
    lines: list[str] = []
    result = run_build(load_config(BuildConfig, str(path)), targets, echo=lines.append)
    return result, lines


def records(out: Path) -> dict[str, bytes]:
    """Every dataset.json of the build, by path: bytes change when a node reruns."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("dataset.json"))}


def test_build_reruns_exactly_what_is_downstream_of_a_change(
    small_build, ray_local, tmp_path, monkeypatch
):
    monkeypatch.setenv("VL3DATA_PROGRESS_EVERY_S", "0")  # every change of a node's line
    path = small_build()
    out = tmp_path / "out"
    first, lines = build(path)
    assert sorted(first.ran) == ALL
    # while a node ran, its progress showed (from its status file); checked for the nodes
    # that ran long enough for the build to look (it looks every second)
    took = {m[1]: float(m[2]) for x in lines if (m := re.search(r"\] done  (\S+) \(([\d.]+)s", x))}
    assert set(took) == set(ALL)
    for node in [n for n, s in took.items() if s > 5]:
        shown = [x.split(f"… {node}: ", 1)[1] for x in lines if f"… {node}: " in x]
        assert shown, f"{node} ran {took[node]} s and no progress line of it was shown"
        assert all(re.search(r"partitions|starting|step \d+/\d+|writ", x) for x in shown)
    assert not list((out / ".build").glob("*.status"))  # each node removed its status file
    assert all(first.status[n].why == "not built yet" for n in ["curate", "video.patterns"])
    # the image and the video branch ran side by side: both started before either finished
    head = lines[: next(i for i, line in enumerate(lines) if "] done" in line)]
    assert any("start curate" in x for x in head) and any("start video.patterns" in x for x in head)
    # real outputs, each carrying the node's record; the mixture reads the build's video set
    for name in ("curated", "videos/caption", "videos/grounding", "mix/stage1", "mix/stage3"):
        doc = json.loads((out / name / "dataset.json").read_text())
        assert (
            doc["build"]["fingerprint"]
            == read_marker(str(out / ".build"), doc["build"]["node"])["fingerprint"]
        )
    mix3 = json.loads((out / "mix/stage3/dataset.json").read_text())
    videos = json.loads((out / "videos/caption/dataset.json").read_text())["samples"]
    assert mix3["sources"]["video_caption"] == videos > 0
    shards = [str(out / "mix/stage3" / s["path"]) for s in mix3["shards"]]
    assert sum(1 for _ in wds.WebDataset(shards, shardshuffle=False)) == mix3["samples"]

    # OUT/index.html links every set's report and the mixtures' composition (tests/builds/
    # test_index_page.py checks the page itself, test_index_browser.py in Chromium)
    index = (out / "index.html").read_text()
    assert f"small: index {out / 'index.html'}" in lines
    for name in ("curated", "videos/caption", "videos/streaming", "videos/grounding"):
        assert f'href="{name}/report.html"' in index and (out / name / "report.html").is_file()
    assert 'href="mix/stage3/composition.json"' in index

    before = records(out)
    again, lines = build(path)
    assert again.ran == [] and "everything is up to date" in lines[-1]
    assert records(out) == before

    # a change to the video job: the video node and the one mixture that reads it, no more
    path = small_build(lambda d: d["videos"][0]["set"].append("frames.jpeg_quality=80"))
    third, _ = build(path)
    assert sorted(third.ran) == ["mix.stage3", "video.patterns"]
    assert third.status["video.patterns"].why == "its config changed"
    assert third.status["mix.stage3"].why == "upstream video.patterns will run"
    after = records(out)
    for untouched in ("curated/dataset.json", "mix/stage1/dataset.json"):
        assert after[untouched] == before[untouched]
    assert after["videos/caption/dataset.json"] != before["videos/caption/dataset.json"]

    # a change to one mixture's recipe: that mixture alone
    def reseed(d):
        d["videos"][0]["set"].append("frames.jpeg_quality=80")
        d["mixtures"][0]["set"] = ["seed=1"]

    fourth, _ = build(small_build(reseed))
    assert fourth.ran == ["mix.stage1"]

    # a target builds what it names and what that needs, nothing else
    fifth, lines = build(small_build(reseed), ["video"])
    assert [n.name for n in fifth.nodes] == ["video.patterns"] and fifth.ran == []


def test_a_changed_raw_input_reruns_its_branch(small_build, small_inputs, ray_local, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_inputs, data)

    def here(d):
        d["paths"]["data"] = str(data)

    path = small_build(here)
    first, _ = build(path, ["mix.stage1"])
    assert sorted(first.ran) == ["curate", "mix.stage1"]
    extra = data / "pool" / "one_more.jpg"
    shutil.copyfile(next((data / "pool").rglob("*.jpg")), extra)
    second, _ = build(path, ["mix.stage1"])
    assert second.status["curate"].why == "input changed: pool"
    assert sorted(second.ran) == ["curate", "mix.stage1"]
    curated = json.loads((tmp_path / "out" / "curated" / "dataset.json").read_text())
    assert (
        curated["inputs"]
        == json.loads((tmp_path / "out" / "curated" / "stats.json").read_text())["inputs"]
    )


def test_a_failed_node_stops_the_build_and_a_rerun_resumes_there(small_build, ray_local, tmp_path):
    def impossible(d):  # discovered only when the videos are built: 1000 asked, a few there
        d["mixtures"][1]["set"] = ["groups[0].sources[0].strategy=first:1000"]

    out = tmp_path / "out"
    with pytest.raises(BuildFailed) as err:
        build(small_build(impossible), ["mix.stage3"])
    msg = str(err.value)
    assert "node mix.stage3 failed" in msg and "first:1000" in msg
    assert "resumes at mix.stage3" in msg and "mix.stage3.log" in msg
    assert read_marker(str(out / ".build"), "mix.stage3")["state"] == "failed"
    index = (out / "index.html").read_text()  # written after a failed node too
    assert 'data-node="mix.stage3" data-state="failed"' in index and "first:1000" in index
    assert not (out / "mix" / "stage3" / "dataset.json").exists()
    kept = records(out)
    assert "videos/caption/dataset.json" in kept  # the predecessor finished and stays

    fixed, _ = build(small_build(), ["mix.stage3"])
    assert fixed.ran == ["mix.stage3"]
    assert fixed.status["video.patterns"].why == "up to date"
    now = records(out)
    assert all(now[k] == v for k, v in kept.items())
    assert read_marker(str(out / ".build"), "mix.stage3")["state"] == "done"
