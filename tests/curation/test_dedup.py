"""Deduplication after decoding: exact (decoded pixels), perceptual (pHash, Hamming) and
semantic (SemDeDup inside clusters), pool-wide.

A folder pool of real photos with planted copies (a lossless PNG of a JPEG, a re-encode, a
resize, a crop of a few pixels), the copies in other partitions than their originals: exactly
the planted copies go, each naming its original in ``duplicate_of``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from curation.config import CurateConfig
from curation.curate import curate
from curation.dedup import first_copies, near_duplicates, phash_codes
from curation.semdedup import semantic_duplicates
from manifests.configs import ConfigError, load_config
from manifests.ledger import read_ledger
from vl3data.sample_media import jpeg_bytes


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_planted_copies_go_and_name_their_original(tmp_path, photos, ray_local):
    pool = tmp_path / "pool"
    pool.mkdir()
    names = ["astronaut", "chelsea", "coffee", "rocket", "china", "flower"]
    for name in names:  # "a_*": first in pool order, so the originals are the kept copies
        (pool / f"a_{name}.jpg").write_bytes(jpeg_bytes(photos[name]))
    decoded = {n: Image.open(pool / f"a_{n}.jpg").convert("RGB") for n in names}
    astro, chelsea, coffee, rocket = (decoded[n] for n in names[:4])
    w, h = rocket.size
    cropped = rocket.crop((3, 3, w - 3, h - 3))
    planted = {  # file -> (stage, the original)
        "z_astronaut.png": ("dedup_exact", "astronaut", _encode(astro, "PNG")),
        "z_chelsea_q40.jpg": ("dedup_phash", "chelsea", _encode(chelsea, "JPEG", quality=40)),
        "z_coffee_small.jpg": (
            "dedup_phash",
            "coffee",
            _encode(coffee.resize((coffee.width * 6 // 10, coffee.height * 6 // 10)), "JPEG"),
        ),
        "z_rocket_crop.jpg": ("dedup_phash", "rocket", _encode(cropped, "JPEG")),
        "z_rocket_again.png": ("dedup_exact", "rocket", _encode(rocket, "PNG")),
    }
    for file, (_, _, data) in planted.items():
        (pool / file).write_bytes(data)
    out = tmp_path / "out"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [
            f"input.path={pool}",
            f"output={out}",
            "input.partition_size=3",  # the copies sit in later partitions than their originals
            "dedup.exact=true",
            "dedup.phash=true",
        ],
    )
    doc = curate(cfg, progress=False)
    ledger = {r["source_key"]: r for r in read_ledger(out).to_pylist()}
    assert len(ledger) == len(names) + len(planted)
    for name in names:
        row = ledger[f"a_{name}.jpg"]
        assert row["status"] == "kept" and row["duplicate_of"] is None, name
        assert row["content_hash"] and len(row["phash"]) == 16
    for file, (stage, original, _) in planted.items():
        row = ledger[file]
        assert (row["status"], row["stage"]) == ("dropped", stage), file
        assert row["duplicate_of"] == ledger[f"a_{original}.jpg"]["id"], file
        assert row["partition"] != ledger[f"a_{original}.jpg"]["partition"]
    assert ledger["z_astronaut.png"]["reason"] == "duplicate:content_hash"
    assert ledger["z_chelsea_q40.jpg"]["reason"] == "duplicate:phash<=4"
    assert doc["samples"] == len(names)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dedup"] == {"exact": 2, "phash": 3}
    assert {"dedup_exact", "dedup_phash"} <= set(stats["stages"])
    # the report pictures every pair: the dropped copy beside the original that was kept
    page = (out / "report.html").read_text()
    section = page.split('<section id="duplicates">', 1)[1].split("</section>", 1)[0]
    assert section.count('class="thumb"') == 2 * len(planted)
    for file in planted:
        assert file in section


def test_exact_groups_keep_the_first_and_skip_nulls():
    import pyarrow as pa

    values = pa.array(["a", "b", None, "a", None, "b", "c", "a"])
    assert first_copies(values).tolist() == [0, 1, 2, 0, 4, 1, 6, 0]


def test_near_duplicates_within_the_hamming_distance_of_a_kept_row():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (200, 8), dtype=np.uint8)
    codes[50] = codes[10]
    codes[60] = codes[10] ^ np.array([1, 2, 4, 8, 0, 0, 0, 0], np.uint8)  # 4 bits away
    codes[70] = codes[60] ^ np.array([0, 0, 0, 0, 1, 2, 0, 0], np.uint8)  # 6 from 10, 2 from 60
    codes[80] = codes[20] ^ np.array([255, 1, 0, 0, 0, 0, 0, 0], np.uint8)  # 9 bits away
    found = near_duplicates(codes, 4)
    assert {i: int(found[i]) for i in np.flatnonzero(found >= 0)} == {50: 10, 60: 10}
    # 70 is within 4 of 60 only, and 60 went: 70 stays (a row goes for a *kept* neighbour)
    hexes = [bytes(c).hex() for c in codes[:3]] + [None, "xyz"]
    parsed, valid = phash_codes(hexes)
    assert valid.tolist() == [True, True, True, False, False]
    assert (parsed[:3] == codes[:3]).all()


def brute_semantic(x, labels, threshold):
    u = x.astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    dup = np.full(len(x), -1)
    for i in range(len(x)):
        for j in range(i):
            if labels[i] == labels[j] and dup[j] < 0 and u[i] @ u[j] > threshold:
                dup[i] = j
                break
    return dup


@pytest.mark.parametrize("block_floats", [1, 37, 1 << 25])
def test_semantic_duplicates_match_a_pairwise_reading_inside_clusters(block_floats):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 24)).astype(np.float32)
    labels = rng.integers(0, 5, 120)
    planted = {}
    for i, j in [(3, 40), (40, 90), (7, 8), (11, 100)]:
        x[j] = x[i] + rng.normal(0, 0.02, 24)
        labels[j] = labels[i]
        planted[j] = i
    x[101] = x[12] + rng.normal(0, 0.02, 24)  # a near copy in another cluster: not compared
    labels[101] = (labels[12] + 1) % 5
    got = semantic_duplicates(x.astype(np.float16), labels, 0.95, block_floats=block_floats)
    want = brute_semantic(x.astype(np.float16), labels, 0.95)
    assert got.tolist() == want.tolist()
    assert {i: int(got[i]) for i in np.flatnonzero(got >= 0)} == {40: 3, 90: 3, 8: 7, 100: 11}


@pytest.mark.parametrize(
    "override,field",
    [
        ("dedup.phash_max_distance=40", "dedup.phash_max_distance"),
        ("dedup.semantic_threshold=0", "dedup.semantic_threshold"),
        ("dedup.semantic=true", "dedup.semantic"),  # without cluster.enabled
        ("dedup.fuzzy=true", "dedup.fuzzy"),
    ],
)
def test_bad_dedup_config_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, "configs/curate_local.yaml", [override])
    assert err.value.field == field


@pytest.mark.slow  # CLIP actors and k-means: ~20 s
def test_semantic_copies_go_inside_the_selection_clusters(tmp_path, photos, tiny_models, ray_local):
    pool = tmp_path / "pool"
    pool.mkdir()
    names = ["astronaut", "chelsea", "coffee", "rocket", "china", "flower"]
    for name in names:
        (pool / f"a_{name}.jpg").write_bytes(jpeg_bytes(photos[name]))
        im = Image.open(pool / f"a_{name}.jpg").convert("RGB")
        small = im.resize((im.width * 9 // 10, im.height * 9 // 10))
        (pool / f"z_{name}_small.jpg").write_bytes(_encode(small, "JPEG", quality=70))
    out = tmp_path / "out"
    cfg = load_config(
        CurateConfig,
        ["configs/syn7m_filters.yaml", "configs/models/tiny.yaml"],
        [
            f"input.path={pool}",
            f"output={out}",
            f"clip.model=local-dir:{tiny_models / 'open_clip'}",
            "aesthetic.enabled=false",
            "caption.enabled=false",
            "similarity.enabled=false",
            "cluster.k=2",
            "cluster.per_cluster=100",  # the selection keeps every row: only dedup drops
            "input.partition_size=4",
            "dedup.semantic=true",
            # the tiny random CLIP puts distinct photos up to ~0.98 apart, copies above 0.999
            "dedup.semantic_threshold=0.995",
        ],
    )
    curate(cfg, progress=False)
    ledger = {r["source_key"]: r for r in read_ledger(out).to_pylist()}
    for name in names:
        original, copy = ledger[f"a_{name}.jpg"], ledger[f"z_{name}_small.jpg"]
        assert original["status"] == "kept", name
        assert (copy["status"], copy["stage"]) == ("dropped", "dedup_semantic"), name
        assert copy["reason"] == "duplicate:cos>0.995"
        assert copy["duplicate_of"] == original["id"] and copy["cluster"] == original["cluster"]
    assert any(ledger[f"z_{n}_small.jpg"]["partition"] != ledger[f"a_{n}.jpg"]["partition"]
               for n in names)  # fmt: skip
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dedup"]["semantic"] == len(names)
    assert stats["stages"][-1] == "dedup_semantic"
    hist = stats["dedup"]["semantic_hist"]
    assert sum(hist["other"]) == len(names) and hist["threshold"] == 0.995
    assert 'alt="semantic similarity histogram"' in (out / "report.html").read_text()
