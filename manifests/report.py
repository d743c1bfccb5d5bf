"""One self-contained HTML report of a curated shard set: what came in, what was kept, and why
the rest went (and, when the job balanced its data with k-means, how the clusters came out).

This module renders the page (CSS, one builder per section) and writes it with
:func:`write_report`; the numbers come from :mod:`manifests.report_data` and the figures from
:mod:`manifests.report_plots`. The report reads only the job's output folder, so it can be rebuilt
at any time, on any machine, without Ray or the curation code (``manifests`` imports no other
package of this project). It is a single HTML file with every plot and thumbnail inlined as
base64, so it can be mailed, attached to a ticket or opened from a bucket without a server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from manifests.report_data import (
    CLUSTER_DROPPED,
    CLUSTER_KEPT,
    CLUSTER_SHEETS,
    QUOTA_REASON,
    cluster_counts,
    cluster_samples,
    cluster_sizes,
    cluster_stats,
    dropped_thumbs,
    histograms,
    kept_samples,
    largest_clusters,
    ledger_dataset,
    read_json,
    score_columns,
    size_mismatches,
    summarize_ledger,
    thresholds_for,
)
from manifests.report_plots import cluster_sizes_png, funnel_png, hist_png
from manifests.schema import DROPPED, ERROR, KEPT

__all__ = ["REPORT_NAME", "summarize_ledger", "write_report"]

REPORT_NAME = "report.html"
#: Caption text longer than this is cut (the full text is in the tooltip).
CAPTION_CHARS = 140
#: Rows of the largest-clusters table.
CLUSTER_TABLE_ROWS = 20


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212121;
  margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:24px;margin:0 0 2px} h2{font-size:18px;margin:34px 0 10px;
  border-bottom:1px solid #ddd;padding-bottom:4px} h3{font-size:15px;margin:18px 0 6px}
.sub{color:#616161;margin-bottom:14px}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px;min-width:110px}
.card .v{font-size:20px;font-weight:600} .card .l{color:#757575;font-size:12px}
.card.kept .v{color:#2e7d32} .card.dropped .v{color:#ef6c00} .card.error .v{color:#c62828}
.notes{background:#fff8e1;border:1px solid #ffe082;border-radius:6px;padding:8px 14px 8px 32px}
.notes li{margin:2px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #e0e0e0;padding:4px 10px;text-align:left}
th{background:#f5f5f5;font-weight:600} tr:nth-child(even) td{background:#fcfcfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.st-kept{color:#2e7d32} .st-dropped{color:#ef6c00} .st-error{color:#c62828}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots img,.funnel img{background:#fff;border:1px solid #e0e0e0;border-radius:4px;max-width:100%}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
figure{margin:0;background:#fff;border:1px solid #e0e0e0;border-radius:4px;padding:6px;
  text-align:center;overflow:hidden}
figure img{max-width:128px;max-height:128px;display:block;margin:0 auto 4px}
figcaption{font-size:11px;color:#424242;text-align:left;word-break:break-word}
figcaption .k{font-family:ui-monospace,Menlo,Consolas,monospace;color:#1565c0;display:block;
  white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.nopic{width:128px;height:90px;margin:0 auto 4px;background:#eee;color:#9e9e9e;display:flex;
  align-items:center;justify-content:center;font-size:11px}
figcaption .d{color:#616161;display:block;font-variant-numeric:tabular-nums}
figcaption .c{font-style:italic;display:block}
.ok{color:#2e7d32} .bad{color:#c62828;font-weight:600}
.muted{color:#757575} details{margin:8px 0} pre{background:#fff;border:1px solid #e0e0e0;
  padding:8px;overflow:auto;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(n: int | float | None) -> str:
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def _rows(n: int) -> str:
    return f"{_num(n)} row" if n == 1 else f"{_num(n)} rows"


def _pct(part: int, whole: int) -> str:
    if not whole:
        return "—"
    p = 100.0 * part / whole
    return f"{p:.1f} %" if p >= 0.1 or p == 0 else f"{p:.2g} %"


def _duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


#: C0/C1 control characters (whitespace aside): invalid in HTML; model captions may hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _short(text: str, limit: int = CAPTION_CHARS) -> str:
    """Cut before escaping, so an entity is never cut in half."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def _img(b64: str, mime: str, cls: str, alt: str, extra: str = "") -> str:
    return f'<img class="{cls}" src="data:{mime};base64,{b64}" alt="{_e(alt)}"{extra}>'


def _table(head: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """``head``: (label, numeric); ``rows``: cells already escaped."""
    ths = "".join(f'<th class="num">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in head)
    body = []
    for row in rows:
        tds = "".join(
            f'<td class="num">{c}</td>' if n else f"<td>{c}</td>"
            for c, (_, n) in zip(row, head, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_SUBTITLE = (("task", "task"), ("modality", "modality"), ("schema_version", "schema"))


def _header(
    out: Path,
    summary: dict[str, Any],
    stats: dict[str, Any] | None,
    meta: dict[str, Any] | None,
    notes: list[str],
) -> str:
    meta, has_stats = meta or {}, stats is not None
    stats = stats or {}
    name = meta.get("name") or out.name
    if summary["ledger_files"]:
        counts = dict(summary["by_status"])
        inputs = summary["inputs"]
        if has_stats and stats.get("inputs") not in (None, inputs):
            notes.append(
                f"stats.json counts {_num(stats.get('inputs'))} inputs, the ledger holds "
                f"{_num(inputs)} rows; the report shows the ledger."
            )
    else:
        counts = {s: int(stats.get(s) or 0) for s in (KEPT, DROPPED, ERROR)}
        inputs = int(stats.get("inputs") or sum(counts.values()))
    kept = counts.get(KEPT, 0)
    samples = meta.get("samples")
    if meta and samples is not None and summary["ledger_files"] and samples != kept:
        notes.append(
            f"dataset.json lists {_num(samples)} samples but the ledger has {_num(kept)} kept rows."
        )
    shards = meta.get("shards") or []
    shard_bytes = sum(int(s.get("bytes") or 0) for s in shards if isinstance(s, dict))
    sub = [f"{label} {_e(meta[k])}" for k, label in _SUBTITLE if meta.get(k) is not None]
    if shards:
        sub.append(f"{len(shards):,} shard(s), {shard_bytes / 1e6:,.1f} MB")
    sub.append(f"created {_e(meta.get('created_at') or 'unknown')}")
    sub.append(f"folder <code>{_e(out)}</code>")
    dropped, errors = counts.get(DROPPED, 0), counts.get(ERROR, 0)
    cards = [
        ("", _num(inputs), "inputs"),
        ("kept", _num(kept), f"kept ({_pct(kept, inputs)})"),
        ("dropped", _num(dropped), f"dropped ({_pct(dropped, inputs)})"),
        ("error", _num(errors), f"error ({_pct(errors, inputs)})"),
        ("", _e(_duration(stats.get("wall_s"))), "wall time"),
    ]
    others = {k: v for k, v in counts.items() if k not in (KEPT, DROPPED, ERROR) and v}
    cards += [("", _num(v), f"status {_e(k)}") for k, v in others.items()]
    card_html = "".join(
        f'<div class="card {c}"><div class="v">{v}</div><div class="l">{lab}</div></div>'
        for c, v, lab in cards
    )
    return (
        f'<h1>{_e(name)}</h1><div class="sub">{" · ".join(sub)}</div>'
        f'<div class="cards" id="counts">{card_html}</div>'
    )


def _funnel_html(summary: dict[str, Any], stats: dict[str, Any]) -> str:
    funnel = summary["funnel"]
    if not funnel:
        return '<p class="muted">No stages: the ledger is empty and stats.json names none.</p>'
    timings = stats.get("timings_s") or {}
    rows = []
    for f in funnel:
        t = timings.get(f["stage"])
        rows.append(
            [
                _e(f["stage"]),
                _num(f["reached"]),
                _num(f["dropped"]),
                _num(f["error"]),
                _num(f["survived"]),
                _pct(f["survived"], f["reached"]),
                _e(_duration(t)) if t is not None else "—",
            ]
        )
    head = [
        ("stage", False),
        ("reached", True),
        ("dropped here", True),
        ("error here", True),
        ("survived", True),
        ("survival", True),
        ("time", True),
    ]
    chart = _img(funnel_png(funnel), "image/png", "plot funnel-chart", "funnel by stage")
    return f'{_table(head, rows)}<div class="funnel">{chart}</div>'


def _reasons_html(summary: dict[str, Any]) -> str:
    if not summary["reasons"]:
        return '<p class="muted">Nothing was dropped.</p>'
    inputs = summary["inputs"]
    rows = [
        [
            _e(r["stage"]),
            f"<b>{_e(r['reason'])}</b>",
            f'<span class="st-{_e(r["status"])}">{_e(r["status"])}</span>',
            _num(r["count"]),
            _pct(r["count"], inputs),
        ]
        for r in summary["reasons"]
    ]
    head = [
        ("stage", False),
        ("reason", False),
        ("status", False),
        ("count", True),
        ("share of inputs", True),
    ]
    return _table(head, rows)


def _hist_html(dataset: ds.Dataset | None, stats: dict[str, Any]) -> str:
    if dataset is None:
        return '<p class="muted">No ledger, no scores.</p>'
    columns = score_columns(dataset.schema)
    hists = histograms(dataset, columns)
    parts = []
    for col in columns:
        if col in hists:
            parts.append(
                _img(
                    hist_png(col, hists[col], thresholds_for(stats, col)),
                    "image/png",
                    "plot hist",
                    f"histogram of {col}",
                    f' data-column="{_e(col)}"',
                )
            )
    empty = [c for c in columns if c not in hists]
    tail = f'<p class="muted">All null, not plotted: {_e(", ".join(empty))}.</p>' if empty else ""
    legend = (
        '<p class="muted">Green: kept rows; orange: dropped or errored rows that have the value; '
        "dashed: the job's thresholds.</p>"
    )
    return f'{legend}<div class="plots">{"".join(parts)}</div>{tail}'


def _kept_html(samples: list[dict[str, Any]], total_kept: int) -> str:
    if not samples:
        return '<p class="muted">No kept samples could be read from the shards.</p>'
    figs = []
    for s in samples:
        key, text = s["key"], s.get("text") or ""
        if "jpeg" in s:
            pic = _img(base64.b64encode(s["jpeg"]).decode("ascii"), "image/jpeg", "thumb kept", key)
        else:
            pic = f'<div class="nopic">{_e(s.get("error", "no picture"))}</div>'
        cap = f'<span class="k" title="{_e(s["shard"])}">{_e(key)}</span>'
        if text:
            cap += f'<span title="{_e(text)}">{_e(_short(text))}</span>'
        figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
    note = (
        f'<p class="muted">{len(samples):,} of {total_kept:,} kept samples, '
        "read back from the shards.</p>"
    )
    return f'{note}<div class="sheet">{"".join(figs)}</div>'


def _dropped_html(summary: dict[str, Any], thumbs: dict[str, list[dict[str, Any]]]) -> str:
    # one group per reason, biggest first; a reason may come from several stages / statuses
    groups: dict[str, dict[str, Any]] = {}
    for r in summary["reasons"]:
        g = groups.setdefault(r["reason"], {"count": 0, "where": []})
        g["count"] += r["count"]
        g["where"].append(f"{r['stage']} / {r['status']}")
    for reason in thumbs:
        groups.setdefault(reason, {"count": 0, "where": []})
    if not groups:
        return '<p class="muted">Nothing was dropped.</p>'
    parts, without = [], []
    for reason, g in sorted(groups.items(), key=lambda kv: -kv[1]["count"]):
        rows = thumbs.get(reason, [])
        where = ", ".join(g["where"])
        if not rows:
            why = (
                'no thumbnail in the ledger; see <a href="#cluster-samples">samples per cluster</a>'
                if reason == QUOTA_REASON
                else "no picture (not decoded)"
            )
            without.append(
                f"<li><b>{_e(reason)}</b> ({_e(where)}): {_rows(g['count'])} — {why}</li>"
            )
            continue
        figs = []
        for row in rows:
            data = row["thumb"]
            key = row.get("source_key") or "?"
            pic = _img(base64.b64encode(data).decode("ascii"), _mime(data), "thumb dropped", key)
            cap = f'<span class="k" title="{_e(key)}">{_e(key)}</span><span>{_e(reason)}</span>'
            figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
        parts.append(
            f'<h3>{_e(reason)} <span class="muted">({_e(where)}: {_rows(g["count"])}, '
            f"{len(rows)} pictured)</span></h3>"
            f'<div class="sheet">{"".join(figs)}</div>'
        )
    if without:
        parts.append(f'<h3>Reasons without pictures</h3><ul class="nopics">{"".join(without)}</ul>')
    return "".join(parts)


def _clusters_html(
    info: dict[str, Any] | None,
    before: list[int],
    after: list[int],
    source: str,
    counts: dict[int, dict[str, int]] | None,
    notes: list[str],
) -> str:
    """What the balancing did: settings, sizes before / after (plot and table), and whether
    stats.json's sizes agree with the ledger (a disagreement also goes to the notes)."""
    info = info or {}
    k = len(before)
    cap = info.get("per_cluster")
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) else None
    facts = [f"k = {_num(info['k']) if isinstance(info.get('k'), int) else _num(k)}"]
    if info.get("strategy") is not None:
        facts.append(f"strategy <b>{_e(info['strategy'])}</b>")
    facts.append(f"per-cluster cap {_num(cap)}" if cap is not None else "no per-cluster cap")
    if info.get("levels"):
        facts.append(f"levels {_e(json.dumps(info['levels'], default=str))}")
    empty = sum(1 for b in before if b == 0)
    facts.append(
        f"{_num(sum(before))} rows clustered, {_num(sum(after))} selected"
        + (f", {_num(empty)} empty cluster(s)" if empty else "")
    )
    parts = [f'<p>{" · ".join(facts)}. <span class="muted">Sizes from {_e(source)}.</span></p>']

    stated_k = info.get("k")
    if isinstance(stated_k, int) and info.get("sizes_before") is not None and stated_k != k:
        notes.append(f"stats.json says k = {stated_k:,} but lists sizes for {k:,} clusters.")
    checks: list[str] = []
    bad: dict[int, int] = {}  # cluster -> kept rows in the ledger, where they disagree
    if counts is None:
        if info.get("sizes_after") is not None:
            notes.append(
                "stats.json reports clusters but the ledger has no cluster column: cluster "
                "sizes are not checked and no per-cluster samples are shown."
            )
        checks.append('<span class="muted">The ledger has no cluster column: not checked.</span>')
    elif source != "stats.json":
        checks.append('<span class="muted">stats.json has no cluster sizes: not checked.</span>')
    else:
        for field, name, what in (
            ("kept", "sizes_after", "kept rows"),
            ("rows", "sizes_before", "rows with that cluster"),
        ):
            sizes = after if field == "kept" else before
            diff = size_mismatches(sizes, counts, field)
            if not diff:
                checks.append(
                    f'<span class="ok">✓ {name} matches the ledger</span> '
                    f'<span class="muted">({what} per cluster, all {_num(k)} clusters).</span>'
                )
                continue
            c, stated, seen = diff[0]
            msg = (
                f"stats.json's clusters.{name} disagrees with the ledger's {what} in "
                f"{len(diff):,} cluster(s), e.g. cluster {c}: {stated:,} in stats.json, "
                f"{seen:,} in the ledger."
            )
            notes.append(msg)
            checks.append(f'<span class="bad">✗ {_e(msg)}</span>')
            if field == "kept":
                bad = {c: s for c, _, s in diff}
    parts.append("<p>" + "<br>".join(checks) + "</p>")

    order = largest_clusters(before, k)
    if k:
        chart = cluster_sizes_png(order, [before[c] for c in order], [after[c] for c in order], cap)
        parts.append(
            '<div class="funnel">'
            + _img(chart, "image/png", "plot cluster-sizes", "cluster sizes before and after")
            + "</div>"
        )
    top = order[:CLUSTER_TABLE_ROWS]
    head = [("cluster", True), ("before", True), ("after", True)]
    if counts is not None:
        head += [("kept in ledger", True), (f"dropped by {QUOTA_REASON}", True)]
    rows = []
    for c in top:
        row = [_num(c), _num(before[c]), _num(after[c])]
        if counts is not None:
            slot = counts.get(c, {})
            kept = _num(slot.get("kept", 0))
            row += [f'<span class="bad">{kept}</span>' if c in bad else kept]
            row += [_num(slot.get("quota", 0))]
        rows.append(row)
    if rows:
        what = f"The {len(top)} largest" if len(top) < k else f"All {len(top)}"
        parts.append(f'<h3>{what} clusters <span class="muted">by size before</span></h3>')
        parts.append(_table(head, rows))
    return "".join(parts)


def _cluster_fig(s: dict[str, Any]) -> str:
    key = s["key"]
    if "jpeg" in s:
        pic = _img(
            base64.b64encode(s["jpeg"]).decode("ascii"), "image/jpeg", "thumb cluster-kept", key
        )
    else:
        pic = f'<div class="nopic">{_e(s.get("error", "no picture"))}</div>'
    cap = f'<span class="k" title="{_e(s["shard"])}">{_e(key)}</span>'
    dist = s.get("cluster_dist")
    if isinstance(dist, int | float):
        cap += f'<span class="d">dist {dist:.4g}</span>'
    text = _clean(s.get("coarse_caption") or "")
    if text.strip():
        cap += f'<span class="c" title="{_e(text)}">{_e(_short(text))}</span>'
    return f"<figure>{pic}<figcaption>{cap}</figcaption></figure>"


def _cluster_sheets_html(
    order: list[int],
    before: list[int],
    after: list[int],
    counts: dict[int, dict[str, int]] | None,
    samples: dict[int, dict[str, list[dict[str, Any]]]],
) -> str:
    if counts is None:
        return '<p class="muted">The ledger has no cluster column: no samples per cluster.</p>'
    if not order:
        return '<p class="muted">No clusters.</p>'
    k = len(before)
    which = f"The {len(order)} largest of {k:,}" if len(order) < k else f"All {k:,}"
    parts = [
        f'<p class="muted">{which} clusters, largest before selection first. Up to '
        f"{CLUSTER_KEPT} kept samples each, read back from the shards (the cluster's first "
        "kept rows in ledger order, shown "
        f"nearest the centroid first); up to {CLUSTER_DROPPED} rows dropped by "
        f"{QUOTA_REASON}, where the ledger stored a thumbnail.</p>"
    ]
    for c in order:
        got = samples.get(c, {"kept": [], "dropped": []})
        quota = counts.get(c, {}).get("quota", 0)
        sub = f"{_num(before[c])} before, {_num(after[c])} after"
        if quota:
            sub += f", {_num(quota)} dropped by {QUOTA_REASON}"
        parts.append(f'<h3>cluster {_num(c)} <span class="muted">— {sub}</span></h3>')
        kept_total = counts.get(c, {}).get("kept", 0)
        if got["kept"]:
            parts.append(
                f'<div class="sheet">{"".join(_cluster_fig(s) for s in got["kept"])}</div>'
            )
            if kept_total > len(got["kept"]):
                parts.append(
                    f'<p class="muted">{len(got["kept"])} of {_num(kept_total)} kept '
                    "samples shown.</p>"
                )
        else:
            parts.append('<p class="muted">No kept samples in the ledger.</p>')
        figs = []
        for row in got["dropped"]:
            data = row["thumb"]
            key = row.get("source_key") or "?"
            pic = _img(
                base64.b64encode(data).decode("ascii"), _mime(data), "thumb cluster-dropped", key
            )
            cap = f'<span class="k" title="{_e(key)}">{_e(key)}</span>'
            dist = row.get("cluster_dist")
            if isinstance(dist, int | float):
                cap += f'<span class="d">dist {dist:.4g}</span>'
            cap += f"<span>{_e(QUOTA_REASON)}</span>"
            figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
        if figs:
            parts.append(
                f'<p class="muted">Dropped by {QUOTA_REASON} ({len(figs)} pictured):</p>'
                f'<div class="sheet">{"".join(figs)}</div>'
            )
        if quota > len(figs):
            more = quota - len(figs)
            lead = "Other rows" if figs else "Rows"
            parts.append(
                f'<p class="muted">{lead} dropped by {QUOTA_REASON}: {_rows(more)}, not pictured '
                "(the ledger stores no thumbnail for them).</p>"
            )
    return "".join(parts)


def _render_html(out: Path, max_thumbs: int) -> str:
    notes: list[str] = []
    # read_json notes why a file is absent (exactly one note); add what the report does instead
    meta = read_json(out / "dataset.json", notes)
    if meta is None:
        notes[-1] += " Shards are found by listing shards/."
    stats = read_json(out / "stats.json", notes)
    if stats is None:
        notes[-1] += " Stage order comes from the ledger; no thresholds or timings."
    dataset = ledger_dataset(out)
    if dataset is None:
        notes.append("The ledger (ledger/part-*.parquet) is missing: no funnel, reasons or scores.")
    summary = summarize_ledger(out)
    samples = kept_samples(out, meta, max_thumbs, notes)
    thumbs = (
        dropped_thumbs(dataset, [r["reason"] for r in summary["reasons"]], max_thumbs)
        if dataset is not None
        else {}
    )
    header = _header(out, summary, stats, meta, notes)
    info = cluster_stats(stats, notes)
    counts = cluster_counts(dataset)
    stats = stats or {}
    sections = [
        ("funnel", "Funnel by stage", _funnel_html(summary, stats)),
        ("reasons", "Why rows went", _reasons_html(summary)),
    ]
    cluster_sheets = None
    # only for a job that balanced: stats.json says so, or the ledger assigned clusters
    if info is not None or counts:
        before, after, source = cluster_sizes(info, counts)
        sections.append(
            ("clusters", "Clusters", _clusters_html(info, before, after, source, counts, notes))
        )
        order = largest_clusters(before, CLUSTER_SHEETS)
        got = (
            cluster_samples(out, dataset, order, notes, counts=counts)
            if dataset is not None and counts is not None
            else {}
        )
        cluster_sheets = (
            "cluster-samples",
            "Samples per cluster",
            _cluster_sheets_html(order, before, after, counts, got),
        )
    sections += [
        ("scores", "Scores and sizes", _hist_html(dataset, stats)),
        ("kept", "Kept samples", _kept_html(samples, summary["by_status"].get(KEPT, 0))),
    ]
    if cluster_sheets is not None:
        sections.append(cluster_sheets)
    sections.append(("dropped", "Dropped samples by reason", _dropped_html(summary, thumbs)))
    notes = list(dict.fromkeys(notes))  # two readers of one broken shard say the same thing
    extras = []
    if meta and meta.get("config"):
        extras.append(
            f"<details><summary>Job config</summary><pre>"
            f"{_e(json.dumps(meta['config'], indent=2, sort_keys=True, default=str))}"
            "</pre></details>"
        )
    if meta and meta.get("versions"):
        extras.append(
            f"<details><summary>Versions</summary><pre>"
            f"{_e(json.dumps(meta['versions'], indent=2, sort_keys=True, default=str))}"
            "</pre></details>"
        )
    note_html = (
        '<ul class="notes" id="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
        if notes
        else ""
    )
    nav = "<nav>" + "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t, _ in sections) + "</nav>"
    body = "".join(f'<section id="{sid}"><h2>{_e(t)}</h2>{c}</section>' for sid, t, c in sections)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    title = _e(f"{(meta or {}).get('name') or out.name} — curation report")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>"
        f"{header}{note_html}{nav}{body}{''.join(extras)}"
        f'<p class="muted">Report generated {generated} by manifests.report.</p>'
        "</main></body></html>\n"
    )


def render_page(
    title: str,
    header: str,
    notes: list[str],
    sections: list[tuple[str, str, str]],
    *,
    extra_css: str = "",
    generator: str = "manifests.report",
) -> str:
    """A self-contained report page: header, notes, a nav bar and ``(id, title, html)``
    sections. Other jobs' reports (video, captions) are built from the parts of this module."""
    nav = "<nav>" + "".join(f'<a href="#{s}">{_e(t)}</a>' for s, t, _ in sections) + "</nav>"
    body = "".join(f'<section id="{s}"><h2>{_e(t)}</h2>{c}</section>' for s, t, c in sections)
    note_html = (
        '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
        if notes
        else ""
    )
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}{extra_css}</style></head><body><main>{header}{note_html}{nav}{body}"
        f'<p class="muted">Report generated {generated} by {_e(generator)}.</p>'
        "</main></body></html>\n"
    )


def write_report(out_dir: str | Path, *, max_thumbs: int = 24) -> Path:
    """Write ``OUT/report.html`` and return its path.

    Everything is rendered in memory first and lands through a temp file and ``os.replace``,
    so a crash (or a reader opening it mid-write) never sees half a report, and a previous
    report survives a failed rerun.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} is not a directory (expected a curation output folder)")
    text = _render_html(out, max_thumbs)
    target = out / REPORT_NAME
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target
