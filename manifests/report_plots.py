"""The report's figures: the stage funnel, the score / size histograms and the cluster sizes,
as base64 PNGs.

Kept apart from the HTML so the one module that needs matplotlib is small and obvious.
matplotlib is imported lazily, inside the functions: importing the report (for
``summarize_ledger`` or the CLI) does not pay for it. Figures are drawn on the Agg canvas
without pyplot, so there is no global state and no display is needed.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

COLOR_KEPT = "#2e7d32"
COLOR_DROPPED = "#ef6c00"
COLOR_ERROR = "#c62828"
COLOR_OTHER = "#9e9e9e"


def _figure(width_in: float, height_in: float) -> Any:
    """A figure on the Agg canvas, without pyplot: no global state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png_b64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def funnel_png(funnel: list[dict[str, Any]]) -> str:
    """Horizontal stacked bars, first stage on top: survived | dropped | error per stage."""
    fig = _figure(9.0, 0.5 * len(funnel) + 1.3)
    ax = fig.add_subplot()
    names = [f["stage"] for f in funnel]
    y = np.arange(len(funnel))
    surv = np.array([f["survived"] for f in funnel])
    drop = np.array([f["dropped"] for f in funnel])
    err = np.array([f["error"] for f in funnel])
    other = np.array([f["reached"] for f in funnel]) - surv - drop - err
    ax.barh(y, surv, color=COLOR_KEPT, label="survived")
    ax.barh(y, drop, left=surv, color=COLOR_DROPPED, label="dropped here")
    ax.barh(y, err, left=surv + drop, color=COLOR_ERROR, label="error here")
    if other.any():
        ax.barh(y, other, left=surv + drop + err, color=COLOR_OTHER, label="other status")
    top = max([f["reached"] for f in funnel] + [1])
    for yi, f in zip(y, funnel, strict=True):
        ax.text(
            f["reached"] + top * 0.01,
            yi,
            f"{f['reached']:,} → {f['survived']:,}",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title("Rows reaching each stage", fontsize=10)
    return _png_b64(fig)


def hist_png(column: str, h: dict[str, Any], thresholds: list[float]) -> str:
    """Kept and not-kept stacked, thresholds as dashed lines (kept into view)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig = _figure(5.6, 3.3)
    ax = fig.add_subplot()
    edges = h["edges"]
    left, width = edges[:-1], np.diff(edges)
    ax.bar(left, h["kept"], width=width, align="edge", color=COLOR_KEPT, label="kept")
    ax.bar(
        left,
        h["other"],
        width=width,
        align="edge",
        bottom=h["kept"],
        color=COLOR_DROPPED,
        alpha=0.85,
        label="not kept",
    )
    lo, hi = float(edges[0]), float(edges[-1])
    shown = [t for t in thresholds if not h["log"] or t > 0]
    label = "threshold " + ", ".join(f"{t:g}" for t in shown)
    for i, t in enumerate(shown):
        ax.axvline(t, color="#212121", ls="--", lw=1.2, label=label if i == 0 else None)
        lo, hi = min(lo, t), max(hi, t)
    fmt = _human_bytes if column == "bytes" else (lambda x: f"{x:g}")
    if h["log"]:
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.15, hi * 1.15)
        decades = math.log10(hi / lo)
        # matplotlib's default labels every minor tick on short spans, and they overlap
        subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        pad = (hi - lo) * 0.03 or 0.5
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt(x)))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{column}  ({h['n']:,} rows"
    title += ", log x)" if h["log"] else ")"
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    # below the axes: inside, it hides bars and threshold lines
    ax.legend(fontsize=8, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    return _png_b64(fig)


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
    fig = _figure(min(9.0, 5.0 + 0.2 * k), 3.4)
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
    return _png_b64(fig)


def _human_bytes(x: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(x) < 1000:
            return f"{x:.3g} {unit}"
        x /= 1000
    return f"{x:.3g} TB"
