"""The cluster sections of the curated-image report (``curation.report_clusters``) and the
numbers behind them (``curation.report_cluster_data``), on a shard set balanced with k-means.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curation import report, report_cluster_data
from curation.report import write_report
from curation.report_clusters import cluster_sizes_png
from reports.ledger_summary import ledger_dataset
from tests.reports.shard_set import (
    LEDGER_SCHEMA,
    TagChecker,
    build_out,
    img_bytes,
    jpeg,
    ledger_row,
    section,
    table_rows,
)

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
    return jpeg(np.full((48, 64, 3), color, dtype=np.uint8))


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
                row = ledger_row(i, "kept", shard=shard_paths[shard], key=key, **common)
                kept_by_cluster.setdefault(c, []).append(row)
                to_write.append((shard, row, _solid(color)))
            else:
                # only cluster 0's quota drops kept a thumbnail
                thumb = {"thumb": quota_thumb} if c == 0 else {}
                row = ledger_row(
                    i, "dropped", stage="cluster", reason="cluster_quota", **thumb, **common
                )
            rows.append(row)
            i += 1
    # rows that never reached clustering: no cluster, no cluster_dist
    rows.append(
        ledger_row(i, "dropped", stage="prefilter", reason="aspect_ratio", width=900, height=90)
    )
    rows.append(ledger_row(i + 1, "error", stage="download", reason="http_404", url="http://x/404"))

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


def test_cluster_section_numbers(clustered):
    _, doc, _ = clustered
    checker = TagChecker()
    checker.feed(doc)
    assert checker.errors == [] and checker.stack == []
    sec = section(doc, "clusters")
    text = re.sub(r"<[^>]+>", "", sec)
    assert "k = 24 · strategy closest · per-cluster cap 9 · " in text
    assert "44 rows clustered, 37 selected, 10 empty cluster(s)." in text
    assert "✓ sizes_after matches the ledger" in text
    assert "✓ sizes_before matches the ledger" in text
    assert 'id="notes"' not in doc  # everything agrees
    assert len(re.findall(r'<img class="plot cluster-sizes"', sec)) == 1
    assert "The 20 largest clusters" in text
    rows = table_rows(sec)
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
    assert ids == [
        "funnel",
        "reasons",
        "clusters",
        "scores",
        "thresholds",
        "kept",
        "cluster-samples",
        "dropped",
    ]


def test_cluster_sheets_show_the_largest_clusters(clustered):
    _, doc, info = clustered
    sec = section(doc, "cluster-samples")
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
        with Image.open(io.BytesIO(img_bytes(tag))) as im:
            assert im.format == "JPEG"
            pixel = im.convert("RGB").getpixel((10, 10))
            want = ((13 * 53) % 256, (13 * 97) % 256, (13 * 31) % 256)
            assert all(abs(a - b) < 12 for a, b in zip(pixel, want, strict=True))


def test_coarse_caption_is_escaped_and_cleaned(clustered):
    _, doc, _ = clustered
    block = _cluster_blocks(section(doc, "cluster-samples"))[13]
    assert "<b>bold" not in block
    assert "\x00" not in doc and "\x01" not in doc
    assert "\ufffd\ufffd&lt;b&gt;bold&lt;/b&gt; \ufffd\ufffd" in block


def test_int_cluster_columns_get_no_histogram(clustered):
    _, doc, _ = clustered
    cols = re.findall(r'data-column="([^"]+)"', section(doc, "scores"))
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
    opened: list[tuple[str, frozenset | None]] = []
    real = report_cluster_data.shard_samples

    def spy(path, keys=None):
        opened.append((Path(path).name, None if keys is None else frozenset(keys)))
        return real(path, keys)

    monkeypatch.setattr(report_cluster_data, "shard_samples", spy)
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
    sec = section(doc, "clusters")
    assert "✗ stats.json" in sec and "✓ sizes_before matches the ledger" in sec
    assert table_rows(sec)[1] == ["3", "11", "8", "9", "2"]


def test_clusters_in_stats_without_cluster_column(tmp_path):
    build_out(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    stats["clusters"] = {"k": 2, "per_cluster": 2, "strategy": "random", "levels": []}
    stats["clusters"].update(sizes_before=[3, 2], sizes_after=[2, 2])
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    doc = write_report(tmp_path).read_text(encoding="utf-8")
    sec = section(doc, "clusters")
    assert "k = 2" in sec and "5 rows clustered, 4 selected" in sec
    assert table_rows(sec) == [["0", "3", "2"], ["1", "2", "2"]]
    assert "the ledger has no cluster column" in re.search(
        r'id="notes">(.*?)</ul>', doc, re.S
    ).group(1)
    assert "no samples per cluster" in section(doc, "cluster-samples")
    assert "thumb cluster" not in doc


@pytest.mark.parametrize("k", [5, 60, 3000])
def test_cluster_size_plot_any_k(k):
    rng = np.random.default_rng(0)
    before = sorted(rng.integers(0, 500, size=k).tolist(), reverse=True)
    after = [min(b, 100) for b in before]
    png = base64.b64decode(cluster_sizes_png(list(range(k)), before, after, 100))
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        assert im.width > 300 and im.height > 200


def test_cluster_sample_scan_stops_once_small_clusters_are_complete(clustered, monkeypatch):
    out, _, _ = clustered
    dataset = ledger_dataset(out)
    counts = report_cluster_data.cluster_counts(dataset)
    assert counts[1] == {"rows": 1, "kept": 1, "quota": 0}
    scanned: list[int] = []
    real = report_cluster_data.scan_batches

    def spy(*args, **kw):
        for batch in real(*args, **kw):
            scanned.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(report_cluster_data, "scan_batches", spy)
    # cluster 1 has one kept row, in the first ledger part: knowing that, the scan ends there
    got = report_cluster_data.cluster_samples(out, dataset, [1], [], counts=counts)
    assert [s["key"] for s in got[1]["kept"]] == ["000000014"]
    with_counts = len(scanned)
    scanned.clear()
    got = report_cluster_data.cluster_samples(out, dataset, [1], [])
    assert [s["key"] for s in got[1]["kept"]] == ["000000014"]
    assert with_counts == 1 < len(scanned)
