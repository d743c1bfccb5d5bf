"""The curated-image ``report.html`` of a plain shard set (``tests.reports.shard_set``): the
page kit's sections as the curate job puts them together, and how the page survives missing or
inconsistent files. Every number asserted is worked out by hand from the rows built there.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from curation import report
from curation.report import write_report
from reports.ledger_summary import summarize_ledger
from tests.reports.shard_set import (
    TagChecker,
    build_out,
    img_bytes,
    section,
    table_rows,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out")
    build_out(out)
    path = write_report(out)
    return out, path.read_text(encoding="utf-8")


def test_report_is_one_complete_html_file(built):
    out, doc = built
    assert (out / "report.html").is_file()
    assert doc.startswith("<!DOCTYPE html>")
    assert doc.rstrip().endswith("</html>")
    checker = TagChecker()
    checker.feed(doc)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'src="(?!data:)', doc)
    assert "<link" not in doc
    assert not list(out.glob(".report-*"))  # no temp file left behind


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
    sec = section(doc, "funnel")
    rows = table_rows(sec)
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
    assert img_bytes(chart[0]).startswith(b"\x89PNG")


def test_every_reason_and_count_in_table(built):
    _, doc = built
    rows = table_rows(section(doc, "reasons"))
    assert rows == [
        ["prefilter", "aspect_ratio", "dropped", "3", "25.0 %"],
        ["download", "http_404", "error", "2", "16.7 %"],
        ["decode", "decode_error", "dropped", "1", "8.3 %"],
        ["dedup", "duplicate", "dropped", "1", "8.3 %"],
    ]


def test_histograms_for_scores_and_sizes(built):
    _, doc = built
    sec = section(doc, "scores")
    cols = re.findall(r'<img class="plot hist"[^>]*data-column="([^"]+)"', sec)
    assert cols == ["aspect_ratio", "width", "height", "bytes"]
    tag = re.search(r'<img class="plot hist"[^>]*data-column="aspect_ratio"[^>]*>', sec).group(0)
    with Image.open(io.BytesIO(img_bytes(tag))) as im:
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
        with Image.open(io.BytesIO(img_bytes(tag))) as im:
            assert im.format == "JPEG"
            assert max(im.size) <= 128 and min(im.size) >= 64
    # every kept key is captioned
    sheet = section(doc, "kept")
    for i in range(5):
        assert f">{i:09d}</span>" in sheet
    assert "a cup of coffee" in sheet


def test_dropped_sheet_groups_by_reason(built):
    _, doc = built
    sec = section(doc, "dropped")
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
    rows = table_rows(section(doc, "funnel"))
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


def test_plain_shard_set_has_no_cluster_sections(built):
    _, doc = built
    assert 'id="clusters"' not in doc
    assert 'id="cluster-samples"' not in doc
    assert "thumb cluster" not in doc
