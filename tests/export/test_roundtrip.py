"""import(export(x)) gives x back: a mixed set (images, caption and streaming videos, text)
exported to VideoLLaMA3's layout and imported by ``vl3data import`` (format videollama3), and
the odd set exported to LLaVA's JSON and imported (format llava). Same records (dialogue,
tags, streaming times) and the same image bytes; a video's frames are sampled again by the
import (the video job's sampler, which re-encodes them), so they come back as the same frames at
the same times, pixels equal to JPEG re-encoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manifests.dataset import shard_paths
from manifests.shards import iter_samples
from tests.export.test_export import member, source
from vl3data.cli import main

KINDS = ("image", "stream", "text", "video")


def imported(out: Path, modality: str) -> dict[str, dict]:
    """The imported samples of one modality by the exported record's id (kept in meta)."""
    if not (out / modality / "dataset.json").is_file():
        return {}
    got = {}
    for s in iter_samples(shard_paths(out / modality)):
        rec = json.loads(s["json"])
        got[rec["meta"]["id"]] = {"record": rec, **{k: v for k, v in s.items() if k[:2] != "__"}}
    return got


def run_import(fmt: str, annotations: Path, media: Path, out: Path) -> None:
    argv = ["import", f"configs/import_{fmt}.yaml", "--no-progress"]
    argv += [f"--set=input.annotations={annotations}", f"--set=input.media={media}"]
    assert main([*argv, f"--set=output={out}"]) == 0


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)


def test_videollama3_round_trip(export_sets, exported, ray_local, tmp_path):
    out = exported["mixed"]
    files = sorted(out.glob("annotations_*.jsonl"))
    assert [f.name for f in files] == [f"annotations_{k}.jsonl" for k in KINDS]
    one = tmp_path / "all.jsonl"  # the import reads one file: the four, one after another
    one.write_text("".join(f.read_text() for f in files))
    run_import("videollama3", one, out / "media", tmp_path / "back")
    back = {m: imported(tmp_path / "back", m) for m in ("image", "video", "text")}
    ours = source(export_sets["mixed"])
    lines = [json.loads(x) for x in one.read_text().splitlines()]
    assert sum(len(b) for b in back.values()) == len(lines)  # every record came back
    kinds = set()
    for line in lines:
        mine = ours[line["id"]]
        rec = mine["record"]
        if line.get("stream"):
            kind, got = "stream", back["video"][line["id"]]
            for k in ("start_time", "end_time", "conversation"):
                assert got["record"][k] == line[k]  # the file's times, as exported
        else:
            kind = "image" if rec.get("image") else "video" if rec.get("video") else "text"
            got = back[kind][line["id"]]
            assert got["record"]["conversations"] == line["conversations"]
            assert [t["value"] for t in line["conversations"]][1:] == [
                t["value"] for t in rec["conversations"]
            ][1:]
        kinds.add(kind)
        if kind == "image":
            names = got["record"]["image"]
            assert [member(got, n) for n in names] == [member(mine, n) for n in rec["image"]]
        elif kind in ("video", "stream"):
            t0 = rec["timestamps"][0]
            assert got["record"]["timestamps"] == pytest.approx([t - t0 for t in rec["timestamps"]])
            for a, b in zip(got["record"]["frames"], rec["frames"], strict=True):
                diff = np.abs(pixels(member(got, a)) - pixels(member(mine, b)))
                assert diff.mean() < 3, diff.mean()  # the same frame, encoded once more
    assert kinds == {"image", "video", "stream", "text"}


def test_llava_round_trip(export_sets, exported, ray_local, tmp_path):
    out = exported["odd"]
    run_import("llava", out / "llava.json", out / "media", tmp_path / "back")
    back = {**imported(tmp_path / "back", "image"), **imported(tmp_path / "back", "text")}
    ours = source(export_sets["odd"])
    records = json.loads((out / "llava.json").read_text())
    assert sorted(back) == sorted(r["id"] for r in records)
    for r in records:
        got, mine = back[r["id"]], ours[r["id"]]
        assert got["record"]["conversations"] == r["conversations"]
        if "image" in r:
            names = got["record"]["image"]
            assert [member(got, n) for n in names] == [
                member(mine, n) for n in mine["record"]["image"]
            ]
