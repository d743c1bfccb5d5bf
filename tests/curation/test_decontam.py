"""Decontamination: curated images that copy an evaluation image (exact, perceptual) are
dropped with the evaluation image's key in ``eval_match``; an evaluation folder and an
evaluation shard set are both read."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import ConfigError, load_config
from manifests.ledger import read_ledger
from vl3data.sample_media import jpeg_bytes


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _tar(path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_copies_of_evaluation_images_go_naming_them(tmp_path, photos, ray_local):
    pool = tmp_path / "pool"
    pool.mkdir()
    names = ["astronaut", "chelsea", "coffee", "rocket", "china"]
    for name in names:
        (pool / f"{name}.jpg").write_bytes(jpeg_bytes(photos[name]))
    decoded = {n: Image.open(pool / f"{n}.jpg").convert("RGB") for n in names}
    evals = tmp_path / "mmbench_images"  # an evaluation folder
    evals.mkdir()
    buf = io.BytesIO()
    decoded["astronaut"].save(buf, "PNG")
    (evals / "q17.png").write_bytes(buf.getvalue())  # the same pixels: exact
    small = decoded["chelsea"].resize((300, 200))
    (evals / "sub" / "q3.jpg").parent.mkdir()
    (evals / "sub" / "q3.jpg").write_bytes(_jpeg(small, quality=50))  # perceptual
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    (evals / "other.jpg").write_bytes(jpeg_bytes(noise))  # matches nothing
    (evals / "broken.jpg").write_bytes(b"not an image")  # unreadable: skipped, no crash
    shard_set = tmp_path / "eval_set"  # an evaluation shard set
    _tar(shard_set / "shards" / "eval-000000.tar", {"k9.jpg": _jpeg(decoded["coffee"], quality=40)})
    out = tmp_path / "out"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [
            f"input.path={pool}",
            f"output={out}",
            "input.partition_size=2",
            f"decontam.eval_sets=[{evals}, {shard_set}]",
        ],
    )
    doc = curate(cfg, progress=False)
    ledger = {r["source_key"]: r for r in read_ledger(out).to_pylist()}
    want = {
        "astronaut.jpg": ("contaminated:content_hash", "mmbench_images:q17.png"),
        "chelsea.jpg": ("contaminated:phash<=4", "mmbench_images:sub/q3.jpg"),
        "coffee.jpg": ("contaminated:phash<=4", "eval_set:eval-000000.tar#k9"),
    }
    for key, row in ledger.items():
        if key in want:
            assert (row["status"], row["stage"]) == ("dropped", "decontam"), key
            assert (row["reason"], row["eval_match"]) == want[key], key
        else:
            assert row["status"] == "kept" and row["eval_match"] is None, key
    assert doc["samples"] == 2
    page = (out / "report.html").read_text()
    section = page.split('<section id="duplicates">', 1)[1].split("</section>", 1)[0]
    assert "mmbench_images:sub/q3.jpg" in section and section.count('class="thumb"') == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["decontam"]["eval_images"] == 4
    assert stats["decontam"]["dropped"] == {
        "contaminated:content_hash": 1,
        "contaminated:phash<=4": 2,
    }


@pytest.mark.parametrize(
    "override,field",
    [
        ("decontam.eval_sets=[/nonexistent/eval]", "decontam.eval_sets[0]"),
        ("decontam.semantic=true", "decontam.semantic"),  # without clip.enabled
        ("decontam.phash_max_distance=99", "decontam.phash_max_distance"),
    ],
)
def test_bad_decontam_config_names_the_field(tmp_path, override, field):
    sets = [f"decontam.eval_sets=[{tmp_path}]", f"output={tmp_path / 'out'}"]
    with pytest.raises(ConfigError) as err:
        cfg = load_config(CurateConfig, "configs/curate_local.yaml", [*sets, override])
        cfg.check_runnable()
    assert err.value.field == field


@pytest.mark.slow  # CLIP actors: ~20 s
def test_semantic_copies_of_evaluation_images_go(tmp_path, photos, tiny_models, ray_local):
    pool = tmp_path / "pool"
    pool.mkdir()
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    for name in names:
        (pool / f"{name}.jpg").write_bytes(jpeg_bytes(photos[name]))
    evals = tmp_path / "eval"
    evals.mkdir()
    rocket = Image.open(pool / "rocket.jpg").convert("RGB")
    small = rocket.resize((rocket.width * 9 // 10, rocket.height * 9 // 10))
    (evals / "r.jpg").write_bytes(_jpeg(small, quality=70))
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
            "cluster.enabled=false",
            f"decontam.eval_sets=[{evals}]",
            "decontam.exact=false",
            "decontam.phash=false",
            "decontam.semantic=true",
            # the tiny random CLIP puts distinct photos up to ~0.98 apart, copies above 0.999
            "decontam.semantic_threshold=0.995",
        ],
    )
    curate(cfg, progress=False)
    ledger = {r["source_key"]: r for r in read_ledger(out).to_pylist()}
    row = ledger["rocket.jpg"]
    assert (row["status"], row["stage"], row["reason"]) == (
        "dropped",
        "decontam",
        "contaminated:cos>0.995",
    )
    assert row["eval_match"] == "eval:r.jpg"
    assert all(ledger[f"{n}.jpg"]["status"] == "kept" for n in names[:3])
