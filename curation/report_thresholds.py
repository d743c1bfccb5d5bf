"""The curated-image report's "Thresholds by eye": for every score threshold, pictures of the
lowest scores, of the rows just below the threshold and, beside them, of those just above it.

A histogram says how many rows a threshold cut; only pictures say whether it cut the right ones.
The rows are picked from the ledger by score in one streamed scan (a few columns, a bounded
top-k per group), and only those rows' bytes are then looked for
(:func:`curation.report_pictures.find_pictures`).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curation.report_pictures import PICTURE_COLUMNS
from manifests.ledger import SIZE_COLUMNS, score_columns
from manifests.schema import KEPT
from reports.histograms import thresholds_for
from reports.html import esc, img, mime, num
from reports.ledger_summary import scan_batches

#: Pictures per group (lowest, just below, just above) and threshold: 3 x this per threshold.
PER_GROUP = 6
GROUPS = (
    ("lowest", "Lowest scores", "dropped"),
    ("below", "Just below the threshold", "dropped"),
    ("above", "Just above the threshold", "passed this threshold"),
)

_EMPTY = {
    "lowest": "None beyond those just below the threshold: all its drops are there.",
    "below": "None.",
    "above": "No row reached the threshold.",
}


def threshold_columns(dataset: ds.Dataset, stats: dict[str, Any]) -> dict[str, float]:
    """Score column -> its threshold, for every score column of the ledger with one lower bound
    in stats.json (a range, like the aspect ratio's, is a shape filter whose drops the ledger
    pictures already); the size columns are not scores."""
    out = {}
    for col in score_columns(dataset.schema):
        ts = thresholds_for(stats, col)
        if col not in SIZE_COLUMNS and len(ts) == 1:
            out[col] = ts[0]
    return out


def _keep_k(found: list[tuple[float, dict]], new: list[tuple[float, dict]], k: int, top: bool):
    """The ``k`` lowest (or, with ``top``, highest) of ``found`` and ``new``; ties keep order."""
    merged = sorted(found + new, key=lambda t: -t[0] if top else t[0])
    return merged[:k]


def pick_rows(
    dataset: ds.Dataset, thresholds: dict[str, float], per_group: int = PER_GROUP
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per column: ``{"lowest": [...], "below": [...], "above": [...]}`` ledger rows, each with
    ``score``.

    A row went *below* a column's threshold when it is not kept and its reason is the column's
    (``aesthetic<4.5``); *above* are rows whose score reached the threshold, whatever became of
    them later. Lowest and below never share a row.
    """
    if not thresholds:
        return {}
    names = dataset.schema.names
    cols = [*thresholds, *[c for c in (*PICTURE_COLUMNS, "reason") if c in names]]
    cols = list(dict.fromkeys(cols))
    picks: dict[str, dict[str, list[tuple[float, dict]]]] = {
        c: {"lowest": [], "below": [], "above": []} for c in thresholds
    }
    for batch in scan_batches(dataset, cols):
        if not batch.num_rows:
            continue
        kept = pc.fill_null(pc.equal(batch.column("status"), KEPT), False).to_numpy(
            zero_copy_only=False
        )
        for col, t in thresholds.items():
            arr = batch.column(col)
            v = (
                np.full(batch.num_rows, np.nan)
                if pa.types.is_null(arr.type)
                else pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
            )
            ok = np.isfinite(v)
            prefix = f"{col}<"
            why = (
                pc.fill_null(pc.starts_with(batch.column("reason"), prefix), False).to_numpy(
                    zero_copy_only=False
                )
                if "reason" in names
                else np.zeros(batch.num_rows, dtype=bool)
            )
            mine = why & ~kept & ok
            groups = {
                # twice the group for "lowest", since "below" may take some of the same rows
                "lowest": (mine, 2 * per_group, False),
                "below": (mine, per_group, True),
                "above": (ok & (v >= t), per_group, False),
            }
            for g, (mask, k, top) in groups.items():
                idx = np.flatnonzero(mask)
                if not idx.size:
                    continue
                order = np.argsort(-v[idx] if top else v[idx], kind="stable")[:k]
                chosen = idx[order]
                rows = batch.take(pa.array(chosen)).to_pylist()
                new = [(float(v[i]), r) for i, r in zip(chosen, rows, strict=True)]
                picks[col][g] = _keep_k(picks[col][g], new, k, top)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for col, groups in picks.items():
        if not groups["below"]:  # the threshold dropped nothing: nothing to judge it by
            continue
        below = [r for _, r in groups["below"]]
        taken = {r.get("id") for r in below}
        lowest = [r for _, r in groups["lowest"] if r.get("id") not in taken][:per_group]
        out[col] = {"lowest": lowest, "below": below, "above": [r for _, r in groups["above"]]}
        for g in out[col].values():
            for r in g:
                r["score"] = r.get(col)
    return out


def _fig(row: dict[str, Any], col: str, group: str) -> str:
    key = row.get("source_key") or row.get("id") or "?"
    score = row.get("score")
    cap = f'<span class="k" title="{esc(key)}">{esc(key)}</span>'
    if isinstance(score, int | float) and math.isfinite(score):
        cap += f'<span class="d">{esc(col)} {score:.4g}</span>'
    status, reason = row.get("status"), row.get("reason")
    if group == "above":  # passed this threshold: what became of it after
        later = "kept" if status == KEPT else f"later {status}: {reason or '?'}"
        cap += f'<span class="st-{esc(status)}">{esc(later)}</span>'
    else:
        cap += f"<span>{esc(reason or '')}</span>"
    if "jpeg" in row:
        data = row["jpeg"]
        pic = img(
            base64.b64encode(data).decode("ascii"),
            mime(data),
            f"thumb score-{group}",
            f"{key} ({col} {score:.4g})" if isinstance(score, float) else key,
            f' title="picture from the {esc(row.get("found_in", "?"))}"',
        )
    else:
        pic = f'<div class="nopic" title="{esc(row.get("why", ""))}">no picture</div>'
    return f"<figure>{pic}<figcaption>{cap}</figcaption></figure>"


def thresholds_html(
    picks: dict[str, dict[str, list[dict[str, Any]]]], thresholds: dict[str, float]
) -> str:
    """One block per thresholded score: the lowest and just-below rows beside the just-above
    ones, each with its score; why a row has no picture is in its tooltip."""
    if not picks:
        return '<p class="muted">No score column has a threshold in stats.json.</p>'
    parts = [
        '<p class="muted">For each score threshold: the rows with the lowest scores, the rows '
        "just below the threshold (dropped) and, beside them, those just above it (passed), "
        f"up to {PER_GROUP} each. Does the line fall where the pictures change?</p>"
    ]
    for col, groups in picks.items():
        t = thresholds[col]
        n_pic = sum("jpeg" in r for g in groups.values() for r in g)
        n_all = sum(len(g) for g in groups.values())
        parts.append(
            f'<h3 data-column="{esc(col)}">{esc(col)} <span class="muted">— threshold '
            f"{t:.4g}; {num(n_pic)} of {num(n_all)} picked rows pictured</span></h3>"
        )
        blocks = {}
        for g, title, what in GROUPS:
            rows = groups[g]
            body = (
                f'<div class="sheet">{"".join(_fig(r, col, g) for r in rows)}</div>'
                if rows
                else f'<p class="muted">{_EMPTY[g]}</p>'
            )
            blocks[g] = (
                f'<div class="score-group" data-group="{g}"><h4>{title} ({what})</h4>{body}</div>'
            )
        parts.append(blocks["lowest"])
        parts.append(f'<div class="pair">{blocks["below"]}{blocks["above"]}</div>')
    return "".join(parts)


def dropped_pictures(
    picks: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, list[dict[str, Any]]]:
    """The pictured rows below each threshold, by drop reason, as the dropped-by-reason sheet
    takes them (``thumb``, ``source_key``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for groups in picks.values():
        for r in groups["below"] + groups["lowest"]:
            if "jpeg" in r and r.get("reason"):
                out.setdefault(r["reason"], []).append(
                    {"thumb": r["jpeg"], "source_key": r.get("source_key") or r.get("id")}
                )
    return out
