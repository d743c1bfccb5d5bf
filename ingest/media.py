"""Media paths of an annotation record, resolved inside the media root or refused.

VideoLLaMA3's loader joins ``--data_folder`` and the record's path (``os.path.join``), so an
absolute path or ``..`` reads anything on the machine. Here a path is read only when the file it
finally names (links followed) lies inside the media root; everything else gets a ledger reason:
``outside_root`` (``..``, an absolute path elsewhere, a symlink out), ``missing_media``,
``not_a_file`` (a folder, FIFO or device: reading a FIFO could block forever), ``empty_file``,
``file_too_large``, ``symlink_loop``, ``bad_media_path`` (not a usable path string).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class MediaError(Exception):
    """A media path that is not read, with its ledger reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def resolve_media(root: Path, rel: str, max_bytes: int) -> Path:
    """The regular file ``rel`` names under ``root`` (already resolved), or :class:`MediaError`."""
    if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
        raise MediaError("bad_media_path")
    try:
        real = (root / rel).resolve(strict=False)  # an absolute ``rel`` replaces the root
        if not real.is_relative_to(root):
            raise MediaError("outside_root")
        st = real.stat()
    except MediaError:
        raise
    except RuntimeError:  # Python 3.11's Path.resolve on a symlink loop
        raise MediaError("symlink_loop") from None
    except FileNotFoundError:
        raise MediaError("missing_media") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError("symlink_loop") from None
        if exc.errno in (errno.ENAMETOOLONG, errno.ENOTDIR):
            raise MediaError("missing_media") from None
        raise MediaError(f"read_error:{type(exc).__name__}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError("not_a_file")
    if st.st_size == 0:
        raise MediaError("empty_file")
    if st.st_size > max_bytes:
        raise MediaError("file_too_large")
    return real


def read_media(root: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of the file ``rel`` names under ``root`` (see :func:`resolve_media`)."""
    path = resolve_media(root, rel, max_bytes)
    try:
        with open(path, "rb", opener=_no_follow_fifo) as f:
            return f.read(max_bytes + 1)
    except OSError as exc:
        raise MediaError(f"read_error:{type(exc).__name__}") from None


def _no_follow_fifo(path: str, flags: int) -> int:
    """Open without blocking on a FIFO swapped in after the check (it then reads as empty)."""
    return os.open(path, flags | os.O_NONBLOCK)
