"""WebDataset shards: writing with webdataset's own ``ShardWriter`` and reading them back.

A job's shards are written per partition, in the worker that processed it:
``shards/{subset}-{partition:06d}-{000}.tar``, rotated by sample count and size, so a partition's
files are named by the partition alone and a cluster writes them on every node at once. (A
single-stream writer, such as a mixture's, names them ``shards/{subset}-{000000}.tar``.) Tar
headers are reproducible (fixed mtime, owner and mode), so the same samples give the same bytes.
Each shard is written under a temporary name and renamed when closed.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from manifests.configs import require

FIXED_MTIME = 0.0


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
    """

    def __init__(
        self,
        out_dir: str | Path,
        subset: str,
        max_count: int,
        max_bytes: int,
        partition: int | None = None,
    ):
        import webdataset as wds

        self.out_dir = Path(out_dir)
        self.subset = subset
        (self.out_dir / "shards").mkdir(parents=True, exist_ok=True)
        if partition is None:
            name = f"{subset}-%06d.tar"
        else:
            name = f"{subset}-{partition:06d}-%03d.tar"
            for old in (self.out_dir / "shards").glob(f"{subset}-{partition:06d}-*.tar*"):
                old.unlink()
        self.written: list[dict] = []
        self._counts: dict[str, int] = {}
        self._max_count, self._max_bytes = max_count, max_bytes
        pattern = str(self.out_dir / "shards" / name)
        self._writer = wds.ShardWriter(
            pattern,
            maxcount=max_count,
            maxsize=max_bytes,
            post=self._finished,
            opener=self._open_tmp,
            verbose=0,
            encoder=False,
            mtime=FIXED_MTIME,
            user="vl3data",
            group="vl3data",
            mode=0o444,
        )

    @staticmethod
    def _tmp(fname: str) -> str:
        return fname + ".tmp"

    def _open_tmp(self, fname: str):
        self._counts[fname] = 0
        return open(self._tmp(fname), "wb")

    def _finished(self, fname: str) -> None:
        # TarWriter leaves a file object it did not open itself open: close before renaming
        tar_writer = self._writer.tarstream
        if tar_writer is not None and not tar_writer.stream.closed:
            tar_writer.stream.flush()
            os.fsync(tar_writer.stream.fileno())
            tar_writer.stream.close()
        os.replace(self._tmp(fname), fname)
        self.written.append(
            {
                "path": os.path.relpath(fname, self.out_dir),
                "subset": self.subset,
                "samples": self._counts[fname],
                "bytes": os.path.getsize(fname),
            }
        )

    def shard_of_next(self) -> str:
        w = self._writer
        rotate = w.tarstream is None or w.count >= w.maxcount or w.size >= w.maxsize
        fname = (w.pattern % w.shard) if rotate else w.fname
        return os.path.relpath(fname, self.out_dir)

    def write(self, sample: dict) -> str:
        """Write one sample; returns the shard path (relative to the shard set) it went to."""
        shard = self.shard_of_next()
        self._writer.write(sample)
        self._counts[self._writer.fname] += 1
        return shard

    def close(self) -> list[dict]:
        self._writer.close()
        # ShardWriter opens its first shard eagerly; an empty one is not part of the set
        for fname in list(self._counts):
            if self._counts[fname] == 0:
                for p in (fname, self._tmp(fname)):
                    if os.path.exists(p):
                        os.remove(p)
                self.written = [s for s in self.written if s["samples"] > 0]
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
