"""Decoding with safety limits, in two stages around the shape filter.

``probe`` reads only the header (size, format, EXIF orientation) and refuses pixel bombs, so the
shape filter can drop extreme images before anyone pays for decoding them. ``decode`` then
decodes what is left (JPEG draft mode: DCT scaling to the size we need, which still reads every
byte, so truncation is caught), and re-encodes only what a trainer could not read as it is:
odd modes (CMYK, P, LA, RGBA, 16-bit), EXIF-rotated JPEGs, formats other than JPEG/PNG/WebP,
and images above ``store_max_side``. Everything else keeps its original bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from manifests.marks import alive, errors_to, mark, set_column

FORMAT_EXT = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpg",
}
KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "MPO": "jpg"}
SAFE_MODES = {"RGB", "L"}
ROTATING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
EXIF_ORIENTATION = 0x0112


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 when there is none or it is unreadable).

    A PNG may keep its eXIf chunk after the pixel data; Pillow's ``getexif()`` then decodes the
    whole image to reach it, and a decode error there would be swallowed here, leaving a
    half-filled image that a second ``load()`` accepts. So an unloaded PNG whose header had no
    EXIF reads as 1: the probe stays header-only, and the decoding paths call
    :func:`_load_png_first`, which surfaces the error, before asking.
    """
    if im.format == "PNG" and "exif" not in im.info and im.tile:
        return 1
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1


def _load_png_first(im: Image.Image) -> None:
    """Decode a PNG's pixels now, so that their error is raised, not hidden by EXIF reading."""
    if im.format == "PNG":
        im.load()


@dataclass
class Probe:
    """Header only: true width/height (after EXIF rotation), format, pixel cap.

    Reasons: ``not_an_image`` (no decoder recognises the bytes: a text file named .jpg),
    ``decode_error`` (a broken header), ``too_many_pixels`` (refused before decoding).
    """

    max_pixels: int = 64_000_000
    name: str = "probe"

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = alive(batch)
        images = batch["image"]
        widths = batch["width"].to_pylist()
        heights = batch["height"].to_pylist()
        exts = batch["ext"].to_pylist()
        errors: list[str | None] = [None] * batch.num_rows
        drops: list[str | None] = [None] * batch.num_rows
        for i in np.flatnonzero(live):
            data = images[i].as_py()
            if not data:
                errors[i] = "empty_file"
                continue
            try:
                with _open(data) as im:
                    w, h = im.size
                    if _orientation(im) in ROTATING_ORIENTATIONS:
                        w, h = h, w
                    exts[i] = FORMAT_EXT.get(im.format or "", (im.format or "").lower())
            except UnidentifiedImageError:
                errors[i] = "not_an_image"
                continue
            except Image.DecompressionBombError:
                drops[i] = "too_many_pixels"
                continue
            except (OSError, ValueError, SyntaxError, EOFError):
                errors[i] = "decode_error"
                continue
            widths[i], heights[i] = w, h
            if w * h > self.max_pixels:
                drops[i] = "too_many_pixels"
        batch = set_column(batch, "width", widths)
        batch = set_column(batch, "height", heights)
        batch = set_column(batch, "ext", exts)
        batch = errors_to(batch, errors, self.name)
        return mark(batch, drops, self.name)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB, flattening transparency onto white and scaling 16-bit to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB") if im.mode != "RGB" else im


def _needs_reencode(im: Image.Image, orientation: int) -> list[str]:
    why = []
    if im.format not in KEEP_AS_IS:
        why.append(f"format:{(im.format or '?').lower()}")
    if im.mode not in SAFE_MODES:
        why.append(f"mode:{im.mode}")
    if orientation != 1:
        why.append("exif_rotate")
    return why


@dataclass
class Decode:
    """Verify the pixels, normalise what must be normalised, optionally shrink for storage.

    Writes the ``transform`` column (what was done to a re-encoded image, null when the
    original bytes are kept). Reasons: ``truncated``, ``decode_error``.
    """

    verify: bool = True
    draft: bool = True
    verify_size: int = 16
    store_max_side: int | None = None
    jpeg_quality: int = 95
    name: str = "decode"

    def _one(self, data: bytes) -> tuple[bytes | None, str | None, str | None, tuple[int, int]]:
        """(new bytes or None to keep, new ext, transform, size) for one image."""
        with _open(data) as im:
            _load_png_first(im)
            orientation = _orientation(im)
            size = _rotated(im.size, orientation)  # before draft() shrinks it
            why = _needs_reencode(im, orientation)
            target = None
            if self.store_max_side and max(im.size) > self.store_max_side:
                why.append(f"resize:{self.store_max_side}")
                target = self.store_max_side
            if not why:
                if self.verify:
                    if self.draft and im.format == "JPEG":
                        im.draft(im.mode, (self.verify_size, self.verify_size))
                    im.load()
                return None, None, None, size
            if self.draft and im.format == "JPEG" and target:
                im.draft(im.mode, (target, target))
            im.load()
            if im.format == "GIF":
                im.seek(0)
            im = ImageOps.exif_transpose(im) if orientation != 1 else im
            im = _to_rgb(im)
            if target and max(im.size) > target:
                im.thumbnail((target, target), Image.Resampling.BICUBIC)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=self.jpeg_quality)
            return out.getvalue(), "jpg", ",".join(why), im.size

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = alive(batch)
        column = batch["image"]
        new_images: dict[int, bytes] = {}  # most images keep their bytes: no column rebuild
        exts = batch["ext"].to_pylist()
        widths = batch["width"].to_pylist()
        heights = batch["height"].to_pylist()
        transforms: list[str | None] = [None] * batch.num_rows
        errors: list[str | None] = [None] * batch.num_rows
        for i in np.flatnonzero(live):
            try:
                new, ext, transform, (w, h) = self._one(column[i].as_py())
            except OSError as exc:
                errors[i] = "truncated" if "truncated" in str(exc) else "decode_error"
                continue
            except (ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
                errors[i] = "decode_error"
                continue
            if new is not None:
                new_images[i], exts[i], transforms[i] = new, ext, transform
            widths[i], heights[i] = w, h
        if new_images:
            images = column.to_pylist()
            for i, data in new_images.items():
                images[i] = data
            batch = set_column(batch, "image", pa.array(images, pa.binary()))
        batch = set_column(batch, "ext", exts)
        batch = set_column(batch, "width", widths)
        batch = set_column(batch, "height", heights)
        batch = set_column(batch, "transform", pa.array(transforms, pa.string()))
        return errors_to(batch, errors, self.name)


def _rotated(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in ROTATING_ORIENTATIONS else size


def decode_resized(data: bytes, size: tuple[int, int], draft: bool = True) -> Image.Image:
    """Decode to RGB at exactly ``size`` (width, height), as a model's preprocessing needs.

    With ``draft`` a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers ``size``, so a 4000-pixel photo headed for 224x224 never exists at full size.
    """
    with _open(data) as im:
        _load_png_first(im)
        orientation = _orientation(im)
        if draft and im.format == "JPEG":
            want = size if orientation not in ROTATING_ORIENTATIONS else size[::-1]
            im.draft("RGB", want)
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        return _to_rgb(im).resize(size, Image.Resampling.BICUBIC)
