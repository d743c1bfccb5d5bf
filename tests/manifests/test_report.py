"""The HTML report of a shard set, built from a small but real output folder.

The folder holds real photos (scikit-image's sample images) in real WebDataset tars, a ledger
split over two parquet parts (the second adds an all-null score column, as a later stage
would), and stats.json with thresholds. Every number asserted below is worked out by hand
from the rows built here, so a wrong count in the report fails the test.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from skimage import data as skdata

from manifests import report
from manifests.report import summarize_ledger, write_report
from manifests.schema import BASE_SCHEMA, HEAVY_COLUMNS, LEDGER_WRITE_FIELDS

SCRIPT_TEXT = "a cat <script>alert(1)</script> & friends"
STAGES = ["read", "prefilter", "download", "decode", "shard"]

LEDGER_SCHEMA = pa.schema(
    [f for f in BASE_SCHEMA if f.name not in HEAVY_COLUMNS]
    + LEDGER_WRITE_FIELDS
    + [pa.field("aspect_ratio", pa.float64())]
)


def _jpeg(array, size: tuple[int, int] | None = None) -> bytes:
    img = Image.fromarray(array).convert("RGB")
    if size:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _row(i: int, status: str, **kw) -> dict:
    row = {name: None for name in LEDGER_SCHEMA.names}
    row.update(
        id=f"{i:016x}",
        source="folder:/pool",
        source_key=f"/pool/img{i:03d}.jpg",
        partition=i // 6,
        row=i % 6,
        status=status,
        ext="jpg",
    )
    row.update(kw)
    if row["width"] and row["height"]:
        row["aspect_ratio"] = row["width"] / row["height"]
    return row


def build_out(out: Path) -> dict:
    """Write a complete output folder; return what the tests need to know about it."""
    photos = {
        "astronaut": skdata.astronaut(),
        "chelsea": skdata.chelsea(),
        "coffee": skdata.coffee(),
    }
    kept_specs = [  # (name, text): 3 samples in shard 0, 2 in shard 1
        ("astronaut", "an astronaut in a suit"),
        ("chelsea", SCRIPT_TEXT),
        ("coffee", "a cup of coffee"),
        ("chelsea", "the cat again"),
        ("astronaut", "the astronaut again"),
    ]
    (out / "shards").mkdir(parents=True)
    shard_paths = ["shards/images-000000.tar", "shards/images-000001.tar"]
    writers = [wds.TarWriter(str(out / p)) for p in shard_paths]
    rows, keys = [], []
    # the pipeline's thumb of a wide image: a 600x80 strip, scaled down
    strip = Image.fromarray(skdata.coffee()[150:230])
    strip.thumbnail((128, 128))
    wide = _jpeg(np.asarray(strip))
    # first-seen order of non-kept stages: prefilter, download, decode, dedup
    for i, (name, text) in enumerate(kept_specs):
        shard_idx = 0 if i < 3 else 1
        key = f"{i:09d}"
        jpg = _jpeg(photos[name])
        h, w = photos[name].shape[:2]
        meta = {"key": key, "text": text, "width": w, "height": h}
        writers[shard_idx].write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
        keys.append(key)
        rows.append(
            _row(
                i,
                "kept",
                width=w,
                height=h,
                bytes=len(jpg),
                text=text,
                shard=shard_paths[shard_idx],
                key=key,
            )
        )
    for w in writers:
        w.close()
    rows += [
        _row(
            5,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=1200,
            height=200,
            bytes=80_000,
            thumb=wide,
        ),
        _row(
            6,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=1500,
            height=250,
            bytes=95_000,
            thumb=wide,
        ),
        _row(
            7,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=100,
            height=800,
            bytes=30_000,
        ),
        _row(8, "error", stage="download", reason="http_404", url="http://x/404a"),
        _row(9, "error", stage="download", reason="http_404", url="http://x/404b"),
        _row(
            10, "dropped", stage="decode", reason="decode_error", width=640, height=480, bytes=1_234
        ),
        _row(11, "dropped", stage="dedup", reason="duplicate", width=512, height=512, bytes=50_000),
    ]
    (out / "ledger").mkdir()
    part0 = pa.Table.from_pylist(rows[:6], schema=LEDGER_SCHEMA)
    pq.write_table(part0, out / "ledger/part-000000.parquet")
    # a later part with one more (all-null) score column: parts need not share a schema
    schema1 = LEDGER_SCHEMA.append(pa.field("aesthetic", pa.float32()))
    part1 = pa.Table.from_pylist([{**r, "aesthetic": None} for r in rows[6:]], schema=schema1)
    pq.write_table(part1, out / "ledger/part-000001.parquet", row_group_size=2)

    shard_meta = [
        {"path": p, "subset": "images", "samples": n, "bytes": (out / p).stat().st_size}
        for p, n in zip(shard_paths, [3, 2], strict=True)
    ]
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "name": "test-curation",
                "modality": "image",
                "task": "pretrain",
                "schema_version": 1,
                "subsets": {"images": {"samples": 5}},
                "samples": 5,
                "shards": shard_meta,
                "config": {"name": "test-curation", "filters": {"min_aspect": 0.333}},
                "versions": {"vl3data": "0.1.0"},
                "created_at": "2024-05-01T12:00:00Z",
            }
        )
    )
    (out / "stats.json").write_text(
        json.dumps(
            {
                "inputs": 12,
                "kept": 5,
                "dropped": 5,
                "error": 2,
                "stages": STAGES,
                "timings_s": {"decode": 1.5, "download": 75.0},
                "thresholds": {"aspect_ratio": [0.333, 3.0], "min_side": [64]},
                "wall_s": 93.4,
            }
        )
    )
    return {"keys": keys}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out")
    build_out(out)
    path = write_report(out)
    return out, path.read_text(encoding="utf-8")


# --- helpers ---------------------------------------------------------------------------------

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}


class _TagChecker(HTMLParser):
    """Fails on any end tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _section(doc: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', doc, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def _table_rows(fragment: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", fragment, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def _img_bytes(tag: str) -> bytes:
    return base64.b64decode(re.search(r'src="data:image/\w+;base64,([^"]+)"', tag).group(1))


# --- tests -----------------------------------------------------------------------------------


def test_report_is_one_complete_html_file(built):
    out, doc = built
    assert (out / "report.html").is_file()
    assert doc.startswith("<!DOCTYPE html>")
    assert doc.rstrip().endswith("</html>")
    checker = _TagChecker()
    checker.feed(doc)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'src="(?!data:)', doc)
    assert "<link" not in doc
    assert not list(out.glob(".report-*"))  # no temp file left behind


def test_summarize_ledger_counts_exactly(built):
    out, _ = built
    s = summarize_ledger(out)
    assert s["ledger_files"] == 2
    assert s["inputs"] == 12
    assert s["by_status"] == {"kept": 5, "dropped": 5, "error": 2}
    assert s["reasons"] == [
        {"stage": "prefilter", "reason": "aspect_ratio", "status": "dropped", "count": 3},
        {"stage": "download", "reason": "http_404", "status": "error", "count": 2},
        {"stage": "decode", "reason": "decode_error", "status": "dropped", "count": 1},
        {"stage": "dedup", "reason": "duplicate", "status": "dropped", "count": 1},
    ]
    # stats.json's order, then the stage only the ledger names
    assert s["stages"] == [*STAGES, "dedup"]
    assert [
        (f["stage"], f["reached"], f["dropped"], f["error"], f["survived"]) for f in s["funnel"]
    ] == [
        ("read", 12, 0, 0, 12),
        ("prefilter", 12, 3, 0, 9),
        ("download", 9, 0, 2, 7),
        ("decode", 7, 1, 0, 6),
        ("shard", 6, 0, 0, 6),
        ("dedup", 6, 1, 0, 5),
    ]
    json.dumps(s)  # the CLI prints it


def test_header_counts(built):
    _, doc = built
    counts = doc[doc.index('id="counts"') : doc.index("<nav>")]
    cards = dict(
        (lab, val)
        for val, lab in re.findall(r'class="v">([^<]*)</div><div class="l">([^<]*)<', counts)
    )
    assert cards["inputs"] == "12"
    assert cards["kept (41.7 %)"] == "5"
    assert cards["dropped (41.7 %)"] == "5"
    assert cards["error (16.7 %)"] == "2"
    assert cards["wall time"] == "1 min 33 s"
    assert "<h1>test-curation</h1>" in doc
    assert "2024-05-01T12:00:00Z" in doc
    assert 'id="notes"' not in doc  # everything was there and consistent


def test_funnel_table_and_chart(built):
    _, doc = built
    sec = _section(doc, "funnel")
    rows = _table_rows(sec)
    assert [r[:5] for r in rows] == [
        ["read", "12", "0", "0", "12"],
        ["prefilter", "12", "3", "0", "9"],
        ["download", "9", "0", "2", "7"],
        ["decode", "7", "1", "0", "6"],
        ["shard", "6", "0", "0", "6"],
        ["dedup", "6", "1", "0", "5"],
    ]
    timings = {r[0]: r[6] for r in rows}
    assert timings["decode"] == "1.5 s"
    assert timings["download"] == "1 min 15 s"
    assert timings["read"] == "—"
    chart = re.findall(r'<img class="plot funnel-chart"[^>]*>', sec)
    assert len(chart) == 1
    assert _img_bytes(chart[0]).startswith(b"\x89PNG")


def test_every_reason_and_count_in_table(built):
    _, doc = built
    rows = _table_rows(_section(doc, "reasons"))
    assert rows == [
        ["prefilter", "aspect_ratio", "dropped", "3", "25.0 %"],
        ["download", "http_404", "error", "2", "16.7 %"],
        ["decode", "decode_error", "dropped", "1", "8.3 %"],
        ["dedup", "duplicate", "dropped", "1", "8.3 %"],
    ]


def test_histograms_for_scores_and_sizes(built):
    _, doc = built
    sec = _section(doc, "scores")
    cols = re.findall(r'<img class="plot hist"[^>]*data-column="([^"]+)"', sec)
    assert cols == ["aspect_ratio", "width", "height", "bytes"]
    tag = re.search(r'<img class="plot hist"[^>]*data-column="aspect_ratio"[^>]*>', sec).group(0)
    with Image.open(io.BytesIO(_img_bytes(tag))) as im:
        assert im.format == "PNG"
        assert im.width > 300 and im.height > 150
    # the all-null score of the second part is named, not plotted
    assert "All null, not plotted: aesthetic." in sec


def test_one_img_per_thumbnail(built):
    _, doc = built
    kept = re.findall(r'<img class="thumb kept"[^>]*>', doc)
    dropped = re.findall(r'<img class="thumb dropped"[^>]*>', doc)
    assert len(kept) == 5
    assert len(dropped) == 2
    # and nothing else: 1 funnel chart + 4 histograms
    assert doc.count("<img") == 5 + 2 + 1 + 4
    for tag in kept:
        with Image.open(io.BytesIO(_img_bytes(tag))) as im:
            assert im.format == "JPEG"
            assert max(im.size) <= 128 and min(im.size) >= 64
    # every kept key is captioned
    sheet = _section(doc, "kept")
    for i in range(5):
        assert f">{i:09d}</span>" in sheet
    assert "a cup of coffee" in sheet


def test_dropped_sheet_groups_by_reason(built):
    _, doc = built
    sec = _section(doc, "dropped")
    assert sec.count('<img class="thumb dropped"') == 2
    assert "/pool/img005.jpg" in sec and "/pool/img006.jpg" in sec
    nopics = re.search(r'<ul class="nopics">(.*?)</ul>', sec, re.S).group(1)
    items = re.findall(r"<li><b>([^<]+)</b>[^<]*</li>", nopics)
    assert items == ["http_404", "decode_error", "duplicate"]
    assert nopics.count("no picture (not decoded)") == 3
    assert "aspect_ratio" not in nopics


def test_caption_text_is_escaped(built):
    _, doc = built
    assert "<script" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in doc


def test_max_thumbs_caps_both_sheets(built, tmp_path):
    out, _ = built
    doc = report._render_html(out, max_thumbs=1)
    assert doc.count('<img class="thumb kept"') == 1
    assert doc.count('<img class="thumb dropped"') == 1


def test_missing_stats_json_still_gives_a_report(tmp_path):
    build_out(tmp_path)
    (tmp_path / "stats.json").unlink()
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    assert "stats.json is missing. Stage order comes from the ledger" in doc
    assert "wall time" in doc and "unknown" in doc
    # stage order falls back to first seen in the ledger
    rows = _table_rows(_section(doc, "funnel"))
    assert [r[0] for r in rows] == ["prefilter", "download", "decode", "dedup"]
    assert [r[4] for r in rows] == ["9", "7", "6", "5"]
    assert doc.count('<img class="thumb kept"') == 5
    # no thresholds, but the histogram is still there
    assert 'data-column="aspect_ratio"' in doc


def test_bare_folder_with_only_shards(tmp_path):
    build_out(tmp_path)
    for name in ("stats.json", "dataset.json"):
        (tmp_path / name).unlink()
    for part in (tmp_path / "ledger").iterdir():
        part.unlink()
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    assert "dataset.json is missing. Shards are found by listing shards/." in doc
    assert "ledger" in re.search(r'id="notes">(.*?)</ul>', doc, re.S).group(1)
    assert doc.count('<img class="thumb kept"') == 5  # shards found by listing shards/
    assert summarize_ledger(tmp_path)["inputs"] == 0


def test_mismatch_between_dataset_json_and_ledger_is_noted(tmp_path):
    build_out(tmp_path)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["samples"] = 6
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    assert "dataset.json lists 6 samples but the ledger has 5 kept rows." in doc


def test_failed_render_keeps_the_previous_report(tmp_path, monkeypatch):
    build_out(tmp_path)
    (tmp_path / "report.html").write_text("old report")

    def boom(out, max_thumbs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "_render_html", boom)
    with pytest.raises(RuntimeError):
        write_report(tmp_path)
    assert (tmp_path / "report.html").read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "dataset.json",
        "report.html",
        "stats.json",
    ]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    build_out(tmp_path)

    def bad_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", bad_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    assert not list(tmp_path.glob(".report-*"))


# --- a shard set balanced with k-means ---------------------------------------------------------
#
# 24 clusters, per-cluster cap 9. Sizes before selection, by cluster id (14..23 are empty):
# cluster 0 has 14 rows (9 kept, 5 dropped by the quota, all 5 with a stored thumbnail),
# cluster 3 has 11 (9 kept, 2 dropped without thumbnail); every other cluster keeps all it has.
# The largest 12 by size before (ties: lower id first) are 0, 3, 13, 2, 4, 8, 1, 5, 6, 7, 9, 10;
# 11 and 12 get no sheet, and their kept rows live alone in a fourth shard.

K = 24
CAP = 9
BEFORE = [14, 1, 3, 11, 2, 1, 1, 1, 2, 1, 1, 1, 1, 4] + [0] * 10
AFTER = [min(b, CAP) for b in BEFORE]
SHEET_CLUSTERS = [0, 3, 13, 2, 4, 8, 1, 5, 6, 7, 9, 10]
GARBAGE_CAPTION = "\x00\x01<b>bold</b> \ufffd\ufffd"

CLUSTER_SCHEMA = LEDGER_SCHEMA
for _name, _type in [
    ("aesthetic", pa.float32()),
    ("coarse_caption", pa.string()),
    ("clip_sim", pa.float32()),
    ("clip_sim_alt", pa.float32()),
    ("cluster", pa.int32()),
    ("cluster_dist", pa.float32()),
    ("embedding_row", pa.int32()),
]:
    CLUSTER_SCHEMA = CLUSTER_SCHEMA.append(pa.field(_name, _type))


def _solid(color: tuple[int, int, int]) -> bytes:
    return _jpeg(np.full((48, 64, 3), color, dtype=np.uint8))


def build_clustered_out(out: Path) -> dict:
    """A balanced shard set; returns the kept rows per cluster, in ledger order."""
    shard_paths = [f"shards/images-{i:06d}.tar" for i in range(4)]
    (out / "shards").mkdir(parents=True)
    rows: list[dict] = []
    kept_by_cluster: dict[int, list[dict]] = {}
    to_write: list[tuple[int, dict, bytes]] = []
    quota_thumb = _solid((200, 30, 30))
    i = 0
    for c, (before, after) in enumerate(zip(BEFORE, AFTER, strict=True)):
        color = ((c * 53) % 256, (c * 97) % 256, (c * 31) % 256)
        for j in range(before):
            common = dict(
                width=64,
                height=48,
                bytes=5_000 + i,
                aesthetic=5.0 + 0.01 * i,
                clip_sim=0.2 + 0.001 * i,
                clip_sim_alt=0.1 + 0.001 * i,
                coarse_caption=GARBAGE_CAPTION if (c, j) == (13, 0) else f"caption c{c} j{j}",
                cluster=c,
                # falls along ledger order, so the sheet (nearest first) reverses it
                cluster_dist=0.5 - 0.01 * j,
                embedding_row=i,
            )
            if j < after:
                key = f"{i:09d}"
                # clusters 11 and 12 (no sheet) alone in the last shard; the rest spread
                # over three shards against ledger order
                shard = 3 if c in (11, 12) else (2 - i % 3)
                row = _row(i, "kept", shard=shard_paths[shard], key=key, **common)
                kept_by_cluster.setdefault(c, []).append(row)
                to_write.append((shard, row, _solid(color)))
            else:
                # only cluster 0's quota drops kept a thumbnail
                thumb = {"thumb": quota_thumb} if c == 0 else {}
                row = _row(i, "dropped", stage="cluster", reason="cluster_quota", **thumb, **common)
            rows.append(row)
            i += 1
    # rows that never reached clustering: no cluster, no cluster_dist
    rows.append(_row(i, "dropped", stage="prefilter", reason="aspect_ratio", width=900, height=90))
    rows.append(_row(i + 1, "error", stage="download", reason="http_404", url="http://x/404"))

    writers = [wds.TarWriter(str(out / p)) for p in shard_paths]
    # write each shard in reverse ledger order: reading by key must not rely on order
    for shard, row, jpg in reversed(to_write):
        meta = {"key": row["key"], "text": f"text {row['key']}"}
        writers[shard].write({"__key__": row["key"], "jpg": jpg, "json": json.dumps(meta).encode()})
    for w in writers:
        w.close()

    (out / "ledger").mkdir()
    half = len(rows) // 2
    pq.write_table(
        pa.Table.from_pylist(rows[:half], schema=CLUSTER_SCHEMA), out / "ledger/part-000000.parquet"
    )
    pq.write_table(
        pa.Table.from_pylist(rows[half:], schema=CLUSTER_SCHEMA),
        out / "ledger/part-000001.parquet",
        row_group_size=5,
    )
    n_kept = sum(AFTER)
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "name": "clustered",
                "samples": n_kept,
                "shards": [
                    {"path": p, "samples": sum(1 for s, _, _ in to_write if s == n), "bytes": 1}
                    for n, p in enumerate(shard_paths)
                ],
            }
        )
    )
    (out / "stats.json").write_text(
        json.dumps(
            {
                "inputs": len(rows),
                "kept": n_kept,
                "dropped": len(rows) - n_kept - 1,
                "error": 1,
                "stages": ["read", "prefilter", "download", "cluster"],
                "thresholds": {"aesthetic": [4.5]},
                "clusters": {
                    "k": K,
                    "per_cluster": CAP,
                    "strategy": "closest",
                    "levels": [],
                    "sizes_before": BEFORE,
                    "sizes_after": AFTER,
                },
                "wall_s": 12.0,
            }
        )
    )
    return {"kept_by_cluster": kept_by_cluster}


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> tuple[Path, str, dict]:
    out = tmp_path_factory.mktemp("clustered")
    info = build_clustered_out(out)
    return out, write_report(out).read_text(encoding="utf-8"), info


def _cluster_blocks(sec: str) -> dict[int, str]:
    """The per-cluster sheet's HTML, by cluster id, in page order."""
    parts = re.split(r"<h3>cluster (\d+) ", sec)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_plain_shard_set_has_no_cluster_sections(built):
    _, doc = built
    assert 'id="clusters"' not in doc
    assert 'id="cluster-samples"' not in doc
    assert "thumb cluster" not in doc


def test_cluster_section_numbers(clustered):
    _, doc, _ = clustered
    checker = _TagChecker()
    checker.feed(doc)
    assert checker.errors == [] and checker.stack == []
    sec = _section(doc, "clusters")
    text = re.sub(r"<[^>]+>", "", sec)
    assert "k = 24 · strategy closest · per-cluster cap 9 · " in text
    assert "44 rows clustered, 37 selected, 10 empty cluster(s)." in text
    assert "✓ sizes_after matches the ledger" in text
    assert "✓ sizes_before matches the ledger" in text
    assert 'id="notes"' not in doc  # everything agrees
    assert len(re.findall(r'<img class="plot cluster-sizes"', sec)) == 1
    assert "The 20 largest clusters" in text
    rows = _table_rows(sec)
    # id, before, after, kept in ledger, dropped by cluster_quota; largest first, ties by id
    expected_ids = [0, 3, 13, 2, 4, 8, 1, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19]
    assert [int(r[0]) for r in rows] == expected_ids
    assert rows[0] == ["0", "14", "9", "9", "5"]
    assert rows[1] == ["3", "11", "9", "9", "2"]
    assert rows[2] == ["13", "4", "4", "4", "0"]
    assert rows[-1] == ["19", "0", "0", "0", "0"]
    # the nav links the two new sections, clusters after the reasons
    nav = re.search(r"<nav>(.*?)</nav>", doc).group(1)
    ids = re.findall(r'href="#([^"]+)"', nav)
    assert ids == ["funnel", "reasons", "clusters", "scores", "kept", "cluster-samples", "dropped"]


def test_cluster_sheets_show_the_largest_clusters(clustered):
    _, doc, info = clustered
    sec = _section(doc, "cluster-samples")
    blocks = _cluster_blocks(sec)
    assert list(blocks) == SHEET_CLUSTERS  # 12 clusters, largest first; not 11, 12
    kept_imgs = {c: b.count('<img class="thumb cluster-kept"') for c, b in blocks.items()}
    assert kept_imgs == {c: min(AFTER[c], 8) for c in SHEET_CLUSTERS}
    assert sec.count("<img") == sum(kept_imgs.values()) + 4 == 33 + 4
    dropped_imgs = {c: b.count('<img class="thumb cluster-dropped"') for c, b in blocks.items()}
    assert dropped_imgs == {c: 4 if c == 0 else 0 for c in SHEET_CLUSTERS}
    # quota-dropped rows beyond the pictured ones are named, not pictured
    assert "Other rows dropped by cluster_quota: 1 row, not pictured" in blocks[0]
    assert "Rows dropped by cluster_quota: 2 rows, not pictured" in blocks[3]
    assert "not pictured" not in blocks[13]
    assert "8 of 9 kept samples shown." in blocks[0]
    assert "— 14 before, 9 after, 5 dropped by cluster_quota</span>" in blocks[0]
    # the first 8 kept rows of cluster 0 in ledger order, nearest the centroid first
    first8 = info["kept_by_cluster"][0][:8]
    want = [r["key"] for r in sorted(first8, key=lambda r: r["cluster_dist"])]
    assert re.findall(r'<span class="k"[^>]*>(\d{9})</span>', blocks[0]) == want
    assert f"dist {first8[-1]['cluster_dist']:.4g}" in blocks[0]
    assert "caption c0 j7" in blocks[0]
    # every kept thumbnail decodes and is the cluster's colour, not another sample's
    for tag in re.findall(r'<img class="thumb cluster-kept"[^>]*>', blocks[13]):
        with Image.open(io.BytesIO(_img_bytes(tag))) as im:
            assert im.format == "JPEG"
            pixel = im.convert("RGB").getpixel((10, 10))
            want = ((13 * 53) % 256, (13 * 97) % 256, (13 * 31) % 256)
            assert all(abs(a - b) < 12 for a, b in zip(pixel, want, strict=True))


def test_coarse_caption_is_escaped_and_cleaned(clustered):
    _, doc, _ = clustered
    block = _cluster_blocks(_section(doc, "cluster-samples"))[13]
    assert "<b>bold" not in block
    assert "\x00" not in doc and "\x01" not in doc
    assert "\ufffd\ufffd&lt;b&gt;bold&lt;/b&gt; \ufffd\ufffd" in block


def test_int_cluster_columns_get_no_histogram(clustered):
    _, doc, _ = clustered
    cols = re.findall(r'data-column="([^"]+)"', _section(doc, "scores"))
    assert cols == [
        "aspect_ratio",
        "aesthetic",
        "clip_sim",
        "clip_sim_alt",
        "cluster_dist",
        "width",
        "height",
        "bytes",
    ]


def test_cluster_sheets_read_only_the_shards_they_need(clustered, monkeypatch):
    out, _, _ = clustered
    from manifests import report_data

    opened: list[tuple[str, frozenset | None]] = []
    real = report_data._shard_samples

    def spy(path, keys=None):
        opened.append((Path(path).name, None if keys is None else frozenset(keys)))
        return real(path, keys)

    monkeypatch.setattr(report_data, "_shard_samples", spy)
    report._render_html(out, max_thumbs=0)  # no general kept sheet: only cluster reads
    assert sorted(name for name, _ in opened) == [
        "images-000000.tar",
        "images-000001.tar",
        "images-000002.tar",
    ]
    assert all(keys for _, keys in opened)  # by key, never the whole shard
    assert sum(len(keys) for _, keys in opened) == 33


def test_cluster_size_mismatch_is_flagged(tmp_path):
    build_clustered_out(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    stats["clusters"]["sizes_after"][3] = 8
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    notes = re.search(r'id="notes">(.*?)</ul>', doc, re.S).group(1)
    assert (
        "stats.json&#x27;s clusters.sizes_after disagrees with the ledger&#x27;s kept rows in "
        "1 cluster(s), e.g. cluster 3: 8 in stats.json, 9 in the ledger."
    ) in notes
    assert "sizes_before" not in notes
    sec = _section(doc, "clusters")
    assert "✗ stats.json" in sec and "✓ sizes_before matches the ledger" in sec
    assert _table_rows(sec)[1] == ["3", "11", "8", "9", "2"]


def test_clusters_in_stats_without_cluster_column(tmp_path):
    build_out(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    stats["clusters"] = {"k": 2, "per_cluster": 2, "strategy": "random", "levels": []}
    stats["clusters"].update(sizes_before=[3, 2], sizes_after=[2, 2])
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    sec = _section(doc, "clusters")
    assert "k = 2" in sec and "5 rows clustered, 4 selected" in sec
    assert _table_rows(sec) == [["0", "3", "2"], ["1", "2", "2"]]
    assert "the ledger has no cluster column" in re.search(
        r'id="notes">(.*?)</ul>', doc, re.S
    ).group(1)
    assert "no samples per cluster" in _section(doc, "cluster-samples")
    assert "thumb cluster" not in doc


@pytest.mark.parametrize("k", [5, 60, 3000])
def test_cluster_size_plot_any_k(k):
    from manifests.report_plots import cluster_sizes_png

    rng = np.random.default_rng(0)
    before = sorted(rng.integers(0, 500, size=k).tolist(), reverse=True)
    after = [min(b, 100) for b in before]
    png = base64.b64decode(cluster_sizes_png(list(range(k)), before, after, 100))
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        assert im.width > 300 and im.height > 200


def test_cluster_sample_scan_stops_once_small_clusters_are_complete(clustered, monkeypatch):
    out, _, _ = clustered
    from manifests import report_data

    dataset = report_data.ledger_dataset(out)
    counts = report_data.cluster_counts(dataset)
    assert counts[1] == {"rows": 1, "kept": 1, "quota": 0}
    scanned: list[int] = []
    real = report_data._batches

    def spy(*args, **kw):
        for batch in real(*args, **kw):
            scanned.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(report_data, "_batches", spy)
    # cluster 1 has one kept row, in the first ledger part: knowing that, the scan ends there
    got = report_data.cluster_samples(out, dataset, [1], [], counts=counts)
    assert [s["key"] for s in got[1]["kept"]] == ["000000014"]
    with_counts = len(scanned)
    scanned.clear()
    got = report_data.cluster_samples(out, dataset, [1], [])
    assert [s["key"] for s in got[1]["kept"]] == ["000000014"]
    assert with_counts == 1 < len(scanned)
