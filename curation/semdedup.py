"""Semantic deduplication (SemDeDup, Abbas et al. 2023) inside the k-means clusters.

Near-duplicates in CLIP space (the same photo cropped, recoloured, watermarked, re-shot) land in
the same k-means cluster, so comparing rows only within their cluster finds them without an
all-pairs pass over the pool: the cost is the sum of squared cluster sizes, computed in row
blocks so no similarity matrix is larger than ``block_floats``.

Inside a cluster rows are taken in pool order; a row goes when its cosine similarity to an
earlier row of the cluster that was kept exceeds the threshold, and names that row (the first
such) as the copy it duplicates. The embeddings stay in their own dtype (float16 as stored);
each cluster is converted to float32 and normalised on its own.

In the curate job the step runs after the balanced selection, on the clusters that selection
used (``_work/clusters.parquet``) and the CLIP embeddings computed once in the first pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.passes import Drops, iter_live
from curation.stages.clip_embed import embedding_matrix
from engine.partitions import Partition
from engine.workdir import WorkDir
from manifests.schema import EMBEDDING

log = logging.getLogger(__name__)

#: the largest similarity block computed at once (floats): 32M floats = 128 MB
BLOCK_FLOATS = 1 << 25


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.array(x, np.float32)  # a copy: the caller's rows stay as they are
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    x /= np.maximum(norms, 1e-12)
    return x


def cluster_duplicates(
    x: np.ndarray,
    threshold: float,
    block_floats: int = BLOCK_FLOATS,
    best: np.ndarray | None = None,
):
    """For the rows of one cluster in pool order: the row each duplicates (-1: kept).
    ``best``, when given, receives each row's highest similarity to an earlier row (NaN for the
    first): what the report's histogram shows against the threshold."""
    m = len(x)
    dup_of = np.full(m, -1, np.int64)
    if m < 2:
        return dup_of
    u = _unit(x)
    step = max(1, block_floats // m)
    rows, cols = [], []
    for a in range(0, m, step):  # one block for a cluster of ~100 rows
        b = min(m, a + step)
        sim = u[a:b] @ u[:b].T
        sim[np.arange(b - a)[:, None] + a <= np.arange(b)[None, :]] = -np.inf  # earlier only
        if best is not None:
            best[a:b] = sim.max(axis=1)
        i, j = np.nonzero(sim > threshold)  # row-major: by row, earliest partner first
        rows.append(i + a)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    if i.size == 0:
        return dup_of
    first = np.r_[True, i[1:] != i[:-1]]
    candidate = np.zeros(m, bool)
    candidate[i] = True
    if not candidate[j].any():  # no partner is itself a duplicate: every partner stays
        dup_of[i[first]] = j[first]
        return dup_of
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(i)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        partners = j[s:e]
        kept = partners[dup_of[partners] < 0]
        if kept.size:
            dup_of[i[s]] = kept[0]
    return dup_of


def semantic_duplicates(
    x: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    block_floats: int = BLOCK_FLOATS,
    best: np.ndarray | None = None,
) -> np.ndarray:
    """For rows in pool order with their cluster ``labels``: the row each duplicates, or -1.

    Only rows of one cluster are compared; ``x`` is read a cluster at a time (any float dtype).
    ``best`` (length n, float) receives each row's highest similarity to an earlier row of its
    cluster (NaN where there is none)."""
    labels = np.asarray(labels)
    n = len(labels)
    dup_of = np.full(n, -1, np.int64)
    order = np.argsort(labels, kind="stable")  # by cluster, pool order inside each
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if n else []
    ends = np.r_[starts[1:], n] if n else []
    from threadpoolctl import threadpool_limits

    # clusters are small matrices (~100 rows): one BLAS thread each is many times faster than
    # threads that wait for each other, above all on a busy machine
    with threadpool_limits(1, user_api="blas"):
        for s, e in zip(np.asarray(starts).tolist(), np.asarray(ends).tolist(), strict=True):
            if e - s < 2 or sorted_labels[s] < 0:  # a single row, or rows with no cluster
                continue
            members = order[s:e]
            mine = None if best is None else np.full(e - s, np.nan, np.float32)
            local = cluster_duplicates(x[members], threshold, block_floats, mine)
            if best is not None:
                best[members] = mine
            hit = local >= 0
            dup_of[members[hit]] = members[local[hit]]
    return dup_of


def semantic_step(
    last: WorkDir,
    base: WorkDir,
    drops: Drops,
    parts: Sequence[Partition],
    clusters: Path,
    threshold: float,
) -> dict:
    """SemDeDup of the live rows inside the clusters of ``clusters`` (the balanced selection's
    table: id, cluster); a drop list ``dedup_semantic``. Returns counts for stats.json."""
    table = pq.read_table(clusters, columns=["id", "cluster"])
    # the live rows' ids first (cheap), so the embeddings go straight into one float16 array
    id_parts = [r["id"].combine_chunks() for r in iter_live(last, base, drops, parts, [])]
    ids = pa.concat_arrays(id_parts) if id_parts else pa.array([], pa.string())
    if len(ids) == 0:
        drops.write("dedup_semantic", [], "dedup_semantic", [], duplicate_of=[])
        return {"semantic": 0}
    x, at = None, 0
    for rows in iter_live(last, base, drops, parts, [EMBEDDING]):
        block = embedding_matrix(rows)
        if x is None:
            x = np.empty((len(ids), block.shape[1]), np.float16)  # as stored: half of float32
        x[at : at + len(block)] = block
        at += len(block)
    if at != len(ids):
        raise RuntimeError(f"semantic dedup read {at} embeddings for {len(ids)} live rows")
    # each live row's cluster (a join, not a Python dict over the pool); -1 where it has none
    order = pa.table({"id": ids, "at": np.arange(len(ids))})
    joined = order.join(table, "id", join_type="left outer").sort_by("at")
    labels = joined["cluster"].fill_null(-1).to_numpy().astype(np.int64)
    best = np.full(len(ids), np.nan, np.float32)
    found = semantic_duplicates(x, labels, threshold, best=best)
    dup = np.flatnonzero(found >= 0)
    drops.write(
        "dedup_semantic",
        ids.take(pa.array(dup, pa.int64())).to_pylist(),
        "dedup_semantic",
        [f"duplicate:cos>{threshold:g}"] * len(dup),
        duplicate_of=ids.take(pa.array(found[dup], pa.int64())).to_pylist(),
    )
    log.info("semantic dedup: %d of %d rows dropped (cosine > %g)", len(dup), len(ids), threshold)
    return {"semantic": len(dup), "semantic_hist": similarity_hist(best, found >= 0, threshold)}


def similarity_hist(best: np.ndarray, dropped: np.ndarray, threshold: float, bins: int = 40):
    """Rows by their highest similarity to an earlier row of their cluster, kept and dropped
    (for the report's histogram, with the threshold drawn); rows alone in theirs are left out."""
    ok = np.isfinite(best)
    if not ok.any():
        return None
    lo = float(min(best[ok].min(), threshold - 0.05))
    edges = np.linspace(lo, 1.0, bins + 1)
    kept, _ = np.histogram(best[ok & ~dropped], edges)
    other, _ = np.histogram(best[ok & dropped], edges)
    return {
        "edges": edges.round(6).tolist(),
        "kept": kept.tolist(),
        "other": other.tolist(),
        "n": int(ok.sum()),
        "log": False,
        "threshold": threshold,
    }
