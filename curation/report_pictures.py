"""Pictures of a few ledger rows, wherever their bytes still are, for the curated-image report.

The ledger keeps a thumbnail of only a few dropped rows, and none of the rows that a global step
(a top fraction, a cluster quota) dropped. The report first picks the handful of rows it wants
to show (by score, by cluster) and only then looks for their bytes, so it never holds more than
those few images. Where it looks, cheapest first:

1. the thumbnail the ledger stored for the row;
2. the row's shard member, for kept rows (``shard``, ``key``);
3. the first pass's pieces under ``OUT/_work/`` (there while the job writes its report, or
   kept with ``keep_work``): they hold the original bytes of every row no first-pass filter
   dropped, including those a global step dropped later;
4. the source, when it is local: a folder (``folder:/path``, the row's ``source_key`` below
   it; a key that resolves outside the folder is refused, as the loader refuses it) or
   uncompressed WebDataset tars (``webdataset:/path``, key ``TAR#KEY``: each tar streamed once
   for all its wanted keys, other samples passed by seeking).

A row whose bytes are nowhere gets ``why`` instead of ``jpeg``: the page says so.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.job import WORK
from reports.samples import THUMB_PX, kept_sample, shard_samples
from reports.thumbs import make_thumb

#: A source file larger than this is not read for a thumbnail (the curate job caps pixels too).
SOURCE_MAX_BYTES = 64_000_000
#: Members of a source sample that hold its picture (as the tar source reads them).
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
#: Ledger columns :func:`find_pictures` uses, where the ledger has them.
PICTURE_COLUMNS = ("id", "source", "source_key", "partition", "status", "shard", "key", "thumb")

NOT_REACHABLE = (
    "bytes no longer reachable (not kept, no thumbnail in the ledger, the work folder is gone "
    "and the source is not a local folder)"
)


def find_pictures(out: Path, rows: list[dict[str, Any]], notes: list[str]) -> None:
    """Give each row a ``jpeg`` thumbnail (and ``found_in``), or a ``why`` when there is none.

    ``rows`` are ledger rows with (some of) :data:`PICTURE_COLUMNS`; they are updated in place.
    """
    for r in rows:
        if r.get("thumb"):
            r["jpeg"], r["found_in"] = r["thumb"], "ledger thumbnail"
    _from_shards(out, [r for r in rows if "jpeg" not in r], notes)
    _from_work(out, [r for r in rows if "jpeg" not in r])
    _from_source([r for r in rows if "jpeg" not in r])
    _from_source_tars([r for r in rows if "jpeg" not in r], notes)
    for r in rows:
        if "jpeg" not in r:
            r.setdefault("why", NOT_REACHABLE)


def _from_shards(out: Path, rows: list[dict[str, Any]], notes: list[str]) -> None:
    """Kept rows, read back from their shards: each shard streamed once, left when done."""
    by_shard: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        if r.get("status") == "kept" and r.get("shard") and r.get("key"):
            by_shard.setdefault(r["shard"], {}).setdefault(r["key"], []).append(r)
    for shard, wanted in sorted(by_shard.items()):
        path = out / shard
        if not path.resolve().is_relative_to(out.resolve()) or not path.is_file():
            continue
        left = set(wanted)
        try:
            with contextlib.closing(shard_samples(path, set(left))) as stream:
                for sample in stream:
                    key = str(sample.get("__key__"))
                    if key not in left:
                        continue
                    left.discard(key)
                    got = kept_sample(shard, sample)
                    for r in wanted[key]:
                        if "jpeg" in got:
                            r["jpeg"], r["found_in"] = got["jpeg"], "shard"
                        else:
                            r["why"] = got.get("error", "no picture")
                    if not left:
                        break
        except Exception as exc:  # a broken shard is a finding, not a reason to lose the report
            notes.append(f"Shard {path.name} could not be read: {type(exc).__name__}: {exc}")


def _from_work(out: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of the first pass's pieces that still hold their bytes; only those rows are read."""
    work = out / WORK
    if not work.is_dir():
        return
    by_part: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        if r.get("partition") is not None and r.get("id"):
            by_part.setdefault(int(r["partition"]), {}).setdefault(r["id"], []).append(r)
    for p, wanted in sorted(by_part.items()):
        for piece in sorted(work.glob(f"*/scored/p{p:06d}/*.parquet")):
            left = [i for i in wanted if "jpeg" not in wanted[i][0]]
            if not left:
                break
            try:
                if not {"id", "image"} <= set(pq.read_schema(piece).names):
                    continue
                t = pq.read_table(piece, columns=["id", "image"], filters=ds.field("id").isin(left))
            except (OSError, ValueError):  # a piece being written or broken: look elsewhere
                continue
            for i, data in zip(t["id"].to_pylist(), t["image"].to_pylist(), strict=True):
                jpeg = make_thumb(data, THUMB_PX) if data else None
                if jpeg:
                    for r in wanted.get(i, []):
                        r["jpeg"], r["found_in"] = jpeg, "work folder"


def _from_source(rows: list[dict[str, Any]]) -> None:
    """Rows of a local folder source, read from their file there (never from outside it)."""
    for r in rows:
        source = r.get("source") or ""
        if not source.startswith("folder:") or not r.get("source_key"):
            continue
        root = Path(source.removeprefix("folder:"))
        try:
            path = (root / r["source_key"]).resolve()
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                continue
            if path.stat().st_size > SOURCE_MAX_BYTES:
                r["why"] = "source file too large to picture"
                continue
            jpeg = make_thumb(path.read_bytes(), THUMB_PX)
        except (OSError, RuntimeError):
            continue
        if jpeg:
            r["jpeg"], r["found_in"] = jpeg, "source"
        else:
            r["why"] = "source file does not decode"


def _from_source_tars(rows: list[dict[str, Any]], notes: list[str]) -> None:
    """Rows of a local WebDataset source (``source_key`` ``REL.tar#KEY``), read from their tar:
    one sequential pass per tar for all its wanted keys; a tar outside the source is refused."""
    from manifests.shards import tar_samples

    by_tar: dict[Path, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        source, key = r.get("source") or "", r.get("source_key") or ""
        if not source.startswith("webdataset:") or "#" not in key:
            continue
        root = Path(source.removeprefix("webdataset:")).resolve()
        rel, member = key.rsplit("#", 1) if key.count("#") == 1 else (None, None)
        if rel is None:  # a key the tar repeats (KEY#2): not worth guessing which
            continue
        tar = root if root.is_file() else (root / rel).resolve()
        if not (tar == root or tar.is_relative_to(root)) or tar.suffix != ".tar":
            continue
        by_tar.setdefault(tar, {}).setdefault(member, []).append(r)
    for tar, wanted in sorted(by_tar.items()):
        if not tar.is_file():
            continue
        left = set(wanted)

        def keep(_ordinal: int, k: str, left: set[str] = left) -> bool | None:
            return (k in left) if left else None  # None: all found, stop reading

        try:
            for sample in tar_samples(str(tar), keep):
                key = sample["__key__"]
                left.discard(key)
                data = next((v for e, v in sample.items() if e in _IMAGE_EXTS), None)
                jpeg = make_thumb(data, THUMB_PX) if data else None
                for r in wanted[key]:
                    if jpeg:
                        r["jpeg"], r["found_in"] = jpeg, "source"
                    else:
                        r["why"] = "source member does not decode"
        except Exception as exc:  # a broken source tar is a note, not a lost report
            notes.append(f"Source tar {tar.name} could not be read: {type(exc).__name__}: {exc}")
