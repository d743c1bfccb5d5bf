"""Pre-download filters and pool-wide URL / phash dedup on a COYO-shaped URL parquet.

The scan (``curation.prefilter``) is checked against a plain Python reading of the same rules
on random pools cut into many partitions, buckets and files; the whole curate job is run on a
COYO-shaped parquet served from the loopback server, whose request log shows that no filtered
or duplicate row was ever requested.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import CurateConfig, InputConfig
from curation.curate import curate
from curation.prefilter import first_of_groups, prefilter_pool, value_hash
from curation.prefilter_config import PrefilterConfig
from curation.sources.url_parquet import list_parquet_partitions
from curation.stages.prefilter_marks import PrefilterMarks
from manifests.configs import ConfigError, load_config
from manifests.ledger import read_ledger
from manifests.schema import stable_id
from vl3data.sample_media import jpeg_bytes

RULES = [
    {"column": "aesthetic_score_laion_v2", "op": ">=", "value": 4.5},
    {"column": "watermark_score", "op": "<=", "value": 0.5, "missing": "drop"},
]


def random_pool(folder, n_files=2, rows=300, seed=0) -> list[dict]:
    """Parquets of COYO-shaped rows with repeated URLs and phashes, nulls and NaNs; returns the
    rows in pool order."""
    rng = random.Random(seed)
    everything = []
    for f in range(n_files):
        rows_f = []
        for _ in range(rows):
            img = rng.randrange(rows // 2)
            rows_f.append(
                {
                    "url": rng.choice([f"https://h{img % 3}.test/p/{img}.jpg", "", None])
                    if rng.random() < 0.05
                    else f"https://h{img % 3}.test/p/{img}.jpg",
                    "image_phash": None if rng.random() < 0.05 else f"{img % 90:016x}",
                    "aesthetic_score_laion_v2": rng.choice([float("nan"), None, 3.0])
                    if rng.random() < 0.1
                    else rng.uniform(3.5, 7),
                    "watermark_score": None if rng.random() < 0.05 else rng.random(),
                }
            )
        pq.write_table(pa.Table.from_pylist(rows_f), folder / f"part{f}.parquet", row_group_size=70)
        everything += rows_f
    return everything


def reference(rows: list[dict], urls_too=True, phash=True) -> dict[int, tuple[str, int | None]]:
    """Position -> (reason, kept position) by the rules read one row at a time."""
    out: dict[int, tuple[str, int | None]] = {}
    urls: dict[str, int] = {}
    phashes: dict[str, int] = {}
    for i, r in enumerate(rows):
        a, w = r["aesthetic_score_laion_v2"], r["watermark_score"]
        if a is not None and not math.isnan(a) and a < 4.5:
            out[i] = ("aesthetic_score_laion_v2<4.5", None)
        elif w is None:
            out[i] = ("watermark_score:missing", None)
        elif w > 0.5:
            out[i] = ("watermark_score>0.5", None)
        elif urls_too and r["url"] and r["url"] in urls:
            out[i] = ("duplicate:url", urls[r["url"]])
        else:
            if r["url"]:
                urls[r["url"]] = i
            p = r["image_phash"] if phash else None
            if p is not None and p in phashes:
                out[i] = ("duplicate:image_phash", phashes[p])
            elif p is not None:
                phashes[p] = i
    return out


@pytest.mark.parametrize(
    "bucket_rows,partition_size,urls_too,phash",
    [(1, 7, True, True), (50, 33, True, True), (10_000, 1000, True, True), (40, 50, False, True),
     (40, 50, True, False), (40, 50, False, False)],
)  # fmt: skip
def test_scan_matches_a_row_by_row_reading(tmp_path, bucket_rows, partition_size, urls_too, phash):
    rows = random_pool(tmp_path)
    parts = list_parquet_partitions(
        InputConfig(kind="url_parquet", path=str(tmp_path), partition_size=partition_size)
    )
    cfg = PrefilterConfig(
        rules=[dict(r) for r in RULES],
        dedup_url=urls_too,
        phash_column="image_phash" if phash else None,
        bucket_rows=bucket_rows,
        batch_rows=64,
    )
    result = prefilter_pool(parts, "url", cfg, tmp_path / "work")
    want = reference(rows, urls_too, phash)
    starts = np.cumsum([0] + [p.spec["length"] for p in parts])
    got: dict[int, tuple[str, int | None]] = {}
    marks = PrefilterMarks(lambda p: None, tmp_path / "work", result)
    for p in parts:
        for d in marks.decisions(p.index).to_pylist():
            kept = None
            if d["dup_file"] is not None:  # back to a position: file, row group, offset
                f = result["files"][d["dup_file"]]
                kept = next(
                    int(starts[q.index]) + d["dup_offset"] - q.spec["offset"]
                    for q in parts
                    if q.spec["file"] == f
                    and q.spec["row_group"] == d["dup_row_group"]
                    and q.spec["offset"] <= d["dup_offset"] < q.spec["offset"] + q.spec["length"]
                )
            got[int(starts[p.index]) + d["row"]] = (result["reasons"][d["code"]], kept)
    assert got == want
    kinds = {"duplicate:url"} if urls_too else set()
    kinds |= {"duplicate:image_phash"} if phash else set()
    assert {k for k, _ in want.values()} & {"duplicate:url", "duplicate:image_phash"} == kinds
    assert sum(result["counts"].values()) == len(want)
    assert prefilter_pool(parts, "url", cfg, tmp_path / "work") == result  # reused as it is


def test_values_alike_at_both_ends_are_told_apart():
    middle = ["a" * 40, "b" * 40, "a" * 40]  # the same length, head and tail: one hash
    urls = pa.array([f"https://x.test/{'p' * 30}{m}{'q' * 80}.jpg" for m in middle])
    h = value_hash(urls)
    assert h[0] == h[1] == h[2]
    assert first_of_groups(urls, h).tolist() == [0, 1, 0]
    chunked = pa.chunked_array([urls[:2], urls[2:]])  # a bucket read back from its spill file
    assert first_of_groups(chunked, value_hash(chunked)).tolist() == [0, 1, 0]
    assert value_hash(pa.array(["a", "b"]))[0] != value_hash(pa.array(["a", "b"]))[1]


def coyo_config(path, out, extra=()) -> CurateConfig:
    return load_config(
        CurateConfig,
        "configs/curate_coyo_cluster.yaml",
        [
            f"input.path={path}",
            f"output={out}",
            "ray.address=null",
            "input.partition_size=3",
            "filters.min_side=32",
            "download.allow_addresses=[127.0.0.1/32]",
            "download.retries=0",
            *extra,
        ],
    )


def test_filtered_and_duplicate_rows_are_never_requested(tmp_path, photos, image_server, ray_local):
    server = image_server
    names = ["astronaut", "chelsea", "coffee", "rocket", "china", "flower"]
    for name in names:
        server.add_image(f"{name}.jpg", jpeg_bytes(photos[name][:200, :200]), "image/jpeg")
    good = {
        "aesthetic_score_laion_v2": 6.0,
        "watermark_score": 0.1,
        "nsfw_score_opennsfw2": 0.01,
        "nsfw_score_gantman": 0.01,
        "clip_similarity_vitl14": 0.3,
        "clip_similarity_vitb32": 0.3,
    }
    plan = [  # (text, image, phash, score overrides, status, reason, duplicate of)
        ("a", "astronaut", "aa", {}, "kept", None, None),
        ("ugly", "chelsea", "bb", {"aesthetic_score_laion_v2": 3.0}, "dropped",
         "aesthetic_score_laion_v2<4.5", None),
        ("marked", "coffee", "cc", {"watermark_score": 0.9}, "dropped", "watermark_score>0.5",
         None),
        ("b", "rocket", "dd", {}, "kept", None, None),
        ("nsfw", "china", "ee", {"nsfw_score_opennsfw2": 0.8}, "dropped",
         "nsfw_score_opennsfw2>0.3", None),
        ("a again", "astronaut", "aa", {}, "dropped", "duplicate:url", "a"),  # next partition
        ("no sim", "flower", "ff", {"clip_similarity_vitl14": None}, "kept", None, None),
        ("b re-uploaded", "rocket2", "dd", {}, "dropped", "duplicate:image_phash", "b"),
        ("a third time", "astronaut", "aa", {}, "dropped", "duplicate:url", "a"),
    ]  # fmt: skip
    rows = []
    for text, image, phash, scores, *_ in plan:
        rows.append(
            {
                "url": server.url(f"/img/{image}.jpg"),
                "text": text,
                "width": 200,
                "height": 200,
                "image_phash": f"{phash:0>16}",
                **{**good, **scores},
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "coyo.parquet")
    out = tmp_path / "out"
    doc = curate(coyo_config(tmp_path / "coyo.parquet", out), progress=False)

    ledger = {r["text"]: r for r in read_ledger(out).to_pylist()}
    assert len(ledger) == len(plan)
    for text, _, _, _, status, reason, dup in plan:
        row = ledger[text]
        assert (row["status"], row["reason"]) == (status, reason), text
        if status == "dropped":
            assert row["stage"] == "prefilter", text
        assert row["duplicate_of"] == (ledger[dup]["id"] if dup else None), text
    # the request log: filtered and duplicate rows were never requested
    assert server.hits["/img/astronaut.jpg"] == 1
    assert server.hits["/img/rocket.jpg"] == 1 and server.hits["/img/flower.jpg"] == 1
    for never in ("chelsea", "coffee", "china", "rocket2"):
        assert server.hits.get(f"/img/{never}.jpg", 0) == 0, never
    assert doc["samples"] == 3
    assert json.loads((out / "stats.json").read_text())["prefilter"] == {
        "aesthetic_score_laion_v2<4.5": 1,
        "watermark_score>0.5": 1,
        "nsfw_score_opennsfw2>0.3": 1,
        "duplicate:url": 2,
        "duplicate:image_phash": 1,
    }
    first = ledger["a"]
    assert first["id"] == stable_id(first["source"], "coyo.parquet#0:0")


@pytest.mark.parametrize(
    "override,field",
    [
        (
            "prefilter.rules=[{column: aesthetic, op: '>=', value: 4.5}]",
            "prefilter.rules[0].column",
        ),
        ("prefilter.rules=[{column: text, op: '>=', value: 4.5}]", "prefilter.rules[0].column"),
        ("prefilter.phash_column=phash", "prefilter.phash_column"),
    ],
)
def test_a_column_the_pool_lacks_fails_before_any_work(tmp_path, override, field):
    table = pa.table({"url": ["http://127.0.0.1:9/x.jpg"], "text": ["x"], "image_phash": ["0"]})
    pq.write_table(table, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        curate(coyo_config(tmp_path / "pool.parquet", out, ["prefilter.rules=[]", override]))
    assert err.value.field == field
    assert not out.exists()


@pytest.mark.parametrize(
    "override,field",
    [
        ("prefilter.rules=[{column: x, op: '=>', value: 1}]", "prefilter.rules[0].op"),
        ("prefilter.rules=[{column: x, missing: maybe}]", "prefilter.rules[0].missing"),
        ("prefilter.rules=[{op: '<'}]", "prefilter.rules[0].column"),
        ("prefilter.rules=[{column: x, value: high}]", "prefilter.rules[0].value"),
        ("prefilter.bucket_rows=0", "prefilter.bucket_rows"),
        ("input.kind=folder", "prefilter"),
    ],
)
def test_bad_prefilter_config_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, "configs/curate_coyo_cluster.yaml", [override])
    assert err.value.field == field


def test_an_interrupted_scan_is_redone_whole(tmp_path):
    random_pool(tmp_path, n_files=1, rows=200)
    parts = list_parquet_partitions(
        InputConfig(kind="url_parquet", path=str(tmp_path), partition_size=30)
    )
    cfg = PrefilterConfig(
        rules=[dict(r) for r in RULES], dedup_url=True, phash_column="image_phash", bucket_rows=40
    )
    clean = prefilter_pool(parts, "url", cfg, tmp_path / "clean")
    work = tmp_path / "killed"  # what a kill -9 mid-scan leaves: spill files, a stray range
    (work / "url").mkdir(parents=True)
    (work / "url" / "b00000.arrow").write_bytes(b"half a stream")
    (work / "ranges").mkdir()
    (work / "ranges" / "r000000.arrow").write_bytes(b"\x00" * 10)
    assert prefilter_pool(parts, "url", cfg, work) == clean
    for p in parts:
        got = PrefilterMarks(lambda q: None, work, clean).decisions(p.index)
        want = PrefilterMarks(lambda q: None, tmp_path / "clean", clean).decisions(p.index)
        assert got.to_pylist() == want.to_pylist()
