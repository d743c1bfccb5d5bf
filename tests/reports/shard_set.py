"""A small but real output folder of a plain (unbalanced) image shard set, and helpers that
read a rendered report back, for the tests of the reports and of the jobs that write them.

The folder holds real photos (scikit-image's sample images) in real WebDataset tars, a ledger
split over two parquet parts (the second adds an all-null score column, as a later stage
would), and stats.json with thresholds. Every number the tests assert is worked out by hand
from the rows built here, so a wrong count in a report fails a test.
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
import webdataset as wds
from PIL import Image
from skimage import data as skdata

from manifests.schema import BASE_SCHEMA, HEAVY_COLUMNS, LEDGER_WRITE_FIELDS

SCRIPT_TEXT = "a cat <script>alert(1)</script> & friends"
STAGES = ["read", "prefilter", "download", "decode", "shard"]

LEDGER_SCHEMA = pa.schema(
    [f for f in BASE_SCHEMA if f.name not in HEAVY_COLUMNS]
    + LEDGER_WRITE_FIELDS
    + [pa.field("aspect_ratio", pa.float64())]
)


def jpeg(array, size: tuple[int, int] | None = None) -> bytes:
    img = Image.fromarray(array).convert("RGB")
    if size:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def ledger_row(i: int, status: str, **kw) -> dict:
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
    wide = jpeg(np.asarray(strip))
    # first-seen order of non-kept stages: prefilter, download, decode, dedup
    for i, (name, text) in enumerate(kept_specs):
        shard_idx = 0 if i < 3 else 1
        key = f"{i:09d}"
        jpg = jpeg(photos[name])
        h, w = photos[name].shape[:2]
        meta = {"key": key, "text": text, "width": w, "height": h}
        writers[shard_idx].write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
        keys.append(key)
        rows.append(
            ledger_row(
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
        ledger_row(
            5,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=1200,
            height=200,
            bytes=80_000,
            thumb=wide,
        ),
        ledger_row(
            6,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=1500,
            height=250,
            bytes=95_000,
            thumb=wide,
        ),
        ledger_row(
            7,
            "dropped",
            stage="prefilter",
            reason="aspect_ratio",
            width=100,
            height=800,
            bytes=30_000,
        ),
        ledger_row(8, "error", stage="download", reason="http_404", url="http://x/404a"),
        ledger_row(9, "error", stage="download", reason="http_404", url="http://x/404b"),
        ledger_row(
            10, "dropped", stage="decode", reason="decode_error", width=640, height=480, bytes=1_234
        ),
        ledger_row(
            11, "dropped", stage="dedup", reason="duplicate", width=512, height=512, bytes=50_000
        ),
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


# --- helpers ---------------------------------------------------------------------------------

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}


class TagChecker(HTMLParser):
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


def section(doc: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', doc, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def table_rows(fragment: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", fragment, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def img_bytes(tag: str) -> bytes:
    return base64.b64decode(re.search(r'src="data:image/\w+;base64,([^"]+)"', tag).group(1))
