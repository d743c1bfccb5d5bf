"""``vl3data export`` on sets made by the real jobs, checked the way the trainers read them:
VideoLLaMA3's annotations through ``datasets.load_dataset("json")`` and its ``load_video``,
LLaVA's list through ``json.load``; every media path opened, tags counted against media, bytes
and pixels compared with the shard members; every sample exported or listed as skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from manifests.dataset import read_dataset_json, shard_paths
from manifests.shards import iter_samples
from tests.export.conftest import odd_samples
from tests.export.trainers import ffmpeg_rgb, llava_next_video, load_video, packets

KINDS = ("image", "caption", "streaming", "text", "mixed", "odd")


def source(src: Path) -> dict[str, dict]:
    """The set's samples by key: the record (None when broken) and the members' bytes."""
    out = {}
    for s in iter_samples(shard_paths(src)):
        try:
            rec = json.loads(s["json"])
        except ValueError:
            rec = None
        out[s["__key__"]] = {"record": rec, **{k: v for k, v in s.items() if k[:2] != "__"}}
    return out


def member(sample: dict, name: str) -> bytes:
    return sample[name.rsplit("/", 1)[-1].split(".", 1)[1]]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def skipped(out: Path) -> dict[str, dict]:
    lines = (out / "skipped.jsonl").read_text().splitlines()
    return {r["key"]: r["reasons"] for r in map(json.loads, lines)}


def check_video(path: Path, rec: dict, sample: dict, span: tuple = (None, None)) -> None:
    """The file gives VideoLLaMA3's loader the record's frames, timed from the first one (the
    file starts with it), and holds the shard's JPEG bytes as they are."""
    frames, stamps = load_video(path, *span)
    assert len(frames) == len(rec["frames"])
    t0 = rec["timestamps"][0]
    assert stamps == pytest.approx([t - t0 for t in rec["timestamps"]], abs=1e-6)
    jpegs = [member(sample, n) for n in rec["frames"]]
    assert np.array_equal(frames.reshape(len(jpegs), -1), ffmpeg_rgb(jpegs))
    assert packets(path) == b"".join(jpegs)


def videollama3_rows(out: Path, cache: Path):
    """What ``train.py`` makes of ``--data_path OUT/annotations_*.jsonl``: each file through
    ``datasets.load_dataset("json")``, then ``concatenate_datasets``."""
    import datasets

    files = sorted(out.glob("annotations_*.jsonl"))
    for f in files:  # one schema per file: every line has the same keys
        keys = {tuple(json.loads(line)) for line in f.read_text().splitlines()}
        assert len(keys) == 1, f
    objs = [
        datasets.load_dataset("json", data_files=str(f), cache_dir=str(cache))["train"]
        for f in files
    ]
    return datasets.concatenate_datasets(objs) if objs else []


@pytest.mark.parametrize("kind", KINDS)
def test_videollama3_reads_every_record(export_sets, exported, kind, tmp_path):
    out, src = exported[kind], source(export_sets[kind])
    rows = videollama3_rows(out, tmp_path)
    assert (
        len(rows)
        == json.loads((out / "export.json").read_text())["layouts"]["videollama3"]["records"]
    )
    media = out / "media"
    for row in rows:
        sample = src[row["id"]]
        rec = sample["record"]
        if row.get("stream"):  # times in the file's seconds: less the first frame's time
            t0 = rec["timestamps"][0]
            assert row["conversation"] == [
                {**m, "time": pytest.approx(m["time"] - t0)} for m in rec["conversation"]
            ]
            assert row["start_time"] == 0 and row["end_time"] == pytest.approx(rec["end_time"] - t0)
            check_video(media / row["video"][0], rec, sample, (row["start_time"], row["end_time"]))
            continue
        turns = row["conversations"]
        assert len(turns) > 1 and {t["from"] for t in turns} <= {"human", "gpt", "system"}
        text = "".join(t["value"] for t in turns)
        if row.get("image") is not None:
            assert text.count("<image>") == len(row["image"]) == len(rec["image"])
            for path, name in zip(row["image"], rec["image"], strict=True):
                assert (media / path).read_bytes() == member(sample, name)
        elif row.get("video") is not None:
            assert text.count("<video>") == 1 and len(row["video"]) == 1
            check_video(media / row["video"][0], rec, sample)
        else:
            assert not rec.get("image") and not rec.get("video") and row["video"] is None
            assert [t["value"] for t in turns] == [t["value"] for t in rec["conversations"]]
    # every sample is in the file or in skipped.jsonl, never both
    ids, skips = [r["id"] for r in rows], skipped(out)
    assert sorted(ids + [k for k, r in skips.items() if "videollama3" in r]) == sorted(src)
    assert read_dataset_json(export_sets[kind])["samples"] == len(src)


@pytest.mark.parametrize("kind", KINDS)
def test_llava_reads_every_record(export_sets, exported, kind):
    out, src = exported[kind], source(export_sets[kind])
    records = json.loads((out / "llava.json").read_text())  # LLaVA's json.load
    assert isinstance(records, list)
    for rec in records:
        sample = src[rec["id"]]
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        text = "".join(t["value"] for t in turns)
        assert "<video>" not in text and "stream" not in rec
        if "image" in rec:
            paths = [rec["image"]] if isinstance(rec["image"], str) else rec["image"]
            assert text.count("<image>") == len(paths) >= 1
            for path, name in zip(paths, sample["record"]["image"], strict=True):
                assert (out / "media" / path).read_bytes() == member(sample, name)
        elif "video" in rec:  # LLaVA-Video (LLaVA-NeXT): one <image> stands for the video
            assert isinstance(rec["video"], str) and text.count("<image>") == 1
            assert turns[0]["value"].startswith("<image>")
            jpegs = [member(sample, n) for n in sample["record"]["frames"]]
            frames, times = llava_next_video(out / "media" / rec["video"])  # decord
            ts = sample["record"]["timestamps"]
            assert times == pytest.approx([t - ts[0] for t in ts])
            assert np.array_equal(frames.reshape(len(jpegs), -1), ffmpeg_rgb(jpegs))
        else:
            assert "<image>" not in text
    skips = skipped(out)
    assert sorted([r["id"] for r in records] + [k for k, r in skips.items() if "llava" in r]) == (
        sorted(src)
    )


def test_odd_records_are_fixed_or_skipped_with_their_reason(exported, photos):
    out = exported["odd"]
    skips = skipped(out)
    for key, _rec, _members, reasons in odd_samples(photos):
        assert skips.get(key, {}) == reasons, key
    vl3 = {r["id"]: r for f in out.glob("annotations_*.jsonl") for r in lines(f)}
    assert vl3["no_tag"]["conversations"][0]["value"] == "<image>\nWhat is it?"  # as the trainer
    assert vl3["user_roles"]["conversations"][0]["from"] == "human"  # VL3 takes "user" as gpt
    two = vl3["two_images"]["image"]
    assert len(set(two)) == 2 and two[1].endswith(".png")
    odd = vl3["../odd key/é"]["image"][0]
    assert (out / "media" / odd).is_file() and (out / "media" / odd).resolve().is_relative_to(
        (out / "media").resolve()
    )
    assert odd.isascii() and " " not in odd and ".." not in odd
    llava = {r["id"]: r for r in json.loads((out / "llava.json").read_text())}
    assert llava["two_images"]["image"] == two and isinstance(llava["no_tag"]["image"], str)
