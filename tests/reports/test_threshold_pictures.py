"""Rows dropped by a score threshold or a cluster quota are pictured in the curated-image report:
the lowest scores, those just below each threshold beside those just above it, read from
wherever their bytes still are (the ledger's thumbnail, the shards, the work folder, a local
source folder), never from outside the source folder.

The output folder is built by hand from real photos, so every picture's origin is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from skimage import data as skdata

from curation.report import write_report
from curation.report_thresholds import pick_rows
from reports.ledger_summary import ledger_dataset
from tests.reports.page import read_page
from tests.reports.shard_set import LEDGER_SCHEMA, jpeg

SCHEMA = LEDGER_SCHEMA.append(pa.field("aesthetic", pa.float32())).append(
    pa.field("cluster", pa.int32())
)
PHOTOS = [
    skdata.astronaut,
    skdata.chelsea,
    skdata.coffee,
    skdata.rocket,
    skdata.hubble_deep_field,
    skdata.immunohistochemistry,
    skdata.retina,
    skdata.cat,
]
THRESHOLD = 4.9  # a top-fraction threshold: its drops get no thumbnail in the ledger


def _row(i: int, status: str, score: float, **kw) -> dict:
    row = dict.fromkeys(SCHEMA.names)
    row.update(
        id=f"{i:016x}",
        source="folder:POOL",
        source_key=f"img{i}.jpg",
        partition=0,
        row=i,
        status=status,
        ext="jpg",
        aesthetic=score,
        width=64,
        height=64,
    )
    row.update(kw)
    return row


def build(root: Path) -> Path:
    """kept rows 0-2 (in a shard), rows 3-4 dropped by the threshold with bytes only in the
    work folder, rows 5-6 with bytes only in the source folder, row 7 a key escaping the source
    folder, row 8 dropped by the cluster quota (bytes in the work folder)."""
    out, pool = root / "out", root / "pool"
    pool.mkdir(parents=True)
    (out / "shards").mkdir(parents=True)
    pics = [jpeg(f(), (96, 80)) for f in PHOTOS] + [jpeg(skdata.astronaut(), (70, 90))]
    for i in (5, 6):
        (pool / f"img{i}.jpg").write_bytes(pics[i])
    (root / "outside.jpg").write_bytes(pics[7])  # must not be read: it is not in the pool
    rows = []
    with wds.TarWriter(str(out / "shards/images-000000.tar")) as w:
        for i, score in enumerate((5.0, 5.3, 6.1)):
            key = f"k{i}"
            w.write({"__key__": key, "jpg": pics[i], "json": b"{}"})
            rows.append(
                _row(i, "kept", score, shard="shards/images-000000.tar", key=key, cluster=0)
            )
    reason = f"aesthetic<{THRESHOLD:g}"
    for i, score in ((3, 4.8), (4, 4.6), (5, 1.5), (6, 2.0)):
        rows.append(_row(i, "dropped", score, stage="aesthetic", reason=reason))
    rows.append(
        _row(7, "dropped", 0.5, stage="aesthetic", reason=reason, source_key="../outside.jpg")
    )
    rows.append(_row(8, "dropped", 5.5, stage="cluster", reason="cluster_quota", cluster=0))
    for r in rows:
        r["source"] = f"folder:{pool}"
    (out / "ledger").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "ledger/part-000000.parquet")
    # the first pass's piece: bytes of every row no first-pass filter dropped
    piece = out / "_work/score/scored/p000000/piece-000.parquet"
    piece.parent.mkdir(parents=True)
    ids = [f"{i:016x}" for i in (0, 1, 2, 3, 4, 8)]
    images = [pics[i] for i in (0, 1, 2, 3, 4)] + [pics[8]]
    pq.write_table(pa.table({"id": ids, "row": [0, 1, 2, 3, 4, 8], "image": images}), piece)
    stats = {
        "inputs": 9,
        "kept": 3,
        "dropped": 6,
        "error": 0,
        "stages": ["read", "aesthetic", "cluster"],
        "thresholds": {"aesthetic": [THRESHOLD], "aspect_ratio": [0.33, 3.0]},
        "clusters": {"k": 1, "per_cluster": 3, "sizes_before": [4], "sizes_after": [3]},
    }
    (out / "stats.json").write_text(json.dumps(stats))
    return out


@pytest.fixture
def out(tmp_path) -> Path:
    return build(tmp_path)


def test_score_drops_are_pictured_beside_the_rows_just_above(out):
    page = read_page(write_report(out).read_text(encoding="utf-8"))
    assert not page.errors
    thr = [im for im in page.imgs if im.inside(id="thresholds")]
    below = [im for im in thr if im.inside(data_group="below")]
    above = [im for im in thr if im.inside(data_group="above")]
    # rows 3, 4 from the work folder, 5, 6 from the source folder; row 7 escapes the pool
    assert len(below) == 4 and all(im.data_uri for im in below)
    assert all(im.decoded().format == "JPEG" for im in below + above)
    assert sorted(im.caption.split("aesthetic ")[1].split()[0] for im in below) == [
        "1.5",
        "2",
        "4.6",
        "4.8",
    ]
    assert {im.attrs["title"] for im in below} == {
        "picture from the work folder",
        "picture from the source",
    }
    # just above: the three kept rows (shard) and the quota drop (work folder), lowest first
    assert [im.caption.split("aesthetic ")[1].split()[0] for im in above] == [
        "5",
        "5.3",
        "5.5",
        "6.1",
    ]
    assert "later dropped: cluster_quota" in " ".join(im.caption for im in above)
    # the pair sits side by side; a range threshold (aspect ratio) is not a score threshold
    doc = (out / "report.html").read_text()
    assert '<div class="pair">' in doc and 'data-column="aspect_ratio"' not in doc
    assert "of 5 picked rows pictured" not in doc  # 5 below + 4 above were picked, 8 pictured
    assert "8 of 9 picked rows pictured" in doc

    # the dropped-by-reason sheet pictures both the score drops and the quota drop
    dropped = [im for im in page.imgs if im.inside(id="dropped")]
    assert len(dropped) == 5 and all(im.data_uri for im in dropped)
    assert "no picture (not decoded)" not in doc
    quota = [im for im in page.imgs if "cluster-dropped" in im.attrs.get("class", "")]
    assert len(quota) == 1 and quota[0].inside(id="cluster-samples")
    assert quota[0].decoded().size == (70, 90)  # row 8's own bytes, from the work folder


def test_without_the_work_folder_only_reachable_bytes_are_pictured(out):
    shutil.rmtree(out / "_work")
    page = read_page(write_report(out).read_text(encoding="utf-8"))
    below = [im for im in page.imgs if im.inside(data_group="below")]
    assert len(below) == 2 and {im.attrs["title"] for im in below} == {"picture from the source"}
    doc = (out / "report.html").read_text()
    assert "no picture reachable here" in doc  # the quota drop: no thumb, no work, no file


def test_picks_lowest_and_just_below_apart(out):
    picks = pick_rows(ledger_dataset(out), {"aesthetic": THRESHOLD}, per_group=2)["aesthetic"]
    assert [r["score"] for r in picks["below"]] == pytest.approx([4.8, 4.6])
    assert [r["score"] for r in picks["lowest"]] == pytest.approx([0.5, 1.5])
    assert [r["score"] for r in picks["above"]] == pytest.approx([5.0, 5.3])


def test_a_webdataset_source_is_read_from_its_tar(out, tmp_path):
    """Rows 5 and 6 from a tar pool (``webdataset:``, key ``REL.tar#KEY``); row 7's tar lies
    outside the pool and is not read."""
    tars = tmp_path / "tars"
    (tars / "sub").mkdir(parents=True)
    pool = tmp_path / "pool"
    with wds.TarWriter(str(tars / "sub/part.tar")) as w:
        w.write({"__key__": "other", "jpg": b"not read", "txt": b"x"})
        for i in (5, 6):
            w.write({"__key__": f"img{i}", "jpg": (pool / f"img{i}.jpg").read_bytes()})
    with wds.TarWriter(str(tmp_path / "outside.tar")) as w:
        w.write({"__key__": "img7", "jpg": (pool / "img5.jpg").read_bytes()})
    shutil.rmtree(pool)
    path = out / "ledger/part-000000.parquet"
    rows = pq.read_table(path).to_pylist()
    keys = {5: "sub/part.tar#img5", 6: "sub/part.tar#img6", 7: "../outside.tar#img7"}
    for r in rows:
        if r["row"] in keys:
            r["source"], r["source_key"] = f"webdataset:{tars}", keys[r["row"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    page = read_page(write_report(out).read_text(encoding="utf-8"))
    below = [im for im in page.imgs if im.inside(data_group="below")]
    from_source = [im for im in below if im.attrs["title"] == "picture from the source"]
    assert len(below) == 4 and len(from_source) == 2
    assert {im.caption.split()[0] for im in from_source} == {keys[5], keys[6]}
