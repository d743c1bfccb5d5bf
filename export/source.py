"""A shard set read for export: checked against its ``dataset.json`` first, then streamed one
tar member at a time into a staging folder, so memory stays flat in the number of samples and
in a sample's size (a video's frames are files on disk, never a list of bytes).

A materialised mixture is a shard set like any other (``mixtures.materialise`` writes
``dataset.json`` and ``shards/``); its records keep their sources' member names, which
``export.records.member_of`` resolves by extension.

Damage (a shard missing, cut short, longer than written, not a tar, holding fewer samples than
declared) stops the export with :class:`DamagedShard`, one line naming the shard and the fix;
a read error is never taken for a bad sample.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from manifests.dataset import DATASET_JSON, read_dataset_json
from manifests.shards import split_key

#: what to do about a damaged shard (the same advice ``vl3data mix --check`` gives)
REBUILD = "rebuild the source shard set: rerun the job that wrote it with --restart"
CHUNK = 1 << 20  # bytes copied per read
#: a ``json`` member above this is not a training record (``skipped.jsonl``: json_too_large)
MAX_JSON_BYTES = 16 << 20

T = TypeVar("T")


class DamagedShard(RuntimeError):
    """A shard that is not what ``dataset.json`` declares; the message names it and the fix."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"shard {path} {problem} (fix: {REBUILD})")


@dataclass
class StagedSample:
    """One sample: its record (or why there is none) and its media members as staged files."""

    key: str
    shard: str  # the tar's path relative to the shard set
    files: dict[str, Path] = field(default_factory=dict)  # extension -> staged file
    record: object = None
    problem: str | None = None  # no_json | bad_json | json_too_large


def shard_entries(root: Path) -> list[dict]:
    """``dataset.json``'s shard list, each tar checked present and of its declared size."""
    if not (root / DATASET_JSON).is_file():
        inside = sorted(p.parent.name for p in root.glob(f"*/{DATASET_JSON}"))
        hint = f"; the shard sets in it: {', '.join(inside)}" if inside else ""
        raise FileNotFoundError(
            f"{root / DATASET_JSON} not found: give a finished shard set or materialised "
            f"mixture (a folder with dataset.json){hint}"
        )
    doc = read_dataset_json(root)
    entries = doc.get("shards")
    if not isinstance(entries, list):
        raise ValueError(f"{root / DATASET_JSON} has no shard list")
    for e in entries:
        path = root / e["path"]
        if not path.resolve().is_relative_to(root.resolve()):
            raise ValueError(f"{root / DATASET_JSON} lists {e['path']!r}, outside the set")
        if not path.is_file():
            raise DamagedShard(path, f"is missing but {root / DATASET_JSON} lists it")
        size = path.stat().st_size
        declared = e.get("bytes")
        if declared is not None and size != int(declared):
            what = "is empty" if size == 0 else f"is {size} bytes"
            cut = "truncated" if size < int(declared) else "longer than written"
            problem = f"{what} but {root / DATASET_JSON} declares {declared} ({cut})"
            raise DamagedShard(path, problem)
    return entries


class _Tar:
    """One tar, read member by member; every read error becomes :class:`DamagedShard`."""

    def __init__(self, path: Path):
        self.path = path
        self.tf = self._read(lambda: tarfile.open(path, "r:"))  # noqa: SIM115 (close())

    def _read(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DamagedShard(self.path, f"cannot be read as a tar ({exc})") from None

    def members(self) -> Iterator[tarfile.TarInfo]:
        while (m := self._read(self.tf.next)) is not None:
            self.tf.members = []  # headers already passed are not needed again
            yield m

    def copy(self, member: tarfile.TarInfo, dest: Path) -> None:
        src = self._read(lambda: self.tf.extractfile(member))
        assert src is not None
        with open(dest, "wb") as out:
            while chunk := self._read(lambda: src.read(CHUNK)):
                out.write(chunk)

    def read(self, member: tarfile.TarInfo) -> bytes:
        src = self._read(lambda: self.tf.extractfile(member))
        assert src is not None
        return self._read(src.read)

    def close(self) -> None:
        self.tf.close()


def _record(sample: StagedSample, data: bytes) -> None:
    try:
        sample.record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        sample.problem = "bad_json"


def staged_samples(root: Path, staging: Path) -> Iterator[StagedSample]:
    """Every sample of the set at ``root``, in order, its media members copied into
    ``staging`` (emptied before each sample: the caller moves or leaves what it needs)."""
    staging.mkdir(parents=True, exist_ok=True)
    for entry in shard_entries(root):
        path = root / entry["path"]
        tar = _Tar(path)
        count, cur = 0, None
        try:
            for member in tar.members():
                if not member.isreg():
                    continue
                key, ext = split_key(member.name)
                if key is None or ext is None or key.rsplit("/", 1)[-1].startswith("__"):
                    continue  # what webdataset does not group into samples (__meta__ ...)
                ext = ext.lower()
                if cur is None or key != cur.key:
                    if cur is not None:
                        yield _finished(cur)
                    _empty(staging)
                    cur, count = StagedSample(key, entry["path"]), count + 1
                if ext in ("json", "jsn"):
                    if member.size > MAX_JSON_BYTES:
                        cur.problem = "json_too_large"
                    else:
                        _record(cur, tar.read(member))
                    continue
                dest = staging / f"{len(cur.files):05d}.{ext.rsplit('.', 1)[-1]}"
                tar.copy(member, dest)
                cur.files[ext] = dest
            if cur is not None:
                yield _finished(cur)
        finally:
            tar.close()
        declared = entry.get("samples")
        if declared is not None and count != int(declared):
            raise DamagedShard(
                path, f"holds {count} samples but {root / DATASET_JSON} declares {declared}"
            )
    _empty(staging)


def _finished(sample: StagedSample) -> StagedSample:
    if sample.record is None and sample.problem is None:
        sample.problem = "no_json"
    return sample


def _empty(staging: Path) -> None:
    for f in staging.iterdir():
        f.unlink()
