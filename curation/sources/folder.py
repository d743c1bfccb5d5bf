"""A folder of images, walked recursively. ``a/b.jpg`` may have ``a/b.txt`` (its alt-text) and
``a/b.json`` (metadata) beside it, as img2dataset's ``files`` output format writes them."""

from __future__ import annotations

import errno
import json
import os
import stat
from functools import partial
from pathlib import Path

import pyarrow as pa

from curation.config import InputConfig
from engine import local_pool
from engine.partitions import Partition
from manifests.marks import errors_to
from manifests.schema import new_rows

#: the most a ``.txt``/``.json`` beside an image may hold (a caption is a few hundred bytes)
SIDECAR_MAX_BYTES = 1_000_000


def source_name(cfg: InputConfig) -> str:
    return f"folder:{Path(cfg.path).resolve()}"


def list_folder_partitions(cfg: InputConfig) -> list[Partition]:
    """The folder's images (recursively, links not followed) in name order, cut into partitions
    of ``input.partition_size``.

    The driver reads only the top folder; its subfolders are listed by the job's local worker
    processes when it has them (``engine.local_pool.map_on_workers``), a few subfolders per
    task: listing is per-file work (about a microsecond a file here, 0.1 s of the driver's CPU
    for 100,000), and the workers are idle until the plan exists. The names are the same
    either way.
    """
    root = Path(cfg.path)
    if not root.is_dir():
        raise FileNotFoundError(f"input.path {root} is not a folder (input.kind is 'folder')")
    exts = frozenset(cfg.extensions)
    files: list[str] = []
    subdirs: list[str] = []
    with os.scandir(root) as entries:  # as os.walk(followlinks=False) sees the top folder:
        for entry in entries:  # a link to a folder is a folder, and is not entered
            if _is_dir(entry):
                if not entry.is_symlink():
                    subdirs.append(entry.name)
            elif _wanted(entry.name, exts):
                files.append(entry.name)
    subdirs.sort()
    pool = local_pool.current()
    groups = _groups(subdirs, 2 * pool.workers if pool is not None else 1)
    for names in local_pool.map_on_workers(partial(_list_subdirs, str(root), exts), groups):
        files += names
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


def _is_dir(entry: os.DirEntry) -> bool:
    """As os.walk decides: a link is followed to ask, and one that cannot be (a loop) is a
    file, which the loader then records as one."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _wanted(name: str, exts: frozenset[str]) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in exts


def _groups(names: list[str], n: int) -> list[list[str]]:
    """``names`` in at most ``n`` runs of consecutive names, as even as can be."""
    n = max(1, min(n, len(names)))
    step, extra = divmod(len(names), n)
    out, start = [], 0
    for i in range(n):
        end = start + step + (i < extra)
        out.append(names[start:end])
        start = end
    return [g for g in out if g]


def _list_subdirs(root: str, exts: frozenset[str], subdirs: list[str]) -> list[str]:
    """The wanted files under each of ``subdirs`` of ``root`` (recursively, links not
    followed), relative to ``root``. Runs in a worker process."""
    files: list[str] = []
    for sub in subdirs:
        for dirpath, _dirnames, filenames in os.walk(os.path.join(root, sub), followlinks=False):
            rel = os.path.relpath(dirpath, root)  # once per folder, not per file
            prefix = rel + os.sep
            files += [prefix + name for name in filenames if _wanted(name, exts)]
    files.sort()  # here, not in the driver: its sort of the sorted runs is then a merge
    return files


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
