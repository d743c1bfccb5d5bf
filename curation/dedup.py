"""The pool-wide deduplication step after decoding: exact, then perceptual.

Runs between passes, on what the first pass computed (``content_hash`` and ``phash`` per live
row, ``curation.stages.dedup_hashes``), over every partition at once: a duplicate in another
partition, written by another node, is found. Rows are taken in pool order (partition, row);
of each group of duplicates the first is kept and the others go to a drop list whose
``duplicate_of`` is the kept row's id.

* exact: equal ``content_hash`` (Arrow dictionary encoding: first occurrence per value);
* perceptual: 64-bit pHashes within ``phash_max_distance`` bits, found with faiss's
  multi-index hashing (``IndexBinaryMultiHash``: by pigeonhole, two codes within t bits agree
  exactly on one of t+1 disjoint bit slices), so the cost follows the near pairs, not all pairs.
  A row goes when it is within the distance of an earlier row that was kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup_config import DedupConfig
from curation.passes import Drops, iter_live
from engine.partitions import Partition
from engine.workdir import WorkDir

log = logging.getLogger(__name__)

PHASH_BITS = 64


def first_copies(values: pa.Array) -> np.ndarray:
    """Index of the first row equal to each row (itself when first); nulls are never equal."""
    codes = pc.dictionary_encode(values).indices
    valid = pc.is_valid(codes).to_numpy(zero_copy_only=False)
    codes = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.arange(len(codes))
    if not valid.any():
        return out
    idx = np.flatnonzero(valid)
    c = codes[idx]
    firsts = idx[np.flatnonzero(c > np.concatenate(([-1], np.maximum.accumulate(c)[:-1])))]
    out[idx] = firsts[c]
    return out


#: ASCII -> hex digit value, 255 for anything else
_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
    _HEX[ord(chr(_c).upper())] = _i


def phash_codes(hexes: Sequence[str | None] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8) uint8 codes of 16-hex-digit pHashes and a mask of the valid ones; decoded with
    Arrow and numpy, no Python object per row."""
    arr = hexes if isinstance(hexes, pa.Array) else pa.array(list(hexes), pa.string())
    width = PHASH_BITS // 4
    n = len(arr)
    codes = np.zeros((n, PHASH_BITS // 8), np.uint8)
    ok = pc.fill_null(pc.equal(pc.binary_length(arr.cast(pa.binary())), width), False)
    valid = ok.to_numpy(zero_copy_only=False).copy()
    rows = np.flatnonzero(valid)
    if rows.size:
        fixed = arr.cast(pa.binary()).filter(ok).cast(pa.binary(width))
        raw = np.frombuffer(fixed.buffers()[1], np.uint8)
        raw = raw[fixed.offset * width : (fixed.offset + len(fixed)) * width].reshape(-1, width)
        nibbles = _HEX[raw]
        bad = (nibbles == 255).any(axis=1)
        codes[rows] = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
        valid[rows[bad]] = False
        codes[rows[bad]] = 0
    return codes, valid


def near_duplicates(codes: np.ndarray, max_distance: int) -> np.ndarray:
    """For (n, 8) uint8 binary codes in pool order: the row each row duplicates (an earlier kept
    row within ``max_distance`` bits, the first such), or -1 for rows that stay."""
    import faiss

    n = len(codes)
    dup_of = np.full(n, -1, np.int64)
    if n < 2:
        return dup_of
    slices = max_distance + 1
    index = faiss.IndexBinaryMultiHash(PHASH_BITS, slices, PHASH_BITS // slices)
    index.add(codes)
    lims, _, found = index.range_search(codes, max_distance + 1)  # distance < radius
    counts = np.diff(lims)
    for i in np.flatnonzero(counts > 1).tolist():  # rows with a neighbour besides themselves
        earlier = found[lims[i] : lims[i + 1]]
        earlier = np.sort(earlier[earlier < i])
        kept = earlier[dup_of[earlier] < 0]
        if kept.size:
            dup_of[i] = kept[0]
    return dup_of


def dedup_step(
    last: WorkDir, base: WorkDir, drops: Drops, parts: Sequence[Partition], cfg: DedupConfig
) -> dict:
    """Exact, then perceptual deduplication of the live rows; returns counts for stats.json."""
    id_parts: list[pa.Array] = []
    content: list[pa.Array] = []
    phashes: list[pa.Array] = []
    for rows in iter_live(last, base, drops, parts, ["content_hash", "phash"]):
        id_parts.append(rows["id"].combine_chunks())
        content.append(rows["content_hash"].combine_chunks())
        phashes.append(rows["phash"].combine_chunks())
    ids = pa.concat_arrays(id_parts) if id_parts else pa.array([], pa.string())
    stats = {"exact": 0, "phash": 0}
    gone = np.zeros(len(ids), bool)
    if cfg.exact:
        values = pa.concat_arrays(content) if content else pa.array([], pa.string())
        first = first_copies(values)
        dup = np.flatnonzero(first != np.arange(len(ids)))
        _write(drops, "dedup_exact", ids, dup, first[dup], "duplicate:content_hash")
        gone[dup] = True
        stats["exact"] = len(dup)
    if cfg.phash:
        codes, valid = phash_codes(
            pa.concat_arrays(phashes) if phashes else pa.array([], pa.string())
        )
        rows = np.flatnonzero(valid & ~gone)  # ascending: pool order
        found = near_duplicates(codes[rows], cfg.phash_max_distance)
        dup = np.flatnonzero(found >= 0)
        reason = f"duplicate:phash<={cfg.phash_max_distance}"
        _write(drops, "dedup_phash", ids, rows[dup], rows[found[dup]], reason)
        stats["phash"] = len(dup)
    log.info("dedup: %d exact and %d perceptual duplicates dropped", stats["exact"], stats["phash"])
    return stats


def _write(
    drops: Drops, stage: str, ids: pa.Array, dup: np.ndarray, kept: np.ndarray, reason: str
) -> None:
    drops.write(
        stage,
        ids.take(pa.array(dup, pa.int64())).to_pylist(),
        stage,
        [reason] * len(dup),
        duplicate_of=ids.take(pa.array(kept, pa.int64())).to_pylist(),
    )
