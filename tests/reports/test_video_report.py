"""The video report as a person reads it: frames as wide as their cards (made large enough to
stay sharp there), and short clips, which no caption-density bound judges, told apart from the
kept clips on the captions-per-minute plot, with a legend line saying why.

The output folder is built by hand (a real tar of real JPEG frames, a ledger with clip
summaries), so what the page must say is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from skimage import data as skdata

from tests.reports.page import read_page
from tests.reports.shard_set import LEDGER_SCHEMA, jpeg
from video_prep import report as video_report
from video_prep.report import write_video_report

SCHEMA = LEDGER_SCHEMA.append(pa.field("clips", pa.string()))
BOUNDS = {
    "max_len_s": 120,
    "min_captions_per_min": 0.5,
    "max_captions_per_min": 30,
    "density_min_len_s": 10,
}


def _clip(i: int, length: float, captions: int, status="kept", reason=None) -> dict:
    return {
        "index": i,
        "start": 0.0,
        "end": length,
        "length": length,
        "captions": captions,
        "per_min": round(captions / length * 60, 3),
        "status": status,
        "reason": reason,
    }


def build(out: Path, clips: list[list[dict]], bounds: dict = BOUNDS) -> None:
    (out / "shards").mkdir(parents=True)
    frame = jpeg(skdata.astronaut(), (448, 336))  # frames.max_side 448, as the demo stores
    names = [f"f{i:04d}.jpg" for i in range(4)]
    with wds.TarWriter(str(out / "shards/caption-000000.tar")) as w:
        rec = {
            "key": "v0",
            "frames": [f"v0.{n}" for n in names],
            "timestamps": [0.0, 1.0, 2.0, 3.0],
            "conversations": [{"from": "gpt", "value": "A person in a suit."}],
        }
        w.write({"__key__": "v0", **dict.fromkeys(names, frame), "json": json.dumps(rec).encode()})
    rows = []
    for i, video_clips in enumerate(clips):
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            id=f"{i:016x}",
            source="videos:/v",
            source_key=f"v{i}.mp4",
            partition=0,
            row=i,
            status="kept",
            clips=json.dumps(video_clips),
        )
        rows.append(row)
    (out / "ledger").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "ledger/part-000000.parquet")
    shard = {"path": "shards/caption-000000.tar", "subset": "caption", "samples": 1, "bytes": 1}
    doc = {"name": "videos-caption", "samples": 1, "shards": [shard], "config": {"clips": bounds}}
    (out / "dataset.json").write_text(json.dumps(doc))
    (out / "stats.json").write_text(json.dumps({"inputs": len(rows), "kept": len(rows)}))


def test_frames_fill_their_cards(tmp_path):
    build(tmp_path, [[_clip(0, 60, 4)]])
    doc = write_video_report(tmp_path).read_text(encoding="utf-8")
    page = read_page(doc)
    frames = [im for im in page.imgs if im.inside(**{"class": "sheet frames"})]
    assert len(frames) == 4 and all(im.data_uri for im in frames)
    # made at FRAME_PX, at least as wide as the narrowest card it fills
    assert all(im.decoded().size == (320, 240) for im in frames)
    assert video_report.FRAME_PX >= video_report.FRAME_CARD_PX
    assert ".frames figure img{width:100%;max-width:none" in doc
    assert "minmax(220px,1fr)" in doc


def test_short_clips_are_marked_exempt_on_the_density_plot(tmp_path, monkeypatch):
    # two judged clips; two short kept clips above the max bound (exempt), one dropped
    clips = [
        [_clip(0, 60, 4), _clip(1, 90, 3)],
        [_clip(0, 3, 2), _clip(1, 4, 3)],  # 40 and 45 per minute, kept: shorter than 10 s
        [_clip(0, 60, 40, "dropped", "captions_too_dense")],
    ]
    build(tmp_path, clips)
    seen = {}
    real = video_report.hist_png

    def spy(column, h, thresholds):
        seen[column] = h
        return real(column, h, thresholds)

    monkeypatch.setattr(video_report, "hist_png", spy)
    doc = write_video_report(tmp_path).read_text(encoding="utf-8")
    page = read_page(doc)
    assert not page.errors
    h = seen["captions per minute"]
    assert int(np.sum(h["exempt"])) == 2 and int(np.sum(h["kept"])) == 2
    assert int(np.sum(h["other"])) == 1
    assert "shorter than 10 s: exempt" in h["exempt_label"]
    legend = page.text
    assert "Blue, hatched" in legend and "2 kept clip(s) shorter than density_min_len_s = 10 s" in (
        legend
    )
    assert "exempt from the captions-per-minute bounds" in legend
    plots = [im for im in page.imgs if "plot" in im.attrs.get("class", "")]
    assert len(plots) == 2 and all(im.decoded().format == "PNG" for im in plots)


def test_no_exempt_legend_without_short_clips(tmp_path):
    build(tmp_path, [[_clip(0, 3, 2)]], {**BOUNDS, "density_min_len_s": None})
    doc = write_video_report(tmp_path).read_text(encoding="utf-8")
    assert "Blue, hatched" not in doc and "exempt-legend" not in doc
