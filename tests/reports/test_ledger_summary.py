"""The ledger's counts and stage funnel (``reports.ledger_summary``), worked out by hand from the
output folder ``tests.reports.shard_set`` builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reports.ledger_summary import summarize_ledger
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
