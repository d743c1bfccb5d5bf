"""WebDataset tars as input, including img2dataset's output (``000123.jpg`` + ``.txt`` +
``.json`` per sample).

We read the tar stream ourselves instead of with ``webdataset.tar_file_iterator`` because that
iterator skips non-regular members silently and reads members of any size into memory; here
every sample (and every refused member) gets a ledger row, and members are size-capped.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath

import pyarrow as pa

from curation.config import InputConfig
from engine.partitions import Partition
from manifests.marks import errors_to
from manifests.schema import new_rows

TEXT_EXTS = ("txt", "caption", "text")
#: the most a ``.txt``/``.json`` sidecar may hold: a caption is a few hundred bytes, and a
#: 40 MB ".txt" (tiny once gzipped) would otherwise be read into memory and into the ledger
SIDECAR_MAX_BYTES = 1_000_000
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def source_name(cfg: InputConfig) -> str:
    return f"webdataset:{Path(cfg.path).resolve()}"


def _tar_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        found = [str(f) for f in p.rglob("*") if f.is_file() and f.name.endswith(TAR_SUFFIXES)]
    elif p.is_file():
        found = [str(p)]
    else:
        found = glob.glob(path)
    return sorted(found)


def list_tar_partitions(cfg: InputConfig) -> list[Partition]:
    tars = _tar_files(cfg.path)
    if not tars:
        raise FileNotFoundError(
            f"input.path {cfg.path}: no .tar files found (input.kind is 'webdataset')"
        )
    return [Partition(index=i, kind="webdataset", spec={"tar": t}) for i, t in enumerate(tars)]


def split_member(name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is the path up to the first dot of the basename."""
    path = PurePosixPath(name)
    base, _, ext = path.name.partition(".")
    key = str(path.parent / base) if str(path.parent) != "." else base
    return key, ext.lower()


def unsafe_member_name(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or name.startswith("\\") or ":" in p.parts[0]


class _Group:
    def __init__(self, key: str):
        self.key = key
        self.members: dict[str, bytes] = {}
        self.error: str | None = None
        self.size: int | None = None


def _iter_groups(tar_path: str, cfg: InputConfig):
    """Yield member groups (one per sample key) in tar order; the last one may carry a tar error."""
    exts = set(cfg.extensions)
    current: _Group | None = None
    reading = False  # inside a member's data: a tar error there breaks this sample
    try:
        with tarfile.open(tar_path, mode="r|*") as stream:
            for info in stream:
                if info.isdir():
                    continue  # a folder entry is no input (and is never extracted)
                key, ext = split_member(info.name)
                if current is not None and (key != current.key or ext in current.members):
                    yield current  # a new key, or the same member again: a sample of its own
                    current = None
                if current is None:
                    current = _Group(key)
                if unsafe_member_name(info.name):
                    current.error = current.error or "unsafe_path"
                    continue
                if not info.isreg():
                    current.error = current.error or "unsafe_member"
                    continue
                sidecar = ext in TEXT_EXTS or ext == "json"
                if sidecar and info.size > SIDECAR_MAX_BYTES:
                    current.error = current.error or "sidecar_too_large"
                    continue
                if ext in exts or sidecar:
                    if info.size > cfg.max_file_bytes:
                        current.error = current.error or "file_too_large"
                        current.size = info.size
                        continue
                    reading = True
                    f = stream.extractfile(info)
                    current.members[ext] = f.read() if f else b""
                    reading = False
            if not stream.fileobj.read(tarfile.BLOCKSIZE):
                # tarfile reads a cut header block, or none at all, as the end of the archive;
                # a whole tar ends in two zero blocks, the first of which it has just read
                raise tarfile.ReadError("the tar ends without its end-of-archive blocks")
            if current is not None:
                yield current
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = f"tar_error:{type(exc).__name__}"
        if current is not None and reading:
            # the tar broke inside this sample's member: the sample is the one it cost
            current.error = current.error or error
            yield current
            return
        if current is not None:
            yield current
        broken = _Group("__tar__")
        broken.error = error
        yield broken


def load_tar_partition(part: Partition, cfg: InputConfig) -> pa.Table:
    tar_path = part.spec["tar"]
    rel = os.path.relpath(tar_path, cfg.path) if Path(cfg.path).is_dir() else Path(tar_path).name
    exts = [e for e in cfg.extensions]
    keys, images, exts_out, sizes, texts, metas, reasons = [], [], [], [], [], [], []
    seen: Counter[str] = Counter()
    used: set[str] = set()
    for group in _iter_groups(tar_path, cfg):
        img_ext = next((e for e in exts if e in group.members), None)
        data = group.members.get(img_ext) if img_ext else None
        reason = group.error
        if reason is None and img_ext is None:
            reason = "no_image_member"
        elif reason is None and not data:
            reason = "empty_file"
        text = next((group.members[e] for e in TEXT_EXTS if e in group.members), None)
        meta = group.members.get("json")
        meta_obj = _parse_json(meta)
        if text is None and isinstance(meta_obj, dict):
            # img2dataset writes "caption"; our own shards write "text"
            found = next(
                (meta_obj[k] for k in ("caption", "text") if isinstance(meta_obj.get(k), str)), None
            )
            text = found.encode() if found else None
        key = f"{rel}#{group.key}"
        seen[key] += 1
        # a key the tar repeats: every occurrence keeps its own row and id; the suffix skips
        # a key the tar itself names (x, x, then a member called x#2.jpg: x#2#2)
        unique = key if seen[key] == 1 else f"{key}#{seen[key]}"
        while unique in used:
            seen[key] += 1
            unique = f"{key}#{seen[key]}"
        used.add(unique)
        keys.append(unique)
        images.append(data if reason is None else None)
        exts_out.append(img_ext)
        sizes.append(len(data) if data is not None else group.size)
        texts.append(text.decode("utf-8", "replace").strip() if text else None)
        metas.append(json.dumps(meta_obj, sort_keys=True) if meta_obj is not None else None)
        reasons.append(reason)
    table = new_rows(
        source_name(cfg),
        part.index,
        keys,
        image=images,
        ext=exts_out,
        bytes=sizes,
        text=texts,
        meta=metas,
    )
    return errors_to(table, reasons, stage="read")


def _parse_json(raw: bytes | None):
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
        json.dumps(obj)  # written back as JSON: nesting that loads barely allowed must dump too
        return obj
    except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[... a few KB deep
        return None
