"""Media file names in an export: deterministic from the sample key, safe on any filesystem.

A key may hold characters a path must not (``/``, ``..``, spaces, non-ASCII); those become
``_`` and a short hash of the key keeps two keys that clean up alike apart. Files are spread
over 256 folders by a hash of the key, so a set of millions of samples does not put millions
of files in one directory. Every path is relative to the export's media folder (what
VideoLLaMA3's ``--data_folder`` and LLaVA's ``--image_folder`` / ``--video_folder`` name).
"""

from __future__ import annotations

import hashlib
import re

MEDIA_DIR = "media"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_STEM = 80


def _digest(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def media_stem(key: str) -> str:
    """``key`` as a file name without extension: itself when already safe, else cleaned and
    suffixed with 8 hex digits of its hash."""
    safe = _UNSAFE.sub("_", key)[:MAX_STEM]
    return safe if safe == key and safe else f"{safe}-{_digest(key)[:8]}"


def _folder(key: str) -> str:
    return _digest(key)[:2]


def image_path(key: str, index: int, count: int, ext: str) -> str:
    """``images/ab/{stem}.jpg`` for a sample's only image, ``{stem}_{i}.jpg`` for several."""
    suffix = "" if count == 1 else f"_{index}"
    return f"images/{_folder(key)}/{media_stem(key)}{suffix}.{ext}"


def video_path(key: str) -> str:
    """``videos/ab/{stem}.mp4``: the sample's frames as one MP4 file (``export.mux``)."""
    return f"videos/{_folder(key)}/{media_stem(key)}.mp4"
