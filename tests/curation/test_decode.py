"""The first stage on real photos and the inputs that break pipelines, without Ray."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from curation.stages.decode import Decode, Probe
from curation.stages.shape import ShapeFilter
from manifests.marks import errors_to
from manifests.schema import new_rows
from vl3data.sample_media import jpeg_bytes, odd_cases


def run_first_stage(files: dict[str, bytes], **decode_kw):
    names = list(files)
    batch = new_rows(
        "test",
        0,
        names,
        image=[files[n] or None for n in names],
        ext=[n.rsplit(".", 1)[-1] for n in names],
    )
    batch = errors_to(batch, [None if files[n] else "empty_file" for n in names], "read")
    for stage in (Probe(), ShapeFilter(), Decode(**decode_kw)):
        batch = stage(batch)
    return {row["source_key"]: row for row in batch.to_pylist()}


def test_every_odd_case_gets_its_status_and_reason(photos):
    cases = odd_cases(photos["chelsea"])
    rows = run_first_stage({k: v[0] for k, v in cases.items()})
    assert len(rows) == len(cases)
    for name, (_, status, reason) in cases.items():
        assert (rows[name]["status"], rows[name]["reason"]) == (status, reason), name
        if status != "kept":
            assert rows[name]["image"] is None, f"{name}: bytes of a dropped row must be released"


def test_kept_images_decode_to_rgb_with_true_orientation(photos):
    cases = odd_cases(photos["chelsea"])
    rows = run_first_stage({k: v[0] for k, v in cases.items()})
    h, w = photos["chelsea"].shape[:2]
    for name, row in rows.items():
        if row["status"] != "kept":
            continue
        im = Image.open(io.BytesIO(row["image"]))
        assert im.mode in ("RGB", "L"), name
        expected = (h, w) if name == "exif_rotated.jpg" else (w, h)
        assert im.size == expected == (row["width"], row["height"]), name
    # originals are kept byte for byte when nothing needed fixing
    assert rows["good.jpg"]["image"] == cases["good.jpg"][0]
    assert rows["good.jpg"]["transform"] is None
    assert rows["png_named.jpg"]["ext"] == "png"  # mislabeled: content decides
    assert rows["cmyk.jpg"]["transform"] == "mode:CMYK"


def test_alpha_is_flattened_onto_white(photos):
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    rows = run_first_stage({"clear.png": buf.getvalue()})
    px = Image.open(io.BytesIO(rows["clear.png"]["image"])).convert("RGB").getpixel((50, 50))
    assert min(px) > 240, px


def test_sixteen_bit_keeps_its_dynamic_range(photos):
    import numpy as np

    ramp = (np.linspace(0, 65535, 256 * 128).reshape(128, 256)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    rows = run_first_stage({"ramp.png": buf.getvalue()})
    arr = np.asarray(Image.open(io.BytesIO(rows["ramp.png"]["image"])).convert("L"))
    assert arr.min() < 10 and arr.max() > 245  # not clipped to white, as a naive convert does


def test_store_max_side_shrinks_and_keeps_aspect(photos):
    rows = run_first_stage({"big.jpg": jpeg_bytes(photos["motorcycle"])}, store_max_side=128)
    row = rows["big.jpg"]
    assert max(row["width"], row["height"]) == 128
    assert Image.open(io.BytesIO(row["image"])).size == (row["width"], row["height"])
    assert row["transform"] == "resize:128"


@pytest.mark.parametrize("size,reason", [((1000, 200), "aspect_ratio"), ((50, 40), "min_side")])
def test_shape_filter_bounds(photos, size, reason):
    im = Image.fromarray(photos["coffee"]).resize(size)
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    rows = run_first_stage({"x.jpg": buf.getvalue()})
    assert (rows["x.jpg"]["status"], rows["x.jpg"]["reason"]) == ("dropped", reason)
    assert rows["x.jpg"]["thumb"] is not None  # the report shows what was dropped


def test_draft_verify_matches_full_decode_verdict(photos):
    good = jpeg_bytes(photos["astronaut"])
    files = {"good.jpg": good, "cut.jpg": good[: len(good) * 3 // 4]}
    fast = run_first_stage(files, draft=True)
    slow = run_first_stage(files, draft=False)
    for name in files:
        assert (fast[name]["status"], fast[name]["reason"]) == (
            slow[name]["status"],
            slow[name]["reason"],
        ), name
    assert fast["cut.jpg"]["reason"] == "truncated"


def test_decode_resized_matches_the_full_decode(photos):
    import numpy as np

    from curation.stages.decode import decode_resized

    data = jpeg_bytes(np.repeat(np.repeat(photos["coffee"], 4, axis=0), 4, axis=1))  # 2400x1600
    fast = np.asarray(decode_resized(data, (224, 224)), dtype=np.float64)
    full = np.asarray(decode_resized(data, (224, 224), draft=False), dtype=np.float64)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast - full).mean() < 3.0  # DCT-scaled decode: same picture, not bit-exact


def _png_with_corrupt_idat(pixels) -> bytes:
    """A PNG whose compressed pixel data is zeroed in the middle, with the chunk's CRC
    recomputed: the header is sound, only decoding the pixels can tell."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    at = png.index(b"IDAT") - 4
    n = struct.unpack(">I", png[at : at + 4])[0]
    start = at + 8
    png[start + n // 2 : start + n // 2 + 64] = bytes(64)
    crc = zlib.crc32(png[at + 4 : start + n]) & 0xFFFFFFFF
    png[start + n : start + n + 4] = struct.pack(">I", crc)
    return bytes(png)


def test_a_png_with_corrupt_pixel_data_is_an_error_not_a_half_image(photos):
    """Reading a PNG's EXIF decodes its pixels; that decode's error must reach the ledger
    (it used to be swallowed, and a second load() accepted the half-filled image)."""
    bad = _png_with_corrupt_idat(photos["chelsea"])
    good = io.BytesIO()
    Image.fromarray(photos["chelsea"]).save(good, "PNG")
    rows = run_first_stage({"bad.png": bad, "good.png": good.getvalue()})
    assert (rows["bad.png"]["status"], rows["bad.png"]["reason"]) == ("error", "decode_error")
    assert rows["bad.png"]["image"] is None
    assert rows["good.png"]["status"] == "kept"
    assert rows["good.png"]["image"] == good.getvalue()
