"""Small JPEG thumbnails of encoded images, the one place both producers of thumbnails share.

The curation filters keep a thumbnail of a few dropped rows in the ledger, and the reports make
them of kept samples read back from the shards; both go through :func:`make_thumb`, so the two
contact sheets look alike. It lives in the presentation layer because a thumbnail exists only to
be shown to people; the curation stages, which sit above ``reports``, may import it.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

#: What PIL raises on bytes it cannot decode (truncated, corrupt, unknown or oversized images).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def make_thumb(data: bytes, side: int = 128) -> bytes | None:
    """A JPEG of at most ``side`` x ``side`` pixels, or None when ``data`` cannot be decoded.

    ``draft`` lets libjpeg decode at 1/2..1/8 scale, so a 20-megapixel photo costs about as much
    as a small one. The EXIF orientation is applied, and transparency is laid on white.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (side, side))
                img = ImageOps.exif_transpose(im)
                if img.mode in ("RGBA", "LA", "P", "PA"):
                    rgba = img.convert("RGBA")
                    img = Image.new("RGB", rgba.size, "white")
                    img.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    img = img.convert("RGB")
                img.thumbnail((side, side))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=82)
                return buf.getvalue()
    except DECODE_ERRORS:
        return None
