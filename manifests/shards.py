"""WebDataset shards: writing with webdataset's own ``ShardWriter`` and reading them back.

A job's shards are written per partition, in the worker that processed it:
``shards/{subset}-{partition:06d}-{000}.tar``, rotated by sample count and size, so a partition's
files are named by the partition alone and a cluster writes them on every node at once. (A
single-stream writer, such as a mixture's, names them ``shards/{subset}-{000000}.tar``.) Tar
headers are reproducible (fixed mtime, owner and mode), so the same samples give the same bytes.
Each shard is written under a temporary name and renamed when closed.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from manifests.configs import require

#: an int: a float mtime makes tarfile add a PAX header ("mtime=0.0") to every member
FIXED_MTIME = 0


@dataclass
class ShardLimits:
    """When a shard is full (jobs whose subsets are named by what they hold, not by config)."""

    max_count: int = 10_000  # samples per tar
    max_bytes: int = 1_000_000_000  # bytes per tar

    def __post_init__(self) -> None:
        require(self.max_count >= 1, "shards.max_count", "must be at least 1")
        require(self.max_bytes >= 1024, "shards.max_bytes", "must be at least 1024")


class ShardSetWriter:
    """Append samples (``{"__key__": ..., "jpg": bytes, "json": bytes}``) to rotating shards.

    ``written`` lists ``{"path", "subset", "samples", "bytes"}`` for every finished shard, in
    order; :meth:`shard_of_next` tells which shard the next sample will land in (the ledger
    records it).

    With ``partition``, the writer holds that partition's tars only, and first removes whatever
    an interrupted earlier attempt at the same partition left (finished or temporary tars).

    The tars are byte for byte what webdataset's ``ShardWriter`` writes with ``encoder=False``
    and fixed ``mtime``/``user``/``group``/``mode`` (a test holds the two side by side): the
    same members in the same order, tarfile's default (PAX) headers, streamed. Written with
    ``tarfile`` so that a worker writing shards does not import webdataset, which imports torch
    (~2 s of CPU and ~700 MB resident in every worker process).
    """

    def __init__(
        self,
        out_dir: str | Path,
        subset: str,
        max_count: int,
        max_bytes: int,
        partition: int | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.subset = subset
        (self.out_dir / "shards").mkdir(parents=True, exist_ok=True)
        if partition is None:
            name = f"{subset}-%06d.tar"
        else:
            name = f"{subset}-{partition:06d}-%03d.tar"
            for old in (self.out_dir / "shards").glob(f"{subset}-{partition:06d}-*.tar*"):
                old.unlink()
        self._pattern = str(self.out_dir / "shards" / name)
        self._max_count, self._max_bytes = max_count, max_bytes
        self.written: list[dict] = []
        self._next = 0  # number of the next shard to open
        self._fname: str | None = None
        self._file = None
        self._tar: tarfile.TarFile | None = None
        self._count = self._size = 0

    def _rotate(self) -> bool:
        return self._tar is None or self._count >= self._max_count or self._size >= self._max_bytes

    def shard_of_next(self) -> str:
        fname = self._pattern % self._next if self._rotate() else self._fname
        return os.path.relpath(fname, self.out_dir)

    def write(self, sample: dict) -> str:
        """Write one sample; returns the shard path (relative to the shard set) it went to."""
        if self._rotate():
            self._finish()
            self._open()
        assert self._tar is not None and self._fname is not None
        key = sample["__key__"]
        for k, v in sample.items():
            if not k.startswith("_") and not isinstance(v, bytes | bytearray | memoryview | str):
                raise ValueError(f"{key}.{k} is {type(v).__name__}, not bytes")
        for k in sorted(sample):
            if k.startswith("_"):
                continue
            data = sample[k].encode() if isinstance(sample[k], str) else bytes(sample[k])
            info = tarfile.TarInfo(f"{key}.{k}")
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o444
            info.uname = info.gname = "vl3data"
            self._tar.addfile(info, io.BytesIO(data))
            self._size += len(data)
        self._count += 1
        return os.path.relpath(self._fname, self.out_dir)

    def _open(self) -> None:
        self._fname = self._pattern % self._next
        self._next += 1
        self._file = open(self._fname + ".tmp", "wb")  # noqa: SIM115 (closed in _finish)
        # "w", not the streaming "w|": the same bytes without _Stream's Python-level buffering
        self._tar = tarfile.open(fileobj=self._file, mode="w")  # noqa: SIM115
        self._count = self._size = 0

    def _finish(self) -> None:
        if self._tar is None or self._file is None or self._fname is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._fname + ".tmp", self._fname)
        self.written.append(
            {
                "path": os.path.relpath(self._fname, self.out_dir),
                "subset": self.subset,
                "samples": self._count,
                "bytes": os.path.getsize(self._fname),
            }
        )
        self._tar = self._file = None

    def close(self) -> list[dict]:
        self._finish()
        return self.written


def iter_samples(shard_paths: list[str | Path]) -> Iterator[dict]:
    """Raw samples (``__key__`` plus bytes per extension) from shards, in order, grouped as
    webdataset groups them (``tar_samples``) without importing it."""
    for path in shard_paths:
        yield from tar_samples(str(path), lambda _ordinal, _key: True)


#: tar members webdataset does not group into samples (``__meta__`` and the like)
_SKIP_META = re.compile(r"__[^/]*__($|/)")
#: webdataset's own rule for a member's sample key and extension
#: (``webdataset.tariterators.base_plus_ext``), here so that reading a tar does not import
#: webdataset, whose import loads torch (about 2 s and 700 MB on a driver that only reads)
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def split_key(name: str) -> tuple[str | None, str | None]:
    """``("dir/key", "f0001.jpg")`` for ``"dir/key.f0001.jpg"``: key up to the first dot of the
    last path part, exactly as webdataset groups members; ``(None, None)`` when there is none."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


#: ``keep(ordinal, key)``: True reads the sample, False passes it, None ends the reading
Keep = Callable[[int, str], "bool | None"]


def tar_samples(path: str, keep: Keep) -> Iterator[dict]:
    """The samples of one tar that ``keep`` accepts, grouped by key the way webdataset groups
    them (regular files, ``__meta__`` skipped, key = name up to the first dot of its last
    part, extensions lower-cased). The data of the others is passed by seeking."""
    ordinal, key, cur = -1, None, None
    with tarfile.open(path, "r:") as tf:
        while (member := tf.next()) is not None:
            tf.members = []  # headers already passed are not needed again
            if not member.isreg() or _SKIP_META.match(member.name):
                continue
            k, ext = split_key(member.name)
            if k is None:
                continue
            if k != key:
                if cur is not None:
                    yield cur
                ordinal, key = ordinal + 1, k
                verdict = keep(ordinal, k)
                if verdict is None:
                    return
                cur = {"__key__": k, "__url__": path} if verdict else None
            if cur is not None:
                f = tf.extractfile(member)
                assert f is not None
                cur[ext.lower()] = f.read()
    if cur is not None:
        yield cur
