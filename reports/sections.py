"""The sections every job's report opens with: the header (name, counts, where it lies), the
funnel by stage, the reasons rows went, and the score / size histograms.

Built from the ledger summary (:func:`reports.ledger_summary.summarize_ledger`), ``stats.json``
and ``dataset.json``; each returns an HTML fragment, so a job's report picks the ones it needs
and adds its own between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from manifests.ledger import score_columns
from manifests.schema import DROPPED, ERROR, KEPT
from reports.histograms import histograms, thresholds_for
from reports.html import duration, esc, img, num, pct, table
from reports.ledger_summary import LedgerFooters, unified_schema
from reports.plots import funnel_png, hist_png

_SUBTITLE = (("task", "task"), ("modality", "modality"), ("schema_version", "schema"))


def header_html(
    out: Path,
    summary: dict[str, Any],
    stats: dict[str, Any] | None,
    meta: dict[str, Any] | None,
    notes: list[str],
) -> str:
    """Title, subtitle and count cards. The ledger's counts win over stats.json's (it is what
    the rows say); a disagreement with stats.json or dataset.json goes to ``notes``."""
    meta, has_stats = meta or {}, stats is not None
    stats = stats or {}
    name = meta.get("name") or out.name
    if summary["ledger_files"]:
        counts = dict(summary["by_status"])
        inputs = summary["inputs"]
        if has_stats and stats.get("inputs") not in (None, inputs):
            notes.append(
                f"stats.json counts {num(stats.get('inputs'))} inputs, the ledger holds "
                f"{num(inputs)} rows; the report shows the ledger."
            )
    else:
        counts = {s: int(stats.get(s) or 0) for s in (KEPT, DROPPED, ERROR)}
        inputs = int(stats.get("inputs") or sum(counts.values()))
    kept = counts.get(KEPT, 0)
    samples = meta.get("samples")
    if meta and samples is not None and summary["ledger_files"] and samples != kept:
        notes.append(
            f"dataset.json lists {num(samples)} samples but the ledger has {num(kept)} kept rows."
        )
    shards = meta.get("shards") or []
    shard_bytes = sum(int(s.get("bytes") or 0) for s in shards if isinstance(s, dict))
    sub = [f"{label} {esc(meta[k])}" for k, label in _SUBTITLE if meta.get(k) is not None]
    if shards:
        sub.append(f"{len(shards):,} shard(s), {shard_bytes / 1e6:,.1f} MB")
    sub.append(f"created {esc(meta.get('created_at') or 'unknown')}")
    sub.append(f"folder <code>{esc(out)}</code>")
    dropped, errors = counts.get(DROPPED, 0), counts.get(ERROR, 0)
    cards = [
        ("", num(inputs), "inputs"),
        ("kept", num(kept), f"kept ({pct(kept, inputs)})"),
        ("dropped", num(dropped), f"dropped ({pct(dropped, inputs)})"),
        ("error", num(errors), f"error ({pct(errors, inputs)})"),
        ("", esc(duration(stats.get("wall_s"))), "wall time"),
    ]
    others = {k: v for k, v in counts.items() if k not in (KEPT, DROPPED, ERROR) and v}
    cards += [("", num(v), f"status {esc(k)}") for k, v in others.items()]
    card_html = "".join(
        f'<div class="card {c}"><div class="v">{v}</div><div class="l">{lab}</div></div>'
        for c, v, lab in cards
    )
    return (
        f'<h1>{esc(name)}</h1><div class="sub">{" · ".join(sub)}</div>'
        f'<div class="cards" id="counts">{card_html}</div>'
    )


def funnel_html(summary: dict[str, Any], stats: dict[str, Any]) -> str:
    """Rows reaching, leaving and surviving each stage, with its time: table and chart."""
    funnel = summary["funnel"]
    if not funnel:
        return '<p class="muted">No stages: the ledger is empty and stats.json names none.</p>'
    timings = stats.get("timings_s") or {}
    rows = []
    for f in funnel:
        t = timings.get(f["stage"])
        rows.append(
            [
                esc(f["stage"]),
                num(f["reached"]),
                num(f["dropped"]),
                num(f["error"]),
                num(f["survived"]),
                pct(f["survived"], f["reached"]),
                esc(duration(t)) if t is not None else "—",
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
    chart = img(funnel_png(funnel), "image/png", "plot funnel-chart", "funnel by stage")
    return f'{table(head, rows)}<div class="funnel">{chart}</div>'


def reasons_html(summary: dict[str, Any]) -> str:
    """Every (stage, reason, status) with its count and share of the inputs, largest first."""
    if not summary["reasons"]:
        return '<p class="muted">Nothing was dropped.</p>'
    inputs = summary["inputs"]
    rows = [
        [
            esc(r["stage"]),
            f"<b>{esc(r['reason'])}</b>",
            f'<span class="st-{esc(r["status"])}">{esc(r["status"])}</span>',
            num(r["count"]),
            pct(r["count"], inputs),
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
    return table(head, rows)


def hist_html(footers: LedgerFooters, stats: dict[str, Any]) -> str:
    """One histogram per score / size column of the ledger, with stats.json's thresholds."""
    if not footers.parts:
        return '<p class="muted">No ledger, no scores.</p>'
    columns = score_columns(unified_schema(footers.parts))
    hists = histograms(footers, columns)
    figures = []
    for col in columns:
        if col in hists:
            figures.append(
                img(
                    hist_png(col, hists[col], thresholds_for(stats, col)),
                    "image/png",
                    "plot hist",
                    f"histogram of {col}",
                    f' data-column="{esc(col)}"',
                )
            )
    empty = [c for c in columns if c not in hists]
    tail = f'<p class="muted">All null, not plotted: {esc(", ".join(empty))}.</p>' if empty else ""
    legend = (
        '<p class="muted">Green: kept rows; orange: dropped or errored rows that have the value; '
        "dashed: the job's thresholds.</p>"
    )
    return f'{legend}<div class="plots">{"".join(figures)}</div>{tail}'
