"""The ledger's counts and stage funnel (``reports.ledger_summary``), worked out by hand from the
output folder ``tests.reports.shard_set`` builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from manifests.ledger import SUMMARY_KEY, part_summary, read_ledger, score_columns, write_part
from reports.histograms import histograms
from reports.ledger_summary import ledger_files, read_footers, summarize_ledger, unified_schema
from tests.reports.shard_set import STAGES, build_out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, None]:
    out = tmp_path_factory.mktemp("out")
    build_out(out)
    return out, None


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


@pytest.fixture(scope="module")
def rewritten(built, tmp_path_factory) -> Path:
    """The fixture's parts written again as a job writes them: each with its footer summary."""
    out, _ = built
    copy = tmp_path_factory.mktemp("footers")
    for f in ledger_files(out):
        write_part(copy, int(f.stem.split("-")[1]), pq.read_table(f))
    shutil.copy(out / "stats.json", copy / "stats.json")
    return copy


def test_a_written_part_carries_its_summary(rewritten):
    files = ledger_files(rewritten)
    assert len(files) == 2
    assert all(SUMMARY_KEY in (pq.read_schema(f).metadata or {}) for f in files)
    # a reader of the whole ledger does not see one part's summary as the ledger's
    assert SUMMARY_KEY not in (read_ledger(rewritten).schema.metadata or {})


def test_footer_summaries_give_what_the_rows_give(built, rewritten, monkeypatch):
    out, _ = built  # the fixture's parts have no summary: they are counted from their rows
    from_rows = summarize_ledger(out)
    # with summaries in the footers, counting and histograms open no part's rows
    import manifests.ledger

    def no_rows(*a, **k):
        raise AssertionError("a part's rows were read")

    monkeypatch.setattr(manifests.ledger.pq, "read_table", no_rows)
    monkeypatch.setattr(pq, "ParquetFile", no_rows)
    footers = read_footers(rewritten)
    assert summarize_ledger(rewritten, footers) == from_rows
    columns = score_columns(unified_schema(footers.parts))
    assert "width" in columns and "aesthetic" in columns  # the second part's, all null
    hists = histograms(footers, columns)
    monkeypatch.undo()

    assert "aesthetic" not in hists  # nothing finite to draw
    # bins and counts as numpy gives them over every row of the ledger, with those edges
    table = read_ledger(out)
    kept = np.array([s == "kept" for s in table.column("status").to_pylist()])
    for col in ("width", "height", "bytes"):
        v = np.array([np.nan if x is None else x for x in table.column(col).to_pylist()], float)
        ok = np.isfinite(v)
        h = hists[col]
        assert h["n"] == ok.sum() > 0
        edges = h["edges"]
        assert edges[0] <= v[ok].min() and v[ok].max() < edges[-1]
        assert np.all(np.diff(edges) > 0)
        assert h["kept"].tolist() == np.histogram(v[ok & kept], edges)[0].tolist()
        assert h["other"].tolist() == np.histogram(v[ok & ~kept], edges)[0].tolist()
        assert h["kept"].sum() + h["other"].sum() == ok.sum()
    # the same histograms from footers as counted from the rows
    counted = histograms(read_footers(out), columns)
    for col, h in hists.items():
        assert h["edges"].tolist() == counted[col]["edges"].tolist()
        assert h["kept"].tolist() == counted[col]["kept"].tolist()
    # only the part holding a dropped row's thumbnail is opened for the contact sheet
    thumbs = footers.with_thumbs()
    held = [
        f
        for f in ledger_files(out)
        if pq.read_table(f, columns=["thumb", "status"])
        .filter(pc.is_valid(pc.field("thumb")) & (pc.field("status") != "kept"))
        .num_rows
    ]
    assert [p.path.name for p in thumbs] == [f.name for f in held] and held


def _ledger_of(tmp_path: Path, parts: list[dict]) -> Path:
    """An output folder whose ledger parts hold ``parts`` (columns), written as a job does."""
    for i, cols in enumerate(parts):
        write_part(tmp_path, i, pa.table(cols))
    return tmp_path


def test_log_bins_for_a_column_spanning_orders_of_magnitude(tmp_path):
    rng = np.random.default_rng(7)
    parts = []
    for i in range(3):
        n = 200
        parts.append(
            {
                "status": rng.choice(["kept", "dropped"], n).tolist(),
                "stage": [None] * n,
                "reason": [None] * n,
                # bytes over 4 orders of magnitude, a score in [0, 1), a third part negative
                "bytes": (10 ** rng.uniform(2 + i, 4 + i, n)).astype(np.int64),
                "clip_score": rng.uniform(-1.0 if i == 2 else 0.0, 1.0, n),
            }
        )
    footers = read_footers(_ledger_of(tmp_path, parts))
    hists = histograms(footers, ["clip_score", "bytes"])
    status = np.concatenate([p["status"] for p in parts])
    kept = status == "kept"
    b = hists["bytes"]
    assert b["log"] and len(b["edges"]) - 1 <= 64
    v = np.concatenate([p["bytes"] for p in parts]).astype(float)
    assert b["kept"].tolist() == np.histogram(v[kept], b["edges"])[0].tolist()
    assert b["other"].tolist() == np.histogram(v[~kept], b["edges"])[0].tolist()
    c = hists["clip_score"]
    assert not c["log"]  # a part had values <= 0: no log form, whatever the span
    assert "log" not in footers.grids["clip_score"]
    v = np.concatenate([p["clip_score"] for p in parts])
    assert c["kept"].tolist() == np.histogram(v[kept], c["edges"])[0].tolist()
    assert c["edges"][0] <= -0.99 and c["edges"][-1] > v.max()


def test_one_value_draws_as_a_visible_bin(tmp_path):
    n = 5
    cols = {"status": ["kept"] * n, "stage": [None] * n, "reason": [None] * n}
    footers = read_footers(_ledger_of(tmp_path, [{**cols, "width": [640] * n}]))
    h = histograms(footers, ["width"])["width"]
    assert h["kept"].tolist() == [n]
    lo, hi = h["edges"]
    assert lo <= 640 < hi and hi - lo >= 640 / 64  # not a float's width


def test_part_summary_counts_ranges_and_thumbs():
    rows = pa.table(
        {
            "status": ["dropped", "kept", "error", "dropped", "kept"],
            "stage": ["decode", None, "download", "decode", None],
            "reason": ["decode_error", None, "http_404", "decode_error", None],
            "score": [0.5, float("nan"), float("inf"), -2.0, None],
            "width": [10, None, 30, 40, 5],
            "thumb": [b"j", b"k", None, None, None],
        }
    )
    s = part_summary(rows)
    # groups in the order first seen, which is what a funnel's "first seen" order is made of
    assert s["counts"] == [
        ["dropped", "decode", "decode_error", 2],
        ["kept", None, None, 2],
        ["error", "download", "http_404", 1],
    ]
    assert s["ranges"] == {"score": [-2.0, 0.5, 2], "width": [5, 40, 4]}  # finite values only
    assert s["thumbs"] == {"decode_error": 1}  # a kept row's thumbnail is not a dropped picture
    # score and size columns get grid counts (kept / not kept) of their finite values; a log
    # form only where all are positive
    assert set(s["grids"]) == {"score", "width"}
    assert set(s["grids"]["score"]) == {"lin"} and set(s["grids"]["width"]) == {"lin", "log"}
    g = s["grids"]["width"]["lin"]
    assert sum(g["kept"]) == 1 and sum(g["other"]) == 3  # 5 kept; 10, 30, 40 not
    json.dumps(s)  # it goes in the footer


@pytest.mark.parametrize(
    "footer",
    [
        b"not json {",
        b'{"counts": 3, "ranges": {}, "thumbs": {}}',
        b'{"counts": [["kept", null, null, "many"]], "ranges": {}, "thumbs": {}}',
        b'{"counts": [], "ranges": {"width": [1, "x", 2]}, "thumbs": {}}',
        b'{"counts": [], "ranges": {"width": [NaN, 1, 2]}, "thumbs": {}}',
        b"[]",
        # a summary written before summaries had grids: counted again, histograms included
        b'{"counts": [], "ranges": {}, "thumbs": {}}',
        # grids that are not grids, or not this part's
        b'{"counts": [], "ranges": {}, "thumbs": {}, "grids": {"width": {"lin": {}}}}',
        b'{"counts": [], "ranges": {"width": [1, 9, 2]}, "thumbs": {}, "grids": {"width": '
        b'{"lin": {"e": 0, "i0": 1, "kept": [1, -1], "other": [0, 0]}, "log": '
        b'{"e": 0, "i0": 0, "kept": [1], "other": [0]}}}}',
        b'{"counts": [], "ranges": {"width": [1, 9, 2]}, "thumbs": {}, "grids": {"width": '
        b'{"lin": {"e": 0, "i0": 1, "kept": [1, 1], "other": [0, 0]}}}}',
    ],
)
def test_a_footer_that_is_not_a_summary_is_counted_from_the_rows(built, tmp_path, footer):
    """A damaged or hand-made part must not cost the report its counts: its rows are read."""
    out, _ = built
    copy = tmp_path / "out"
    for f in ledger_files(out):
        t = pq.read_table(f)
        (copy / "ledger").mkdir(parents=True, exist_ok=True)
        pq.write_table(t.replace_schema_metadata({SUMMARY_KEY: footer}), copy / "ledger" / f.name)
    shutil.copy(out / "stats.json", copy / "stats.json")
    assert summarize_ledger(copy) == summarize_ledger(out)
    mine, theirs = read_footers(copy), read_footers(out)
    assert mine.grids.keys() == theirs.grids.keys()
    for col, g in mine.grids.items():
        assert g.keys() == theirs.grids[col].keys()
        assert all(g[k].kept.tolist() == theirs.grids[col][k].kept.tolist() for k in g)
