"""Sample media for the demo and the tests: real photos that scikit-image, scikit-learn and
matplotlib ship inside their wheels, plus generated broken and odd cases (truncated, empty,
text named .jpg, CMYK, palette, 16-bit, alpha, EXIF-rotated, extreme strip, pixel bomb).

Nothing is downloaded: ``make setup`` installs those packages, and this module writes the files.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def real_photos() -> dict[str, np.ndarray]:
    """Real RGB photos from packages installed with the dev extra (name -> HxWx3 uint8)."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
    }
    sk = load_sample_images()
    for name, img in zip(sk.filenames, sk.images, strict=True):
        photos[Path(name).stem] = img  # china, flower
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    return photos


def jpeg_bytes(arr: np.ndarray, quality: int = 90, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", quality=quality, **kw)
    return out.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def bomb_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression-bomb shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def odd_cases(photo: np.ndarray) -> dict[str, tuple[bytes, str, str | None]]:
    """name -> (file bytes, expected status, expected reason or None when kept).

    ``photo`` is a real RGB photo used as the base of the odd variants.
    """
    good = jpeg_bytes(photo)
    rgba = Image.fromarray(photo).convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display: a portrait photo stored landscape
    rotated = jpeg_bytes(photo, exif=exif.tobytes())
    cmyk = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(cmyk, "JPEG", quality=90)
    gif = io.BytesIO()
    Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE).save(gif, "GIF")
    sixteen = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)  # mode I;16
    la = Image.fromarray(photo).convert("LA")
    strip = np.full((20, 20000, 3), 127, np.uint8)
    return {
        "good.jpg": (good, "kept", None),
        "truncated.jpg": (good[: len(good) // 2], "error", "truncated"),
        "zero.jpg": (b"", "error", "empty_file"),
        "text.jpg": (b"this is not an image, just text\n" * 10, "error", "not_an_image"),
        "alpha.png": (png_bytes(rgba), "kept", None),
        "palette.gif": (gif.getvalue(), "kept", None),
        "cmyk.jpg": (cmyk.getvalue(), "kept", None),
        "sixteen.png": (png_bytes(sixteen), "kept", None),
        "la.png": (png_bytes(la), "kept", None),
        "exif_rotated.jpg": (rotated, "kept", None),
        "png_named.jpg": (png_bytes(Image.fromarray(photo)), "kept", None),
        "strip.jpg": (jpeg_bytes(strip), "dropped", "aspect_ratio"),
        "bomb.png": (bomb_png_header(), "dropped", "too_many_pixels"),
    }


def write_files(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def write_demo_pool(root: Path) -> dict[str, tuple[str, str | None]]:
    """The demo's raw pool: every real photo, a few crops of them with extreme shapes, and the
    odd cases. Returns relative path -> (expected status, expected reason)."""
    photos = real_photos()
    files: dict[str, bytes] = {}
    expected: dict[str, tuple[str, str | None]] = {}
    for name, arr in photos.items():
        files[f"photos/{name}.jpg"] = jpeg_bytes(arr)
        expected[f"photos/{name}.jpg"] = ("kept", None)
    # a panorama-like strip and a tall sliver cut from real photos: dropped by aspect ratio
    files["crops/china_strip.jpg"] = jpeg_bytes(photos["china"][200:300, :, :])
    expected["crops/china_strip.jpg"] = ("dropped", "aspect_ratio")
    files["crops/coffee_sliver.jpg"] = jpeg_bytes(photos["coffee"][:, 300:380, :].copy())
    expected["crops/coffee_sliver.jpg"] = ("dropped", "aspect_ratio")
    files["crops/rocket_tiny.jpg"] = jpeg_bytes(photos["rocket"][::10, ::10, :].copy())
    expected["crops/rocket_tiny.jpg"] = ("dropped", "min_side")
    for name, (data, status, reason) in odd_cases(photos["chelsea"]).items():
        files[f"odd/{name}"] = data
        expected[f"odd/{name}"] = (status, reason)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    for name in photos:  # img2dataset-style alt-text sidecars
        (root / f"photos/{name}.txt").write_text(f"a photo: {name.replace('_', ' ')}")
    write_files(root, files)
    return expected


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vl3data.sample_media OUT_DIR", file=sys.stderr)
        return 2
    expected = write_demo_pool(Path(args[0]))
    print(f"wrote {len(expected)} sample images to {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
