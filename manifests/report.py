"""One self-contained HTML report of a curated shard set: what came in, what was kept, and why
the rest went.

The report reads only what a job leaves in its output folder (``dataset.json``, ``stats.json``,
``ledger/part-*.parquet``, ``shards/*.tar``), so it can be rebuilt at any time, on any machine,
without Ray or the curation code (``manifests`` imports no other package of this project). It is
a single HTML file with every plot and thumbnail inlined as base64, so it can be mailed, attached
to a ticket or opened from a bucket without a server.

The ledger may hold millions of rows, so it is scanned in batches and only the columns each part
needs are read: counts read three string columns, histograms stream numeric columns twice (range,
then counts) instead of holding them, and the ``thumb`` bytes are read only where they are set.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from manifests.schema import BASE_SCHEMA, DROPPED, ERROR, KEPT, LEDGER_WRITE_FIELDS

REPORT_NAME = "report.html"
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
#: Caption text longer than this is cut (the full text is in the tooltip).
CAPTION_CHARS = 140

COLOR_KEPT = "#2e7d32"
COLOR_DROPPED = "#ef6c00"
COLOR_ERROR = "#c62828"
COLOR_OTHER = "#9e9e9e"


# --------------------------------------------------------------------------------------------
# reading the output folder
# --------------------------------------------------------------------------------------------


def ledger_files(out_dir: str | Path) -> list[Path]:
    """The ledger's parts in name order, which is partition order: it fixes "first seen"."""
    return sorted((Path(out_dir) / "ledger").glob("part-*.parquet"))


def _ledger(out_dir: str | Path) -> ds.Dataset | None:
    """The ledger as one dataset, or None when there is none.

    Parts may differ in their score columns (a stage added later, a resumed run); the schemas
    are unified from the parquet footers alone, so a part lacking a column reads it as null.
    """
    files = ledger_files(out_dir)
    if not files:
        return None
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


def _read_json(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
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
    dataset = _ledger(out)
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

    stats = _read_json(out / "stats.json") or {}
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


def _histograms(dataset: ds.Dataset, columns: list[str]) -> dict[str, dict[str, Any]]:
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


def _thresholds(stats: dict[str, Any], column: str) -> list[float]:
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
# plots (matplotlib, imported lazily: summarize_ledger and the CLI do not pay for it)
# --------------------------------------------------------------------------------------------


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


def _funnel_png(funnel: list[dict[str, Any]]) -> str:
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


def _hist_png(column: str, h: dict[str, Any], thresholds: list[float]) -> str:
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


def _human_bytes(x: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(x) < 1000:
            return f"{x:.3g} {unit}"
        x /= 1000
    return f"{x:.3g} TB"


# --------------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------------

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def _thumbnail_jpeg(data: bytes, size: int = THUMB_PX) -> bytes:
    """A small JPEG of an encoded image. ``draft`` lets libjpeg decode at 1/2..1/8 scale, so
    a 20-megapixel photo costs about as much as a small one."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (size, size))
        img = ImageOps.exif_transpose(im)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            img = Image.new("RGB", rgba.size, "white")
            img.paste(rgba, mask=rgba.getchannel("A"))
        else:
            img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=82)
        return buf.getvalue()


def _mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def _shard_paths(out: Path, dataset_json: dict[str, Any] | None) -> list[Path]:
    """The shards dataset.json lists, or (without it) whatever tars lie in shards/."""
    listed = (dataset_json or {}).get("shards") or []
    paths = [out / s["path"] for s in listed if isinstance(s, dict) and s.get("path")]
    return paths or sorted((out / "shards").glob("*.tar"))


def _kept_samples(
    out: Path, dataset_json: dict[str, Any] | None, max_thumbs: int, notes: list[str]
) -> list[dict[str, Any]]:
    """Up to ``max_thumbs`` samples read back from the shards, spread over the shards.

    Reading the shards (not the ledger) checks that what was written can be read with
    webdataset. Each shard is read only up to its quota, from its start, so a thousand
    1 GB shards cost a few small reads.
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander

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
        label = path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)
        try:
            with open(path, "rb") as stream:
                members = tar_file_expander([{"url": str(path), "stream": stream}])
                for sample in group_by_keys(members):
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
    try:
        item["jpeg"] = _thumbnail_jpeg(sample[ext])
    except Exception as exc:  # shown in the sheet: a kept image that does not decode is a bug
        item["error"] = f"{type(exc).__name__}: {exc}"
    return item


def _dropped_thumbs(
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
# HTML
# --------------------------------------------------------------------------------------------

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


def _short(text: str, limit: int = CAPTION_CHARS) -> str:
    """Cut before escaping, so an entity is never cut in half."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    chart = _img(_funnel_png(funnel), "image/png", "plot funnel-chart", "funnel by stage")
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
    hists = _histograms(dataset, columns)
    parts = []
    for col in columns:
        if col in hists:
            parts.append(
                _img(
                    _hist_png(col, hists[col], _thresholds(stats, col)),
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
            without.append(
                f"<li><b>{_e(reason)}</b> ({_e(where)}): {_rows(g['count'])} — "
                "no picture (not decoded)</li>"
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


def _render_html(out: Path, max_thumbs: int) -> str:
    notes: list[str] = []
    # _read_json notes why a file is absent (exactly one note); add what the report does instead
    meta = _read_json(out / "dataset.json", notes)
    if meta is None:
        notes[-1] += " Shards are found by listing shards/."
    stats = _read_json(out / "stats.json", notes)
    if stats is None:
        notes[-1] += " Stage order comes from the ledger; no thresholds or timings."
    dataset = _ledger(out)
    if dataset is None:
        notes.append("The ledger (ledger/part-*.parquet) is missing: no funnel, reasons or scores.")
    summary = summarize_ledger(out)
    samples = _kept_samples(out, meta, max_thumbs, notes)
    thumbs = (
        _dropped_thumbs(dataset, [r["reason"] for r in summary["reasons"]], max_thumbs)
        if dataset is not None
        else {}
    )
    header = _header(out, summary, stats, meta, notes)
    stats = stats or {}
    sections = [
        ("funnel", "Funnel by stage", _funnel_html(summary, stats)),
        ("reasons", "Why rows went", _reasons_html(summary)),
        ("scores", "Scores and sizes", _hist_html(dataset, stats)),
        ("kept", "Kept samples", _kept_html(samples, summary["by_status"].get(KEPT, 0))),
        ("dropped", "Dropped samples by reason", _dropped_html(summary, thumbs)),
    ]
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
