"""The report's section on duplicates and contamination (issue 17): how many rows went per kind,
example pairs side by side (the dropped copy beside the copy that was kept, or beside the name
of the evaluation image it matched) and the semantic step's similarity histogram with its
threshold drawn.

Reads the ledger (``duplicate_of``, ``eval_match``) and ``stats.json``; pictures come from
wherever they still are (:func:`curation.report_pictures.find_pictures`), a few per kind.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curation.report_pictures import PICTURE_COLUMNS, find_pictures
from reports.html import esc, img, mime, table

#: pairs pictured per kind of duplicate
PAIRS = 4
NOTES = ("duplicate_of", "eval_match")


def duplicates_html(
    out: Path, dataset: ds.Dataset | None, stats: dict[str, Any], notes: list[str]
) -> str | None:
    """The section's HTML, or None when the job removed no duplicate and checked no evaluation
    set (nothing to say)."""
    if dataset is None or not any(n in dataset.schema.names for n in NOTES):
        return None
    names = dataset.schema.names
    columns = [c for c in (*PICTURE_COLUMNS, "stage", "reason", *NOTES) if c in names]
    noted = None
    for n in NOTES:
        if n in names:
            valid = pc.is_valid(ds.field(n))
            noted = valid if noted is None else noted | valid
    counts: dict[tuple[str, str], int] = {}
    picked: list[dict] = []  # a few rows per stage to picture
    per_stage: dict[str, int] = {}
    # batch by batch: a pool with millions of duplicates is counted, never held
    for batch in dataset.scanner(columns=columns, filter=noted).to_batches():
        t = pa.Table.from_batches([batch])
        grouped = t.group_by(["stage", "reason"]).aggregate([("id", "count")]).to_pylist()
        for g in grouped:
            key = (g["stage"], g["reason"])
            counts[key] = counts.get(key, 0) + g["id_count"]
        for stage in sorted({g["stage"] for g in grouped}):
            want = PAIRS - per_stage.get(stage, 0)
            if want > 0:
                mine = t.filter(pc.equal(t["stage"], stage)).slice(0, want).to_pylist()
                picked += mine
                per_stage[stage] = per_stage.get(stage, 0) + len(mine)
    if not counts:
        return '<p class="muted">No duplicate and no copy of an evaluation image was found.</p>'
    parts = [
        table(
            [("stage", False), ("reason", False), ("rows", True)],
            [[esc(s), esc(why), f"{n:,}"] for (s, why), n in sorted(counts.items())],
        )
    ]
    parts.append(_pairs_html(out, dataset, picked, notes))
    hist = (stats.get("dedup") or {}).get("semantic_hist")
    if hist:
        from reports.plots import hist_png

        png = hist_png(
            "highest cosine to an earlier image of its cluster", hist, [hist["threshold"]]
        )
        plot = img(png, "image/png", "plot", "semantic similarity histogram")
        parts.append(f'<div class="plots">{plot}</div>')
    return "".join(parts)


def _pairs_html(out: Path, dataset: ds.Dataset, picked: list[dict], notes: list[str]) -> str:
    """The picked (dropped, kept) pairs, side by side."""
    kept_ids = [r["duplicate_of"] for r in picked if r.get("duplicate_of")]
    names = dataset.schema.names
    columns = [c for c in PICTURE_COLUMNS if c in names]
    originals = {
        o["id"]: o
        for o in dataset.to_table(
            columns=columns, filter=ds.field("id").isin(kept_ids)
        ).to_pylist()
    } if kept_ids else {}  # fmt: skip
    find_pictures(out, [*picked, *originals.values()], notes)
    body = []
    for r in picked:
        other = originals.get(r.get("duplicate_of") or "")
        right = (
            _picture(other, "kept copy")
            if other is not None
            else f'<figure><div class="nopic">evaluation image</div><figcaption><span class="k">'
            f"{esc(r.get('eval_match'))}</span></figcaption></figure>"
        )
        body.append(
            f"<tr><td>{esc(r['stage'])}<br>{esc(r['reason'])}</td>"
            f"<td>{_picture(r, 'dropped')}</td><td>{right}</td></tr>"
        )
    head = "<thead><tr><th>why</th><th>dropped</th><th>kept copy / matched</th></tr></thead>"
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _picture(row: dict[str, Any], label: str) -> str:
    """A figure as the report's contact sheets draw them: the thumbnail, the key below."""
    key = row.get("source_key") or row.get("id") or ""
    if row.get("jpeg"):
        b64 = base64.b64encode(row["jpeg"]).decode("ascii")
        pic = img(b64, mime(row["jpeg"]), "thumb", f"{label}: {key}")
    else:
        pic = f'<div class="nopic">{esc(row.get("why", "no picture"))}</div>'
    caption = f'<span class="k" title="{esc(key)}">{esc(key)}</span>'
    return f"<figure>{pic}<figcaption>{caption}</figcaption></figure>"
