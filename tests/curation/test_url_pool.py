"""A COYO-style URL parquet curated end to end against a loopback HTTP server.

Declared extreme shapes are dropped before download (the server never sees those URLs); every
URL, good or broken, ends up in the ledger once, and the run ends in bounded time.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config
from manifests.ledger import read_ledger
from vl3data.sample_media import jpeg_bytes


def test_coyo_parquet_end_to_end(tmp_path, photos, image_server, ray_local):
    server = image_server
    rows = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        arr = photos[name]
        server.add_image(f"{name}.jpg", jpeg_bytes(arr), "image/jpeg")
        rows.append(
            (server.url(f"/img/{name}.jpg"), name, arr.shape[1], arr.shape[0], "kept", None)
        )
    server.add_image("strip.jpg", jpeg_bytes(photos["china"][200:260]), "image/jpeg")
    rows += [
        # declared 4000x300: the prefilter drops it, so it is never requested
        (server.url("/img/astronaut.jpg") + "?wide", "wide", 4000, 300, "dropped", "aspect_ratio"),
        # declared sizes missing: downloaded, then the real shape (640x60) drops it
        (server.url("/img/strip.jpg"), "strip", None, None, "dropped", "aspect_ratio"),
        (server.url("/404"), "gone", 640, 480, "error", "http_404"),
        (server.url("/500"), "broken", 640, 480, "error", "http_500"),
        (server.url("/stall"), "stalled", 640, 480, "error", "timeout"),
        (server.url("/loop"), "loop", 640, 480, "error", "too_many_redirects"),
        (server.url("/html"), "html", 640, 480, "error", "not_an_image"),
        (server.url("/big"), "big", 640, 480, "error", "too_large"),
        ("ftp://127.0.0.1/x.jpg", "ftp", 640, 480, "error", "bad_url_scheme"),
        (server.url("/redirect-ok/coffee.jpg"), "moved", 600, 400, "kept", None),
    ]
    table = pa.table(
        {
            "url": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "width": pa.array([r[2] for r in rows], pa.int64()),
            "height": pa.array([r[3] for r in rows], pa.int64()),
            "license": ["cc-by"] * len(rows),  # an extra column: carried through into meta
        }
    )
    pq.write_table(table, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    cfg = load_config(
        CurateConfig,
        "configs/curate_coyo_cluster.yaml",
        [
            f"input.path={tmp_path / 'pool.parquet'}",
            f"output={out}",
            "ray.address=null",
            "prefilter.rules=[]",  # this pool has none of COYO's score and phash columns
            "prefilter.phash_column=null",
            "dedup.exact=false",  # 'moved' is coffee again, and kept here
            "dedup.phash=false",
            "input.partition_size=5",
            "filters.min_side=32",
            "decode.store_max_side=null",
            "download.connect_timeout_s=2",
            "download.read_timeout_s=1",
            "download.total_timeout_s=3",
            "download.retries=1",
            "download.allow_addresses=[127.0.0.1/32]",
            "download.backoff_s=0.05",
            f"download.max_bytes={server.big_bytes // 2}",
        ],
    )
    t0 = time.time()
    doc = curate(cfg, progress=False)
    assert time.time() - t0 < 120

    ledger = read_ledger(out).to_pylist()
    assert len(ledger) == len(rows)
    by_text = {r["text"]: r for r in ledger}
    for url, text, *_, status, reason in rows:
        got = by_text[text]
        assert got["url"] == url and (got["status"], got["reason"]) == (status, reason), text
    assert by_text["wide"]["stage"] == "prefilter"
    assert server.hits.get("/img/astronaut.jpg", 0) == 1  # the '?wide' copy was never fetched
    assert by_text["strip"]["stage"] == "shape"
    assert json.loads(by_text["coffee"]["meta"]) == {"license": "cc-by"}
    assert doc["samples"] == 5
