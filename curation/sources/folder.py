"""A folder of images, walked recursively. ``a/b.jpg`` may have ``a/b.txt`` (its alt-text) and
``a/b.json`` (metadata) beside it, as img2dataset's ``files`` output format writes them."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pyarrow as pa

from curation.config import InputConfig
from engine.partitions import Partition
from manifests.marks import errors_to
from manifests.schema import new_rows

#: the most a ``.txt``/``.json`` beside an image may hold (a caption is a few hundred bytes)
SIDECAR_MAX_BYTES = 1_000_000


def source_name(cfg: InputConfig) -> str:
    return f"folder:{Path(cfg.path).resolve()}"


def list_folder_partitions(cfg: InputConfig) -> list[Partition]:
    root = Path(cfg.path)
    if not root.is_dir():
        raise FileNotFoundError(f"input.path {root} is not a folder (input.kind is 'folder')")
    exts = set(cfg.extensions)
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)  # once per folder, not per file: a driver lists
        prefix = "" if rel == "." else rel + os.sep  # millions of files before any work
        for name in sorted(filenames):
            if name.rsplit(".", 1)[-1].lower() in exts and "." in name:
                files.append(prefix + name)
    files.sort()
    size = cfg.partition_size
    # a partition's names as one NUL-joined string (NUL is the one byte no file name holds), not
    # a list: the driver keeps every partition's spec for the whole run; planning 100,000 names
    # raised its peak memory 8.0 MB this way, 11.7 MB as lists (VmHWM, a scratch script)
    chunks = (files[start : start + size] for start in range(0, len(files), size))
    return [
        Partition(index=i, kind="folder", spec={"names": "\0".join(c), "length": len(c)})
        for i, c in enumerate(chunks)
    ]


def partition_files(part: Partition) -> list[str]:
    """The file names of a folder partition (relative to the pool); a plan written before
    names were joined lists them."""
    if "files" in part.spec:
        return list(part.spec["files"])
    names = part.spec["names"]
    return names.split("\0") if names else []


def _read_sidecar(path: Path, root: Path) -> tuple[bytes | None, str | None]:
    """A ``.txt``/``.json`` beside an image: (its bytes, None), (None, None) when there is none,
    or (None, reason) when it is refused (too large, or a link out of the input folder)."""
    try:
        if not path.is_file():
            return None, None
        if not path.resolve().is_relative_to(root):
            return None, "outside_root"
        if path.stat().st_size > SIDECAR_MAX_BYTES:
            return None, "sidecar_too_large"
        return path.read_bytes(), None
    except (OSError, RuntimeError):
        return None, None


def load_folder_partition(part: Partition, cfg: InputConfig) -> pa.Table:
    root = Path(cfg.path).resolve()
    keys = partition_files(part)
    images, sizes, texts, metas, reasons = [], [], [], [], []
    for rel in keys:
        path = root / rel
        data, reason, size = None, None, None
        try:
            real = path.resolve()
            if not real.is_relative_to(root):
                reason = "outside_root"  # a symlink pointing out of the input folder
            else:
                st = real.stat()
                size = st.st_size
                if not stat.S_ISREG(st.st_mode):
                    # a FIFO, socket or device named x.jpg: reading it could block forever
                    reason, size = "not_a_file", None
                elif size == 0:
                    reason = "empty_file"
                elif size > cfg.max_file_bytes:
                    reason = "file_too_large"
                else:
                    data = real.read_bytes()
        except RuntimeError:  # Python 3.11's Path.resolve on a symlink loop
            reason = "symlink_loop"
        except OSError as exc:
            reason = (
                "symlink_loop" if exc.errno == errno.ELOOP else f"read_error:{type(exc).__name__}"
            )
        sizes.append(size)
        stem = path.with_suffix("")
        txt, txt_reason = _read_sidecar(stem.with_suffix(".txt"), root)
        meta, meta_reason = _read_sidecar(stem.with_suffix(".json"), root)
        reason = reason or txt_reason or meta_reason
        if reason is not None:
            data = None
        texts.append(txt.decode("utf-8", "replace").strip() if txt else None)
        metas.append(_valid_json(meta))
        images.append(data)
        reasons.append(reason)
    table = new_rows(
        source_name(cfg),
        part.index,
        keys,
        image=images,
        bytes=sizes,
        text=texts,
        meta=metas,
        ext=[_ext(k) for k in keys],
    )
    return errors_to(table, reasons, stage="read")


def _ext(name: str) -> str:
    """The file's own extension; the decode stage corrects it when the content disagrees."""
    return name.rsplit(".", 1)[-1].lower()


def _valid_json(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return json.dumps(json.loads(raw), sort_keys=True)
    except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[... a few KB deep
        return None
