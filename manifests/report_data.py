"""The data behind ``report.html``: everything the report shows, computed without HTML or plots.

Reads only what a job leaves in its output folder (``dataset.json``, ``stats.json``,
``ledger/part-*.parquet``, ``shards/*.tar``), so a report can be rebuilt at any time, on any
machine, without Ray or the curation code. Kept apart from the rendering so the counts
(:func:`summarize_ledger`, which the CLI prints) can be had without matplotlib or HTML, and so
each half can be read and tested on its own.

The ledger may hold millions of rows, so it is scanned in batches and only the columns each part
needs are read: counts read three string columns, histograms stream numeric columns twice (range,
then counts) instead of holding them, and the ``thumb`` bytes are read only where they are set.
Cluster balancing (``stats.json``'s ``clusters``, the ledger's ``cluster`` column) is counted
the same way, and its per-cluster samples are read back from only the shards that hold them.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from manifests.schema import BASE_SCHEMA, DROPPED, ERROR, KEPT, LEDGER_WRITE_FIELDS
from manifests.thumbs import make_thumb

#: Longest side of a contact-sheet thumbnail, in pixels.
THUMB_PX = 128
#: Stage / reason shown for non-kept rows whose ledger entry names none (a pipeline bug).
UNKNOWN_STAGE = "(unknown)"
NO_REASON = "(none)"
#: Rows per scanned ledger batch: bounds memory whatever the ledger's size.
BATCH_ROWS = 65_536
#: Columns that are row bookkeeping, never plotted as scores.
BASE_COLUMNS = frozenset(BASE_SCHEMA.names) | {f.name for f in LEDGER_WRITE_FIELDS}
#: Integer base columns that are still worth a histogram.
SIZE_COLUMNS = ("width", "height", "bytes")
HIST_BINS = 50
#: A positive column spanning at least this ratio (max / min) gets logarithmic bins.
LOG_SPAN = 20.0
#: Reason the k-means balancing gives the rows it leaves out of a cluster.
QUOTA_REASON = "cluster_quota"
#: Per-cluster contact sheets: how many clusters (the largest), kept samples each, and stored
#: thumbnails of quota-dropped rows each.
CLUSTER_SHEETS = 12
CLUSTER_KEPT = 8
CLUSTER_DROPPED = 4


# --------------------------------------------------------------------------------------------
# reading the output folder
# --------------------------------------------------------------------------------------------


def ledger_files(out_dir: str | Path) -> list[Path]:
    """The ledger's parts in name order, which is partition order: it fixes "first seen"."""
    return sorted((Path(out_dir) / "ledger").glob("part-*.parquet"))


def ledger_dataset(out_dir: str | Path) -> ds.Dataset | None:
    """The ledger as one dataset, or None when there is none.

    Parts may differ in their score columns (a stage added later, a resumed run); the schemas
    are unified from the parquet footers alone, so a part lacking a column reads it as null.
    """
    files = ledger_files(out_dir)
    if not files:
        return None
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


def read_json(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None (with a note saying why) if missing or unreadable.

    The report must still come out of a job that crashed before writing its metadata: that is
    exactly when someone wants to look at what happened.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if notes is not None:
            notes.append(f"{path.name} is missing.")
        return None
    except (OSError, ValueError) as exc:
        if notes is not None:
            notes.append(f"{path.name} could not be read ({exc}).")
        return None
    if not isinstance(data, dict):
        if notes is not None:
            notes.append(f"{path.name} does not hold a JSON object.")
        return None
    return data


def _batches(dataset: ds.Dataset, columns: list[str], **kw: Any) -> Iterator[pa.RecordBatch]:
    yield from dataset.to_batches(columns=columns, batch_size=BATCH_ROWS, **kw)


# --------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------


def summarize_ledger(out_dir: str | Path) -> dict[str, Any]:
    """Count the ledger's rows by status and by (stage, reason), and derive the stage funnel.

    Returns a JSON-serialisable dict (the CLI prints it)::

        {"ledger_files": 3, "inputs": N,
         "by_status": {"kept": K, "dropped": D, "error": E, ...},
         "by_stage": {stage: {"dropped": d, "error": e}},
         "reasons": [{"stage", "reason", "status", "count"}, ...],   # count desc
         "stages": [...],   # stats.json's pipeline order, then ledger-only stages
         "funnel": [{"stage", "reached", "dropped", "error", "survived"}, ...]}

    Stage order comes from ``stats.json`` when it exists, because a stage that dropped nothing
    never shows up in the ledger yet belongs in the funnel; stages only the ledger names follow
    in the order they were first seen. Non-kept rows without a stage go to ``(unknown)``.
    """
    out = Path(out_dir)
    dataset = ledger_dataset(out)
    counts: dict[tuple[str, str | None, str | None], int] = {}
    if dataset is not None:
        names = dataset.schema.names
        wanted = [c for c in ("status", "stage", "reason") if c in names]
        for batch in _batches(dataset, wanted):
            table = pa.Table.from_batches([batch])
            for col in ("status", "stage", "reason"):
                if col not in names:
                    table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
            # use_threads=False keeps groups in encounter order: that is "first seen"
            grouped = table.group_by(["status", "stage", "reason"], use_threads=False).aggregate(
                [([], "count_all")]
            )
            for row in grouped.to_pylist():
                key = (row["status"] or "(null)", row["stage"], row["reason"])
                counts[key] = counts.get(key, 0) + row["count_all"]

    by_status: dict[str, int] = {KEPT: 0, DROPPED: 0, ERROR: 0}
    by_stage: dict[str, dict[str, int]] = {}
    reasons: dict[tuple[str, str, str], int] = {}
    for (status, stage, reason), n in counts.items():
        by_status[status] = by_status.get(status, 0) + n
        if status == KEPT:
            continue  # a kept row's stage/reason mean nothing
        stage_name = stage or UNKNOWN_STAGE
        slot = by_stage.setdefault(stage_name, {DROPPED: 0, ERROR: 0})
        slot[status] = slot.get(status, 0) + n
        rkey = (stage_name, reason or NO_REASON, status)
        reasons[rkey] = reasons.get(rkey, 0) + n
    inputs = sum(by_status.values())

    stats = read_json(out / "stats.json") or {}
    declared = [str(s) for s in stats.get("stages") or [] if s is not None]
    stages = list(dict.fromkeys(declared))
    extra = [s for s in by_stage if s not in stages]
    # "(unknown)" is a bookkeeping hole, not a stage: show it last
    stages += [s for s in extra if s != UNKNOWN_STAGE] + [s for s in extra if s == UNKNOWN_STAGE]

    funnel = []
    reached = inputs
    for stage in stages:
        slot = by_stage.get(stage, {})
        removed = sum(slot.values())
        survived = reached - removed
        funnel.append(
            {
                "stage": stage,
                "reached": reached,
                "dropped": slot.get(DROPPED, 0),
                "error": slot.get(ERROR, 0),
                "survived": survived,
            }
        )
        reached = survived

    reason_rows = [
        {"stage": s, "reason": r, "status": st, "count": n} for (s, r, st), n in reasons.items()
    ]
    reason_rows.sort(key=lambda r: (-r["count"], r["stage"], r["reason"], r["status"]))
    return {
        "ledger_files": len(ledger_files(out)),
        "inputs": inputs,
        "by_status": by_status,
        "by_stage": by_stage,
        "reasons": reason_rows,
        "stages": stages,
        "funnel": funnel,
    }


# --------------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------------


def score_columns(schema: pa.Schema) -> list[str]:
    """Every float column a stage added (scores), then the size columns, in schema order.

    Scores are discovered rather than listed so that a new model stage (aesthetic, CLIP
    similarity...) shows up in the report without touching it.
    """
    scores = [
        f.name
        for f in schema
        if f.name not in BASE_COLUMNS and (pa.types.is_floating(f.type) or pa.types.is_null(f.type))
    ]
    return scores + [c for c in SIZE_COLUMNS if c in schema.names]


def _as_float(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)


def histograms(dataset: ds.Dataset, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: bin edges, kept and not-kept counts, and whether the bins are logarithmic.

    Two streaming passes (range, then counts) so memory does not grow with the ledger.
    Columns without a single finite value are left out.
    """
    if not columns:
        return {}
    lo = dict.fromkeys(columns, math.inf)
    hi = dict.fromkeys(columns, -math.inf)
    n_valid = dict.fromkeys(columns, 0)
    for batch in _batches(dataset, columns):
        for col in columns:
            v = _as_float(batch.column(col))
            v = v[np.isfinite(v)]
            if v.size:
                n_valid[col] += int(v.size)
                lo[col] = min(lo[col], float(v.min()))
                hi[col] = max(hi[col], float(v.max()))

    hists: dict[str, dict[str, Any]] = {}
    for col in columns:
        if not n_valid[col]:
            continue
        a, b = lo[col], hi[col]
        log = a > 0 and b / a >= LOG_SPAN
        if a == b:
            edges = np.linspace(a - 0.5, b + 0.5, 2) if a == 0 else np.linspace(a * 0.9, b * 1.1, 2)
            edges.sort()
        elif log:
            edges = np.geomspace(a, b, HIST_BINS + 1)
        else:
            edges = np.linspace(a, b, HIST_BINS + 1)
        hists[col] = {
            "edges": edges,
            "kept": np.zeros(len(edges) - 1, dtype=np.int64),
            "other": np.zeros(len(edges) - 1, dtype=np.int64),
            "log": log,
            "n": n_valid[col],
        }
    if not hists:
        return {}

    wanted = list(hists)
    for batch in _batches(dataset, [*wanted, "status"]):
        kept = pc.fill_null(pc.equal(batch.column("status"), KEPT), False).to_numpy(
            zero_copy_only=False
        )
        for col in wanted:
            h = hists[col]
            v = _as_float(batch.column(col))
            ok = np.isfinite(v)
            h["kept"] += np.histogram(v[ok & kept], h["edges"])[0]
            h["other"] += np.histogram(v[ok & ~kept], h["edges"])[0]
    return hists


def thresholds_for(stats: dict[str, Any], column: str) -> list[float]:
    raw = (stats.get("thresholds") or {}).get(column, [])
    if not isinstance(raw, list | tuple):
        raw = [raw]
    out = []
    for t in raw:
        with contextlib.suppress(TypeError, ValueError):
            x = float(t)
            if math.isfinite(x):
                out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# samples: kept ones read back from the shards, dropped ones from the ledger's thumbnails
# --------------------------------------------------------------------------------------------

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def _shard_paths(out: Path, dataset_json: dict[str, Any] | None) -> list[Path]:
    """The shards dataset.json lists, or (without it) whatever tars lie in shards/."""
    listed = (dataset_json or {}).get("shards") or []
    paths = [out / s["path"] for s in listed if isinstance(s, dict) and s.get("path")]
    return paths or sorted((out / "shards").glob("*.tar"))


def kept_samples(
    out: Path, dataset_json: dict[str, Any] | None, max_thumbs: int, notes: list[str]
) -> list[dict[str, Any]]:
    """Up to ``max_thumbs`` samples read back from the shards, spread over the shards.

    Reading the shards (not the ledger) checks that what was written can be read with
    webdataset. Each shard is read only up to its quota, from its start, so a thousand
    1 GB shards cost a few small reads.
    """
    shards = _shard_paths(out, dataset_json)
    if max_thumbs <= 0 or not shards:
        return []
    quota = max(1, math.ceil(max_thumbs / len(shards)))
    samples: list[dict[str, Any]] = []
    missing: list[str] = []
    for path in shards:
        if len(samples) >= max_thumbs:
            break
        if not path.is_file():
            missing.append(path.name)
            continue
        taken = 0
        label = _label(out, path)
        try:
            with contextlib.closing(_shard_samples(path)) as stream:
                for sample in stream:
                    if taken >= quota or len(samples) >= max_thumbs:
                        break
                    samples.append(_kept_sample(label, sample))
                    taken += 1
        except Exception as exc:  # a broken shard is a finding, not a reason to lose the report
            notes.append(f"Shard {path.name} could not be read: {type(exc).__name__}: {exc}")
    if missing:
        notes.append(
            f"{len(missing)} shard(s) listed in dataset.json are missing, e.g. {missing[0]}."
        )
    return samples


def _label(out: Path, path: Path) -> str:
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def _shard_samples(path: Path, keys: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard, streamed from its start; with ``keys``, only those samples.

    Members of other samples are skipped without being held, so picking a few keys out of a
    large shard costs one sequential read and no memory. Close the generator (or exhaust it)
    to close the file.
    """
    from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

    def wanted(fname: str) -> bool:
        return keys is None or base_plus_ext(fname)[0] in keys

    with open(path, "rb") as stream:
        members = tar_file_expander([{"url": str(path), "stream": stream}], select_files=wanted)
        yield from group_by_keys(members)


def _kept_sample(shard: str, sample: dict[str, Any]) -> dict[str, Any]:
    """Key, caption (from the sample's json) and a thumbnail, or the error that stopped it."""
    key = str(sample.get("__key__", "?"))
    text = ""
    raw_json = sample.get("json")
    if raw_json:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            meta = json.loads(raw_json)
            if isinstance(meta, dict):
                text = str(meta.get("text") or meta.get("caption") or "")
    ext = next((e for e in _IMAGE_EXTS if e in sample), None)
    item: dict[str, Any] = {"key": key, "text": text, "shard": shard}
    if ext is None:
        item["error"] = "no image member"
        return item
    # shown in the sheet: a kept image that does not decode is a bug
    try:
        jpeg = make_thumb(sample[ext], THUMB_PX)
    except Exception as exc:  # anything else PIL raises: a finding, not a reason to lose the report
        item["error"] = f"{type(exc).__name__}: {exc}"
        return item
    if jpeg is None:
        item["error"] = f"{ext} member does not decode"
    else:
        item["jpeg"] = jpeg
    return item


def dropped_thumbs(
    dataset: ds.Dataset, reasons: list[str], max_thumbs: int
) -> dict[str, list[dict[str, Any]]]:
    """Up to ``max_thumbs`` stored thumbnails per reason.

    The filter on ``thumb`` means only the few rows carrying one are materialised; the scan
    stops as soon as every reason has its fill.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    if max_thumbs <= 0 or "thumb" not in dataset.schema.names:
        return found
    names = dataset.schema.names
    cols = [c for c in ("source_key", "stage", "reason", "status", "thumb") if c in names]
    for batch in _batches(dataset, cols, filter=ds.field("thumb").is_valid()):
        for row in batch.to_pylist():
            if row.get("status") == KEPT:
                continue
            group = found.setdefault(row.get("reason") or NO_REASON, [])
            if len(group) < max_thumbs:
                group.append(row)
        if reasons and all(len(found.get(r, [])) >= max_thumbs for r in reasons):
            break
    return found


# --------------------------------------------------------------------------------------------
# clusters: k-means balancing, from stats.json and the ledger's ``cluster`` column
# --------------------------------------------------------------------------------------------


def _int_list(raw: Any) -> list[int] | None:
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
    for batch in _batches(dataset, cols, filter=ds.field("cluster").is_valid()):
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
    streamed once and left as soon as its samples are found. Dropped rows come with the
    ``thumb`` the ledger stored, where it stored one (usually it does not). Both ledger scans
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
        for batch in _batches(dataset, ["cluster", "shard", "key", *extra], filter=wanted):
            for row in batch.to_pylist():
                group = rows[int(row["cluster"])]
                if len(group) < per_cluster:
                    group.append(row)
            if all(len(rows[c]) >= need_kept[c] for c in clusters):
                break

    if any(need_dropped.values()) and {"thumb", "reason"} <= set(names):
        wanted = (
            in_clusters
            & (ds.field("status") != KEPT)
            & (ds.field("reason") == QUOTA_REASON)
            & ds.field("thumb").is_valid()
        )
        cols = ["cluster", "thumb", *[c for c in ("source_key", "cluster_dist") if c in names]]
        for batch in _batches(dataset, cols, filter=wanted):
            for row in batch.to_pylist():
                group = result[int(row["cluster"])]["dropped"]
                if len(group) < dropped_per_cluster:
                    group.append(row)
            if all(len(result[c]["dropped"]) >= need_dropped[c] for c in clusters):
                break

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
            with contextlib.closing(_shard_samples(path, left.copy())) as stream:
                for sample in stream:
                    key = str(sample.get("__key__"))
                    if key not in left:
                        continue
                    left.discard(key)
                    found[(shard, key)] = _kept_sample(_label(out, path), sample)
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
    d = sample.get("cluster_dist")
    ok = isinstance(d, int | float) and math.isfinite(d)
    return (not ok, float(d) if ok else 0.0)
