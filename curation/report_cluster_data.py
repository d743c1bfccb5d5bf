"""The numbers and samples behind the curated-image report's cluster sections.

When the curate job balanced its data with k-means, ``stats.json``'s ``clusters`` says what it
decided and the ledger's ``cluster`` column says where every row went; the report shows both and
checks one against the other. Like the rest of the report this reads only the output folder,
in batches and a few columns at a time, and reads per-cluster samples back from only the shards
that hold them. No HTML here (that is :mod:`curation.report_clusters`).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curation.report_pictures import PICTURE_COLUMNS, find_pictures
from manifests.schema import KEPT
from reports.ledger_summary import scan_batches
from reports.samples import kept_sample, shard_label, shard_samples

#: Reason the k-means balancing (``curation.balance``) gives the rows it leaves out of a cluster.
QUOTA_REASON = "cluster_quota"
#: Per-cluster contact sheets: how many clusters (the largest), kept samples each, and stored
#: thumbnails of quota-dropped rows each.
CLUSTER_SHEETS = 12
CLUSTER_KEPT = 8
CLUSTER_DROPPED = 4


def _int_list(raw: Any) -> list[int] | None:
    """``raw`` as ints, or None unless it is a list of finite numbers: a hand-edited or
    truncated stats.json must not break the page."""
    if not isinstance(raw, list):
        return None
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        out.append(int(v))
    return out


def cluster_stats(stats: dict[str, Any] | None, notes: list[str]) -> dict[str, Any] | None:
    """stats.json's ``clusters`` entry, checked, or None when the job did no balancing.

    Returns ``{"k", "per_cluster", "strategy", "levels", "sizes_before", "sizes_after"}``;
    a size list that is absent or not a list of numbers comes back as None (with a note).
    """
    raw = (stats or {}).get("clusters")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        notes.append("stats.json's clusters entry is not an object; it is ignored.")
        return None
    info: dict[str, Any] = {
        "k": raw.get("k"),
        "per_cluster": raw.get("per_cluster"),
        "strategy": raw.get("strategy"),
        "levels": raw.get("levels") or [],
    }
    for name in ("sizes_before", "sizes_after"):
        sizes = _int_list(raw.get(name))
        if raw.get(name) is not None and sizes is None:
            notes.append(f"stats.json's clusters.{name} is not a list of numbers; it is ignored.")
        info[name] = sizes
    return info


def cluster_counts(dataset: ds.Dataset | None) -> dict[int, dict[str, int]] | None:
    """Per cluster id, from the ledger: rows assigned to it, kept rows, rows the quota dropped.

    ``{cluster: {"rows": n, "kept": k, "quota": q}}``, or None when the ledger has no
    ``cluster`` column. Only ``cluster``, ``status`` and ``reason`` are read, in batches;
    rows that never reached clustering (null ``cluster``) are filtered out by the scan.
    """
    if dataset is None or "cluster" not in dataset.schema.names:
        return None
    names = dataset.schema.names
    cols = ["cluster", "status"] + (["reason"] if "reason" in names else [])
    counts: dict[int, dict[str, int]] = {}
    for batch in scan_batches(dataset, cols, filter=ds.field("cluster").is_valid()):
        if not batch.num_rows:
            continue
        kept = pc.fill_null(pc.equal(batch.column("status"), KEPT), False)
        if "reason" in names:
            quota = pc.and_(
                pc.invert(kept), pc.fill_null(pc.equal(batch.column("reason"), QUOTA_REASON), False)
            )
        else:
            quota = pa.array(np.zeros(batch.num_rows, dtype=bool))
        table = pa.table(
            {
                "cluster": pc.cast(batch.column("cluster"), pa.int64()),
                "kept": pc.cast(kept, pa.int64()),
                "quota": pc.cast(quota, pa.int64()),
            }
        )
        grouped = table.group_by("cluster").aggregate(
            [([], "count_all"), ("kept", "sum"), ("quota", "sum")]
        )
        for row in grouped.to_pylist():
            slot = counts.setdefault(int(row["cluster"]), {"rows": 0, "kept": 0, "quota": 0})
            slot["rows"] += row["count_all"]
            slot["kept"] += row["kept_sum"]
            slot["quota"] += row["quota_sum"]
    return counts


def cluster_sizes(
    info: dict[str, Any] | None, counts: dict[int, dict[str, int]] | None
) -> tuple[list[int], list[int], str]:
    """Sizes before and after selection, indexed by cluster id, and where they come from.

    stats.json's lists when it has them (they are what the job decided), else the ledger's
    counts: rows with that cluster (before) and kept rows (after).
    """
    before = (info or {}).get("sizes_before")
    after = (info or {}).get("sizes_after")
    if before is not None and after is not None and len(before) == len(after):
        return before, after, "stats.json"
    counts = counts or {}
    n = max([len(before or []), len(after or [])] + [c + 1 for c in counts if c >= 0] + [0])
    if before is None or len(before) != n:
        before = [counts.get(c, {}).get("rows", 0) for c in range(n)]
    if after is None or len(after) != n:
        after = [counts.get(c, {}).get("kept", 0) for c in range(n)]
    return before, after, "the ledger"


def size_mismatches(
    sizes: list[int], counts: dict[int, dict[str, int]], field: str
) -> list[tuple[int, int, int]]:
    """``(cluster, size in stats.json, ledger count)`` wherever the two disagree, by id."""
    ids = sorted(set(range(len(sizes))) | set(counts))
    out = []
    for c in ids:
        stated = sizes[c] if 0 <= c < len(sizes) else 0
        seen = counts.get(c, {}).get(field, 0)
        if stated != seen:
            out.append((c, stated, seen))
    return out


def largest_clusters(before: list[int], n: int) -> list[int]:
    """Ids of the ``n`` largest clusters by size before selection (ties: lower id first)."""
    order = sorted(range(len(before)), key=lambda c: (-before[c], c))
    return order[:n]


def cluster_samples(
    out: Path,
    dataset: ds.Dataset,
    clusters: list[int],
    notes: list[str],
    *,
    counts: dict[int, dict[str, int]] | None = None,
    per_cluster: int = CLUSTER_KEPT,
    dropped_per_cluster: int = CLUSTER_DROPPED,
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """For each of ``clusters``: up to ``per_cluster`` kept samples and quota-dropped thumbs.

    ``{cluster: {"kept": [...], "dropped": [...]}}``. Kept samples are the first kept rows of
    the cluster in ledger order (shown nearest the centroid first), read back from the shards
    by the ledger's ``shard`` and ``key``: only the shards that hold one are opened, each is
    streamed once and left as soon as its samples are found. Dropped rows are the
    cluster's first quota drops in ledger order, with a ``jpeg`` wherever their bytes still are
    (:func:`curation.report_pictures.find_pictures`) or a ``why``. Both ledger scans
    read a handful of columns, filter to the wanted clusters and stop once every one is full;
    with ``counts`` (from :func:`cluster_counts`) a cluster smaller than its quota counts as
    full once all its rows are found, so small clusters do not force a scan to the end.
    """
    result: dict[int, dict[str, list[dict[str, Any]]]] = {
        c: {"kept": [], "dropped": []} for c in clusters
    }
    names = dataset.schema.names
    if not clusters or "cluster" not in names:
        return result
    in_clusters = ds.field("cluster").isin(pa.array(clusters, pa.int64()))
    extra = [c for c in ("cluster_dist", "coarse_caption") if c in names]

    def need(field: str, most: int) -> dict[int, int]:
        if counts is None:
            return dict.fromkeys(clusters, most)
        return {c: min(most, counts.get(c, {}).get(field, 0)) for c in clusters}

    rows: dict[int, list[dict[str, Any]]] = {c: [] for c in clusters}
    need_kept, need_dropped = need("kept", per_cluster), need("quota", dropped_per_cluster)
    if any(need_kept.values()) and {"shard", "key"} <= set(names):
        wanted = (
            in_clusters
            & (ds.field("status") == KEPT)
            & ds.field("shard").is_valid()
            & ds.field("key").is_valid()
        )
        for batch in scan_batches(dataset, ["cluster", "shard", "key", *extra], filter=wanted):
            for row in batch.to_pylist():
                group = rows[int(row["cluster"])]
                if len(group) < per_cluster:
                    group.append(row)
            if all(len(rows[c]) >= need_kept[c] for c in clusters):
                break

    if any(need_dropped.values()) and "reason" in names:
        wanted = in_clusters & (ds.field("status") != KEPT) & (ds.field("reason") == QUOTA_REASON)
        cols = ["cluster", *[c for c in (*PICTURE_COLUMNS, "cluster_dist") if c in names]]
        for batch in scan_batches(dataset, cols, filter=wanted):
            for row in batch.to_pylist():
                group = result[int(row["cluster"])]["dropped"]
                if len(group) < dropped_per_cluster:
                    group.append(row)
            if all(len(result[c]["dropped"]) >= need_dropped[c] for c in clusters):
                break
        # the quota drops' bytes: the few picked rows only (see curation.report_pictures)
        find_pictures(out, [r for c in clusters for r in result[c]["dropped"]], notes)

    # read back: shard -> {key: ledger row}
    by_shard: dict[str, dict[str, dict[str, Any]]] = {}
    for group in rows.values():
        for row in group:
            by_shard.setdefault(row["shard"], {})[row["key"]] = row
    found: dict[tuple[str, str], dict[str, Any]] = {}
    missing_shards: list[str] = []
    for shard in sorted(by_shard):
        want = by_shard[shard]
        path = out / shard
        if not path.is_file():
            missing_shards.append(shard)
            continue
        left = set(want)
        try:
            with contextlib.closing(shard_samples(path, left.copy())) as stream:
                for sample in stream:
                    key = str(sample.get("__key__"))
                    if key not in left:
                        continue
                    left.discard(key)
                    found[(shard, key)] = kept_sample(shard_label(out, path), sample)
                    if not left:
                        break
        except Exception as exc:  # a broken shard is a finding, not a reason to lose the report
            notes.append(f"Shard {path.name} could not be read: {type(exc).__name__}: {exc}")
    if missing_shards:
        notes.append(
            f"{len(missing_shards)} shard(s) named in the ledger for cluster samples are "
            f"missing, e.g. {missing_shards[0]}."
        )
    lost = []
    for c, group in rows.items():
        for row in group:
            sample = found.get((row["shard"], row["key"]))
            if sample is None:
                if row["shard"] not in missing_shards:
                    lost.append(f"{row['shard']}:{row['key']}")
                sample = {"key": row["key"], "text": "", "shard": row["shard"]}
                sample["error"] = "not in its shard"
            sample["cluster_dist"] = row.get("cluster_dist")
            sample["coarse_caption"] = row.get("coarse_caption")
            result[c]["kept"].append(sample)
        result[c]["kept"].sort(key=_dist_order)
    if lost:
        notes.append(
            f"{len(lost)} kept row(s) of the ledger were not found in their shard, e.g. {lost[0]}."
        )
    return result


def _dist_order(sample: dict[str, Any]) -> tuple[bool, float]:
    """Nearest the centroid first; samples without a distance last."""
    d = sample.get("cluster_dist")
    ok = isinstance(d, int | float) and math.isfinite(d)
    return (not ok, float(d) if ok else 0.0)
