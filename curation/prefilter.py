"""Pre-download filtering and deduplication of a whole URL parquet pool, in bounded memory.

One scan reads only the declared columns (the URL, the rules' scores, the perceptual hash) in
batches, in pool order (the partition plan's order; a row's *position* is its index in it):

1. **Rules** (``aesthetic_score_laion_v2 >= 4.5`` ...) are Arrow compute over the batch.
2. **Hash partitioning**: the survivors' URLs are hashed (a 64-bit mix of the length and the
   first and last bytes, computed with Arrow kernels and numpy, no Python per row) and spilled
   to ``ceil(rows / bucket_rows)`` on-disk Arrow IPC buckets by hash, so equal URLs meet in one
   bucket wherever they are in the pool.
3. **Dedup per bucket**: a stable sort by hash groups candidates; equal hashes are confirmed by
   comparing the strings themselves (a group whose strings differ falls back to an exact Arrow
   dictionary encoding), so a kept row is never a false match. The first row of each group in
   pool order is kept; every other row records the kept row's position.
4. The same again on the perceptual-hash column among the URL survivors.

Decisions (position, reason code, kept position) are spilled to range files by partition and
finally written as ``ranges/r{j}.arrow`` (``partition``, ``row``, ``code``, and the kept row's
``dup_file``/``dup_row_group``/``dup_offset``, from which a loader rebuilds its ledger id).
Memory is one batch plus one bucket, whatever the pool's size; nothing holds a Python object
per row. :class:`curation.stages.prefilter_marks.PrefilterMarks` applies the result when a
partition is loaded, so a dropped row is never fetched.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.prefilter_config import PrefilterConfig
from engine.partitions import Partition
from manifests.atomic import tmp_name, write_json

log = logging.getLogger(__name__)

MAX_FILES = 65535  # buckets (and range files) are numbered in uint16
RESULT = "result.json"  # written last: its presence means the step is complete
HEAD, TAIL = 24, 64  # bytes of each value that the bucket hash reads (plus its length)
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xFF51AFD7ED558CCD)
#: odd 64-bit weights per word of each window (fixed: the hash must agree across runs)
_WEIGHTS = {
    w: np.random.default_rng(w).integers(0, 2**63, w // 8, dtype=np.uint64) * np.uint64(2) + 1
    for w in (HEAD, TAIL)
}


@dataclass(frozen=True)
class Segment:
    """A contiguous run of rows of one row group, covered by consecutive partitions."""

    file: int  # index into the files list
    row_group: int
    offset: int  # first row inside the row group
    length: int
    start: int  # position of the first row in the pool
    first_partition: int


def segments_of(parts: Sequence[Partition]) -> tuple[list[str], list[Segment], np.ndarray]:
    """The plan as row-group segments, the files they read, and each partition's start."""
    files: dict[str, int] = {}
    segs: list[Segment] = []
    starts = np.zeros(len(parts), np.int64)
    pos = 0
    for i, p in enumerate(parts):
        if p.index != i:
            raise ValueError(f"partition {p.index} at place {i}: the plan is not in order")
        s = p.spec
        fi = files.setdefault(s["file"], len(files))
        starts[i] = pos
        last = segs[-1] if segs else None
        if (
            last is not None
            and (last.file, last.row_group) == (fi, s["row_group"])
            and last.offset + last.length == s["offset"]
        ):
            segs[-1] = Segment(fi, last.row_group, last.offset, last.length + s["length"],
                               last.start, last.first_partition)  # fmt: skip
        else:
            segs.append(Segment(fi, s["row_group"], s["offset"], s["length"], pos, i))
        pos += s["length"]
    return list(files), segs, starts


def value_hash(arr: pa.Array, short: bool = False) -> np.ndarray:
    """A 64-bit hash of every value (uint64): its byte length and its first ``HEAD`` and last
    ``TAIL`` bytes, mixed. Equal values hash equal; values differing only in the middle may
    collide, which :func:`first_of_groups` resolves by comparing the values themselves.
    ``short``: the last ``TAIL`` bytes only (a perceptual hash: all of it)."""
    b = arr.cast(pa.binary()) if not pa.types.is_binary(arr.type) else arr
    if isinstance(b, pa.ChunkedArray):
        b = b.combine_chunks()
    b = b.fill_null(b"")
    n = len(b)
    h = pc.binary_length(b).to_numpy().astype(np.uint64) * _M1
    windows = [(TAIL, lambda x: pc.binary_slice(x, -TAIL))]
    if not short:  # a fixed choice: the same value must hash the same in every batch
        windows.append((HEAD, lambda x: pc.binary_slice(x, 0, HEAD)))
    for width, take in windows:
        pad = pa.scalar(b"\0" * width, pa.binary())
        window = take(b)
        fixed = pc.binary_slice(pc.binary_join_element_wise(pad, window, b""), -width)
        fixed = fixed.cast(pa.binary(width))
        buf = np.frombuffer(fixed.buffers()[1], np.uint64)
        words = buf[fixed.offset * width // 8 : (fixed.offset + n) * width // 8]
        h += words.reshape(n, width // 8) @ _WEIGHTS[width]  # wraps mod 2**64
    h ^= h >> np.uint64(31)  # avalanche, so the bucket's high bits depend on every byte read
    h *= _M2
    h ^= h >> np.uint64(29)
    return h


def first_of_groups(values: pa.Array, hashes: np.ndarray) -> np.ndarray:
    """For rows in pool order: the index of the first row equal to each row (itself when it is
    the first). Exact: groups found by hash are confirmed by comparing the values."""
    n = len(hashes)
    order = np.argsort(hashes, kind="stable")  # stable: pool order inside equal hashes
    sh = hashes[order]
    new = np.ones(n, bool)
    if n:
        np.not_equal(sh[1:], sh[:-1], out=new[1:])
    run_first = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    first = np.empty(n, np.int64)
    first[order] = run_first
    dup = np.flatnonzero(first != np.arange(n))
    if dup.size == 0:
        return first
    same = pc.equal(values.take(pa.array(dup)), values.take(pa.array(first[dup])))
    same = same.to_numpy(zero_copy_only=False)
    if same.all():
        return first
    # values alike at both ends under one hash: regroup the rows of those hash groups exactly
    bad = np.isin(first, first[dup[~same]])
    rows = np.flatnonzero(bad)  # ascending: pool order
    subset = values.take(pa.array(rows))
    if isinstance(subset, pa.ChunkedArray):
        subset = subset.combine_chunks()
    codes = pc.dictionary_encode(subset).indices.to_numpy(zero_copy_only=False)
    firsts = np.flatnonzero(codes > np.concatenate(([-1], np.maximum.accumulate(codes)[:-1])))
    first[rows] = rows[firsts[codes]]
    return first


class _Spill:
    """Arrow IPC streams on disk, one per bucket, appended batch by batch."""

    def __init__(self, folder: Path, n: int, schema: pa.Schema):
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"b{i:05d}.arrow" for i in range(n)]
        self.schema = schema
        self._writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * n

    def add(self, bucket: np.ndarray, table: pa.Table) -> None:
        """Append each row of ``table`` to its bucket (pool order is kept inside a bucket)."""
        if table.num_rows == 0:
            return
        order = np.argsort(bucket.astype(np.uint16), kind="stable")  # a radix sort
        table = table.take(pa.array(order))
        ends = np.cumsum(np.bincount(bucket, minlength=len(self.paths)))
        for b in np.flatnonzero(np.diff(ends, prepend=0)).tolist():
            s, e = int(ends[b - 1]) if b else 0, int(ends[b])
            if self._writers[b] is None:
                self._writers[b] = pa.ipc.new_stream(str(self.paths[b]), self.schema)
            self._writers[b].write_table(table.slice(s, e - s))

    def close(self) -> None:
        for w in self._writers:
            if w is not None:
                w.close()

    def read(self) -> Iterator[pa.Table]:
        """Each non-empty bucket in turn (then deleted: disk use shrinks as it goes)."""
        self.close()
        for p in self.paths:
            if p.is_file():
                with pa.ipc.open_stream(str(p)) as reader:
                    table = reader.read_all()
                p.unlink()
                yield table


DECISIONS = pa.schema([("pos", pa.int64()), ("code", pa.int16()), ("dup_pos", pa.int64())])


def prefilter_pool(
    parts: Sequence[Partition],
    url_column: str,
    cfg: PrefilterConfig,
    work: Path,
    ranges_per_file: int | None = None,
) -> dict:
    """Judge every row of the planned pool; write the decisions under ``work``; return the
    result (reason codes, counts, files) that ``work/result.json`` records. A finished result
    is reused as it is (the step survives kill -9 and reruns)."""
    done = work / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(work, ignore_errors=True)  # what an interrupted attempt left
    _allow_open_files(3 * math.ceil(sum(p.inputs() or 0 for p in parts) / cfg.bucket_rows))
    files, segs, starts = segments_of(parts)
    total = int(sum(s.length for s in segs))
    n_buckets = min(MAX_FILES, max(1, math.ceil(total / cfg.bucket_rows)))
    reasons = [None]  # code 0: kept
    for r in cfg.rules:
        reasons += [r.reason(), f"{r.column}:missing"]
    url_code = len(reasons)
    reasons.append(f"duplicate:{url_column}")
    phash_code = len(reasons)
    reasons.append(f"duplicate:{cfg.phash_column}")
    # decisions go to range files of whole partitions, about a bucket's rows each
    per_part = max(1, int(max(np.diff(np.append(starts, total)).max(initial=1), 1)))
    ppf = ranges_per_file or max(1, cfg.bucket_rows // per_part)
    ppf = max(ppf, math.ceil(len(parts) / MAX_FILES))
    n_ranges = max(1, math.ceil(len(parts) / ppf))
    decided = _Spill(work / "decided", n_ranges, DECISIONS)

    def decide(pos: np.ndarray, code: int | np.ndarray, dup_pos: np.ndarray | None = None):
        if len(pos) == 0:
            return
        part = np.searchsorted(starts, pos, side="right") - 1
        codes = np.broadcast_to(np.asarray(code, np.int16), pos.shape)
        dups = np.full(len(pos), -1, np.int64) if dup_pos is None else dup_pos
        t = pa.table({"pos": pos, "code": codes, "dup_pos": dups}, schema=DECISIONS)
        decided.add(part // ppf, t)

    key_type = pa.string()  # a batch's keys stay far below 2 GB; buckets stay chunked
    url_spill = _Spill(
        work / "url", n_buckets,
        pa.schema([("pos", pa.int64()), ("h", pa.uint64()), ("key", key_type),
                   ("phash", key_type)]),
    )  # fmt: skip
    phash_spill = _Spill(
        work / "phash", n_buckets,
        pa.schema([("pos", pa.int64()), ("h", pa.uint64()), ("key", key_type)]),
    )  # fmt: skip
    counts = np.zeros(len(reasons), np.int64)

    def to_phash_buckets(pos: np.ndarray, values: pa.Array) -> None:
        valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
        pos, values = pos[valid], values.filter(pa.array(valid))
        h = value_hash(values, short=True)
        phash_spill.add(
            _bucket(h, n_buckets), pa.table({"pos": pos, "h": h, "key": values.cast(key_type)})
        )

    for pos, batch in _scan(files, segs, url_column, cfg, total):
        code = _rule_codes(batch, cfg)
        dropped = code > 0
        decide(pos[dropped], code[dropped])
        counts += np.bincount(code[dropped], minlength=len(reasons))
        keep = pa.array(~dropped)
        pos, batch = pos[~dropped], batch.filter(keep)
        if cfg.dedup_url:
            urls = batch[url_column].combine_chunks()
            valid = pc.fill_null(pc.not_equal(urls, ""), False).to_numpy(zero_copy_only=False)
            h = value_hash(urls)
            phash = (
                batch[cfg.phash_column].cast(key_type)
                if cfg.phash_column
                else pa.nulls(batch.num_rows, key_type)
            )
            t = pa.table({"pos": pos, "h": h, "key": urls.cast(key_type), "phash": phash})
            url_spill.add(_bucket(h[valid], n_buckets), t.filter(pa.array(valid)))
            if cfg.phash_column and (~valid).any():  # no URL to compare: on to the phash
                rest = pa.array(~valid)
                to_phash_buckets(pos[~valid], phash.filter(rest))
        elif cfg.phash_column:
            to_phash_buckets(pos, batch[cfg.phash_column].cast(key_type))

    for bucket in url_spill.read():
        pos = bucket["pos"].to_numpy()
        first = first_of_groups(bucket["key"], bucket["h"].to_numpy())
        dup = first != np.arange(len(pos))
        decide(pos[dup], url_code, pos[first[dup]])
        counts[url_code] += int(dup.sum())
        if cfg.phash_column:
            keep = pa.array(~dup)
            to_phash_buckets(pos[~dup], bucket["phash"].filter(keep))
    for bucket in phash_spill.read():
        bucket = bucket.sort_by("pos")  # filled from every URL bucket: back to pool order
        pos = bucket["pos"].to_numpy()
        first = first_of_groups(bucket["key"], bucket["h"].to_numpy())
        dup = first != np.arange(len(pos))
        decide(pos[dup], phash_code, pos[first[dup]])
        counts[phash_code] += int(dup.sum())

    seg_start = np.array([s.start for s in segs], np.int64)
    seg_file = np.array([s.file for s in segs], np.int32)
    seg_rg = np.array([s.row_group for s in segs], np.int32)
    seg_off = np.array([s.offset for s in segs], np.int64)
    ranges = work / "ranges"
    for j, t in _numbered(decided):
        t = t.sort_by("pos")
        pos, dup_pos = t["pos"].to_numpy(), t["dup_pos"].to_numpy()
        part = np.searchsorted(starts, pos, side="right") - 1
        has = dup_pos >= 0
        seg = np.searchsorted(seg_start, np.where(has, dup_pos, 0), side="right") - 1
        out = pa.table(
            {
                "partition": pa.array(part, pa.int32()),
                "row": pa.array(pos - starts[part], pa.int32()),
                "code": t["code"],
                "dup_file": pa.array(seg_file[seg], pa.int32(), mask=~has),
                "dup_row_group": pa.array(seg_rg[seg], pa.int32(), mask=~has),
                "dup_offset": pa.array(
                    seg_off[seg] + dup_pos - seg_start[seg], pa.int64(), mask=~has
                ),
            }
        )
        # sorted by partition, each partition's rows found by offsets (no scan at load time)
        bounds = np.arange(j * ppf, (j + 1) * ppf + 1)
        offsets = np.searchsorted(part, bounds).tolist()
        write_ranges(ranges / f"r{j:06d}.arrow", out, offsets)
    for sub in ("decided", "url", "phash"):
        shutil.rmtree(work / sub, ignore_errors=True)
    result = {
        "rows": total,
        "reasons": reasons,
        "counts": {reasons[c]: int(counts[c]) for c in range(1, len(reasons)) if counts[c]},
        "files": files,
        "partitions_per_range": ppf,
        "buckets": n_buckets,
    }
    write_json(done, result)
    log.info(
        "prefilter: %d rows, %d dropped before download (%s)",
        total,
        int(counts.sum()),
        ", ".join(f"{k} {v}" for k, v in result["counts"].items()) or "none",
    )
    return result


def write_ranges(path: Path, table: pa.Table, offsets: list[int]) -> None:
    """An Arrow IPC file (memory-mapped when read) with the partitions' row offsets in its
    schema metadata; written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata({"offsets": json.dumps(offsets)})
    tmp = tmp_name(path)
    with pa.ipc.new_file(str(tmp), table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_range(work: Path, result: dict, partition: int) -> pa.Table | None:
    """The decisions about one partition's rows (``row``, ``code``, ``dup_*``), or None."""
    ppf = result["partitions_per_range"]
    path = work / "ranges" / f"r{partition // ppf:06d}.arrow"
    if not path.is_file():  # no row of these partitions was dropped
        return None
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    offsets = json.loads(table.schema.metadata[b"offsets"])
    lo, hi = offsets[partition % ppf], offsets[partition % ppf + 1]
    return table.slice(lo, hi - lo)


def _allow_open_files(n: int) -> None:
    """Room for ``n`` spill files open at once (a pool of 700M rows keeps ~1000 open)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        top = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def _numbered(spill: _Spill) -> Iterator[tuple[int, pa.Table]]:
    spill.close()
    for j, p in enumerate(spill.paths):
        if p.is_file():
            with pa.ipc.open_stream(str(p)) as reader:
                yield j, reader.read_all()


def _bucket(h: np.ndarray, n: int) -> np.ndarray:
    """The bucket of each hash, from its high bits (the low ones order rows inside)."""
    return ((h >> np.uint64(33)) % np.uint64(n)).astype(np.int64)


def _scan(
    files: list[str], segs: list[Segment], url_column: str, cfg: PrefilterConfig, total: int
) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """(positions, the declared columns) of every planned row, in pool order, a batch at a
    time, reading only those columns and only the planned row ranges."""
    columns = list(dict.fromkeys([*([url_column] if cfg.dedup_url else []), *cfg.columns()]))
    handles: dict[int, pq.ParquetFile] = {}
    for seg in segs:
        pf = handles.get(seg.file)
        if pf is None:
            handles.clear()  # one file open at a time
            pf = handles[seg.file] = pq.ParquetFile(files[seg.file])
        at = 0  # row inside the row group
        for batch in pf.iter_batches(
            batch_size=cfg.batch_rows, row_groups=[seg.row_group], columns=columns
        ):
            lo, hi = max(seg.offset, at), min(seg.offset + seg.length, at + batch.num_rows)
            if hi > lo:
                rows = pa.Table.from_batches([batch.slice(lo - at, hi - lo)])
                yield np.arange(lo, hi, dtype=np.int64) - seg.offset + seg.start, rows
            at += batch.num_rows
            if at >= seg.offset + seg.length:
                break


def _rule_codes(batch: pa.Table, cfg: PrefilterConfig) -> np.ndarray:
    """Per row: 0 when every rule passes, else the code of the first rule that failed (its
    reason, or its ``:missing`` reason for a null/NaN score that the rule drops)."""
    code = np.zeros(batch.num_rows, np.int16)
    ops = {
        ">=": pc.greater_equal,
        ">": pc.greater,
        "<=": pc.less_equal,
        "<": pc.less,
        "==": pc.equal,
        "!=": pc.not_equal,
    }
    for i, rule in enumerate(cfg.rules):
        col = batch[rule.column]
        if pa.types.is_decimal(col.type):
            col = col.cast(pa.float64())
        ok = ops[rule.op](col, rule.value)
        nan = pc.is_nan(col) if pa.types.is_floating(col.type) else pc.is_null(col)
        missing = pc.or_kleene(pc.is_null(col), nan).to_numpy(zero_copy_only=False)
        ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
        undecided = code == 0
        fail = undecided & ~ok & ~missing
        code[fail] = 1 + 2 * i
        if rule.missing == "drop":
            code[undecided & missing] = 2 + 2 * i
    return code
