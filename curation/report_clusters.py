"""The curated-image report's cluster sections: what the k-means balancing did (settings,
sizes before and after, whether stats.json agrees with the ledger) and contact sheets of the
largest clusters.

Only a job that balanced its data has these sections, so they live with the curation job
rather than in the shared page kit (:mod:`reports`); the numbers come from
:mod:`curation.report_cluster_data`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from curation.report_cluster_data import (
    CLUSTER_DROPPED,
    CLUSTER_KEPT,
    QUOTA_REASON,
    largest_clusters,
    size_mismatches,
)
from reports.html import clean, esc, img, mime, num, row_count, short, table
from reports.plots import COLOR_KEPT, COLOR_OTHER, figure, png_b64

#: Rows of the largest-clusters table.
CLUSTER_TABLE_ROWS = 20


def clusters_html(
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
    facts = [f"k = {num(info['k']) if isinstance(info.get('k'), int) else num(k)}"]
    if info.get("strategy") is not None:
        facts.append(f"strategy <b>{esc(info['strategy'])}</b>")
    facts.append(f"per-cluster cap {num(cap)}" if cap is not None else "no per-cluster cap")
    if info.get("levels"):
        facts.append(f"levels {esc(json.dumps(info['levels'], default=str))}")
    empty = sum(1 for b in before if b == 0)
    facts.append(
        f"{num(sum(before))} rows clustered, {num(sum(after))} selected"
        + (f", {num(empty)} empty cluster(s)" if empty else "")
    )
    parts = [f'<p>{" · ".join(facts)}. <span class="muted">Sizes from {esc(source)}.</span></p>']

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
                    f'<span class="muted">({what} per cluster, all {num(k)} clusters).</span>'
                )
                continue
            c, stated, seen = diff[0]
            msg = (
                f"stats.json's clusters.{name} disagrees with the ledger's {what} in "
                f"{len(diff):,} cluster(s), e.g. cluster {c}: {stated:,} in stats.json, "
                f"{seen:,} in the ledger."
            )
            notes.append(msg)
            checks.append(f'<span class="bad">✗ {esc(msg)}</span>')
            if field == "kept":
                bad = {c: s for c, _, s in diff}
    parts.append("<p>" + "<br>".join(checks) + "</p>")

    order = largest_clusters(before, k)
    if k:
        chart = cluster_sizes_png(order, [before[c] for c in order], [after[c] for c in order], cap)
        parts.append(
            '<div class="funnel">'
            + img(chart, "image/png", "plot cluster-sizes", "cluster sizes before and after")
            + "</div>"
        )
    top = order[:CLUSTER_TABLE_ROWS]
    head = [("cluster", True), ("before", True), ("after", True)]
    if counts is not None:
        head += [("kept in ledger", True), (f"dropped by {QUOTA_REASON}", True)]
    rows = []
    for c in top:
        row = [num(c), num(before[c]), num(after[c])]
        if counts is not None:
            slot = counts.get(c, {})
            kept = num(slot.get("kept", 0))
            row += [f'<span class="bad">{kept}</span>' if c in bad else kept]
            row += [num(slot.get("quota", 0))]
        rows.append(row)
    if rows:
        what = f"The {len(top)} largest" if len(top) < k else f"All {len(top)}"
        parts.append(f'<h3>{what} clusters <span class="muted">by size before</span></h3>')
        parts.append(table(head, rows))
    return "".join(parts)


def cluster_fig(s: dict[str, Any]) -> str:
    """One kept sample of a cluster: with its distance to the centroid and its coarse caption,
    which say more about a cluster than its key does."""
    key = s["key"]
    if "jpeg" in s:
        pic = img(
            base64.b64encode(s["jpeg"]).decode("ascii"), "image/jpeg", "thumb cluster-kept", key
        )
    else:
        pic = f'<div class="nopic">{esc(s.get("error", "no picture"))}</div>'
    cap = f'<span class="k" title="{esc(s["shard"])}">{esc(key)}</span>'
    dist = s.get("cluster_dist")
    if isinstance(dist, int | float):
        cap += f'<span class="d">dist {dist:.4g}</span>'
    text = clean(s.get("coarse_caption") or "")
    if text.strip():
        cap += f'<span class="c" title="{esc(text)}">{esc(short(text))}</span>'
    return f"<figure>{pic}<figcaption>{cap}</figcaption></figure>"


def cluster_sheets_html(
    order: list[int],
    before: list[int],
    after: list[int],
    counts: dict[int, dict[str, int]] | None,
    samples: dict[int, dict[str, list[dict[str, Any]]]],
) -> str:
    """A sheet per cluster in ``order``: its kept samples and the quota drops the ledger kept a
    thumbnail of, so one can see whether a cluster is one thing and what balancing cut from it."""
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
        f"{QUOTA_REASON}, pictured wherever their bytes still are.</p>"
    ]
    for c in order:
        got = samples.get(c, {"kept": [], "dropped": []})
        quota = counts.get(c, {}).get("quota", 0)
        sub = f"{num(before[c])} before, {num(after[c])} after"
        if quota:
            sub += f", {num(quota)} dropped by {QUOTA_REASON}"
        parts.append(f'<h3>cluster {num(c)} <span class="muted">— {sub}</span></h3>')
        kept_total = counts.get(c, {}).get("kept", 0)
        if got["kept"]:
            parts.append(f'<div class="sheet">{"".join(cluster_fig(s) for s in got["kept"])}</div>')
            if kept_total > len(got["kept"]):
                parts.append(
                    f'<p class="muted">{len(got["kept"])} of {num(kept_total)} kept '
                    "samples shown.</p>"
                )
        else:
            parts.append('<p class="muted">No kept samples in the ledger.</p>')
        figs = []
        for row in got["dropped"]:
            data = row.get("jpeg")
            if not data:
                continue
            key = row.get("source_key") or "?"
            pic = img(
                base64.b64encode(data).decode("ascii"), mime(data), "thumb cluster-dropped", key
            )
            cap = f'<span class="k" title="{esc(key)}">{esc(key)}</span>'
            dist = row.get("cluster_dist")
            if isinstance(dist, int | float):
                cap += f'<span class="d">dist {dist:.4g}</span>'
            cap += f"<span>{esc(QUOTA_REASON)}</span>"
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
                f'<p class="muted">{lead} dropped by {QUOTA_REASON}: {row_count(more)}, '
                "not pictured (beyond the sheet, or their bytes are no longer reachable: "
                "no thumbnail in the ledger, no work folder, no local source file).</p>"
            )
    return "".join(parts)


#: Up to this many clusters are drawn as bars; more as two sorted curves.
CLUSTER_BARS_MAX = 200
#: Up to this many bars get their cluster id as a tick label.
CLUSTER_LABELS_MAX = 40


def cluster_sizes_png(
    ids: list[int], before: list[int], after: list[int], cap: int | None = None
) -> str:
    """Cluster sizes before and after balanced selection, clusters in the order given
    (the caller sorts them by size before, largest first).

    Up to :data:`CLUSTER_BARS_MAX` clusters: one bar per cluster, "after" drawn inside
    "before". Beyond that, bars would be thinner than a pixel: the two sorted size curves are
    drawn as filled steps over the cluster rank instead.
    """
    from matplotlib.ticker import MaxNLocator

    k = len(ids)
    # a handful of clusters need no 9-inch-wide bars
    fig = figure(min(9.0, 5.0 + 0.2 * k), 3.4)
    ax = fig.add_subplot()
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    x = np.arange(k)
    if k <= CLUSTER_BARS_MAX:
        ax.bar(x, b, width=0.85, color=COLOR_OTHER, alpha=0.55, label="before selection")
        ax.bar(x, a, width=0.55, color=COLOR_KEPT, label="after selection")
        if k <= CLUSTER_LABELS_MAX:
            ax.set_xticks(x, [str(c) for c in ids], fontsize=8, rotation=90 if k > 20 else 0)
            ax.set_xlabel("cluster id (largest before selection first)")
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{k:,} clusters, largest before selection first")
        ax.set_xlim(-0.6, k - 0.4)
    else:
        ax.fill_between(
            x, b, step="mid", color=COLOR_OTHER, alpha=0.45, lw=0, label="before selection"
        )
        ax.step(x, b, where="mid", color=COLOR_OTHER, lw=1)
        ax.fill_between(x, a, step="mid", color=COLOR_KEPT, alpha=0.35, lw=0)
        ax.step(x, a, where="mid", color=COLOR_KEPT, lw=1.3, label="after selection")
        ax.set_xlim(0, k - 1)
        ax.set_xlabel(f"cluster rank by size before selection ({k:,} clusters)")
    if cap is not None and cap > 0:
        ax.axhline(cap, color="#212121", ls="--", lw=1.1, label=f"per-cluster cap {cap:,}")
    # head room for the legend (the right-hand clusters are the small ones, but not always)
    ax.set_ylim(0, max([*b, *a, cap or 0, 1]) * 1.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Cluster sizes before and after balanced selection", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    return png_b64(fig)
