"""Generators of hostile image files (bytes), built on real photos."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from vl3data.sample_media import bomb_png_header, jpeg_bytes, odd_cases, png_bytes


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def small(photo: np.ndarray) -> np.ndarray:
    """A 128x96-ish crop: every case stays cheap to decode."""
    return np.ascontiguousarray(photo[:96, :128])


def corrupt_png(photo: np.ndarray) -> bytes:
    """A PNG whose IDAT holds garbage with valid CRCs: the header reads, the pixels do not."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    h, w = photo.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = b"\x78\x9c" + bytes(range(256)) * 8  # a zlib header, then not deflate
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb_jpeg_header(width: int = 60_000, height: int = 60_000) -> bytes:
    """A JPEG whose SOF0 claims width x height (then nothing decodable)."""
    good = jpeg_bytes(np.zeros((16, 16, 3), np.uint8))
    i = good.index(b"\xff\xc0")
    sof = bytearray(good[i : i + 19])
    sof[5:7] = struct.pack(">H", height)
    sof[7:9] = struct.pack(">H", width)
    return good[:i] + bytes(sof) + good[i + 19 :]


def image_cases(photo: np.ndarray) -> dict[str, tuple[bytes, str, str | None]]:
    """case name -> (bytes, expected status, expected reason); the name carries the file's
    extension as it would be named in a pool."""
    base = small(photo)
    rgb = Image.fromarray(base)
    good = jpeg_bytes(base)
    odd = odd_cases(base)
    pal_t = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_t.info["transparency"] = 0
    frames = [Image.fromarray(np.roll(base, k * 10, axis=1)) for k in range(3)]
    gif_anim = io.BytesIO()
    frames[0].save(gif_anim, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    webp_anim = io.BytesIO()
    frames[0].save(webp_anim, "WEBP", save_all=True, append_images=frames[1:], duration=50)
    tiff_multi = io.BytesIO()
    frames[0].save(tiff_multi, "TIFF", save_all=True, append_images=frames[1:])
    gray = np.asarray(rgb.convert("L"), dtype=np.float32)
    bad_exif = Image.Exif()
    bad_exif[0x0112] = 99  # an orientation that does not exist
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.jpg", good)
    tall = np.ascontiguousarray(np.repeat(base[:, :8], 1, axis=1))  # 96 x 8: 1:12
    cases: dict[str, tuple[bytes, str, str | None]] = {
        "good.jpg": (good, "kept", None),
        "upper_ext.JPG": (good, "kept", None),
        "truncated.jpg": (odd["truncated.jpg"][0], "error", "truncated"),
        "truncated.png": (png_bytes(rgb)[: len(png_bytes(rgb)) // 2], "error", "truncated"),
        "zero.jpg": (b"", "error", "empty_file"),
        "text.jpg": (b"this is not an image, just text\n" * 10, "error", "not_an_image"),
        "html.jpg": (b"<!DOCTYPE html><html><body>404</body></html>\n", "error", "not_an_image"),
        "svg.jpg": (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500"/>',
            "error",
            "not_an_image",
        ),
        "zip.jpg": (zipped.getvalue(), "error", "not_an_image"),
        "jpeg_magic_only.jpg": (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "error", "not_an_image"),
        "corrupt_pixels.png": (corrupt_png(base), "error", "decode_error"),
        "png_named.jpg": (png_bytes(rgb), "kept", None),
        "jpeg_named.png": (good, "kept", None),
        "webp_named.png": (save(rgb, "WEBP"), "kept", None),
        "gif_named.jpg": (save(rgb.convert("P"), "GIF"), "kept", None),
        "bmp.bmp": (save(rgb, "BMP"), "kept", None),
        "cmyk.jpg": (odd["cmyk.jpg"][0], "kept", None),
        "sixteen.png": (odd["sixteen.png"][0], "kept", None),
        "palette.gif": (odd["palette.gif"][0], "kept", None),
        "palette_transparency.png": (png_bytes(pal_t), "kept", None),
        "la.png": (odd["la.png"][0], "kept", None),
        "rgba.png": (odd["alpha.png"][0], "kept", None),
        "mode1.png": (png_bytes(rgb.convert("1")), "kept", None),
        "float.tiff": (save(Image.fromarray(gray, "F"), "TIFF"), "kept", None),
        "int32.tif": (
            save(Image.fromarray(gray.astype(np.int32) * 100, "I"), "TIFF"),
            "kept",
            None,
        ),
        "multiframe.tiff": (tiff_multi.getvalue(), "kept", None),
        "animated.gif": (gif_anim.getvalue(), "kept", None),
        "animated.webp": (webp_anim.getvalue(), "kept", None),
        "exif_rotated.jpg": (odd["exif_rotated.jpg"][0], "kept", None),
        "exif_bad_orientation.jpg": (jpeg_bytes(base, exif=bad_exif.tobytes()), "kept", None),
        "bomb.png": (bomb_png_header(), "dropped", "too_many_pixels"),
        "bomb.jpg": (bomb_jpeg_header(), "dropped", "too_many_pixels"),
        "tiny.jpg": (jpeg_bytes(base[:8, :8].copy()), "dropped", "min_side"),
        "one_pixel.png": (png_bytes(Image.new("RGB", (1, 1))), "dropped", "min_side"),
        "wide_strip.jpg": (odd["strip.jpg"][0], "dropped", "aspect_ratio"),
        "tall_sliver.png": (png_bytes(Image.fromarray(tall)), "dropped", "aspect_ratio"),
        "trailing_garbage.jpg": (good + b"\x00garbage" * 1000, "kept", None),
    }
    return cases
