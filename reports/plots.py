"""The reports' figures as base64 PNGs: the stage funnel and the score / size histograms, and
the canvas (:func:`figure`, :func:`png_b64`) a job's own figures are drawn on.

Kept apart from the HTML so the kit's one module that needs matplotlib is small and obvious.
matplotlib is imported lazily, inside the functions: importing a report (for
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
#: Rows a threshold does not apply to (e.g. clips too short to be judged by caption density).
COLOR_EXEMPT = "#1565c0"


def figure(width_in: float, height_in: float) -> Any:
    """A figure on the Agg canvas, without pyplot: no global state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_b64(fig: Any) -> str:
    """The figure as an inline-ready PNG (tight bounding box, 100 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def funnel_png(funnel: list[dict[str, Any]]) -> str:
    """Horizontal stacked bars, first stage on top: survived | dropped | error per stage."""
    fig = figure(9.0, 0.5 * len(funnel) + 1.3)
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
    return png_b64(fig)


def hist_png(column: str, h: dict[str, Any], thresholds: list[float]) -> str:
    """Kept and not-kept stacked, thresholds as dashed lines (kept into view).

    ``h`` may add ``exempt`` counts (rows the thresholds do not apply to, drawn stacked on top,
    blue and hatched) and their legend label ``exempt_label``."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig = figure(5.6, 3.3)
    ax = fig.add_subplot()
    # one filled step outline per series (``stairs``), not one rectangle per bin (~150 bar
    # patches a figure before): less to draw, the same picture
    edges = np.asarray(h["edges"], dtype=float)
    kept = np.asarray(h["kept"], dtype=float)
    top = kept + np.asarray(h["other"], dtype=float)
    ax.stairs(kept, edges, fill=True, color=COLOR_KEPT, label="kept")
    ax.stairs(
        top, edges, baseline=kept, fill=True, color=COLOR_DROPPED, alpha=0.85, label="not kept"
    )
    if h.get("exempt") is not None and np.asarray(h["exempt"]).any():
        # rows a threshold does not apply to, stacked on top in their own colour and hatch
        ax.stairs(
            top + np.asarray(h["exempt"], dtype=float),
            edges,
            baseline=top,
            fill=True,
            facecolor=COLOR_EXEMPT,
            hatch="///",
            edgecolor="white",
            lw=0,
            label=h.get("exempt_label") or "exempt",
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
    ncol = 2 if h.get("exempt") is not None and np.asarray(h["exempt"]).any() else 3
    ax.legend(fontsize=8, frameon=False, ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    return png_b64(fig)


def _human_bytes(x: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(x) < 1000:
            return f"{x:.3g} {unit}"
        x /= 1000
    return f"{x:.3g} TB"
