"""The training report: ``output/report.html`` (a table of the stages, the loss curves, the
config) and ``output/loss.png``.

A presentation layer (DESIGN §3): it reads what the loop wrote (each stage's ``result.json`` and
``metrics.jsonl``) and nothing reads it back, so it can change without touching training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from manifests.atomic import write_bytes
from manifests.configs import to_dict
from model.config import TrainConfig
from model.metrics import read_metrics
from model.stages import GROUPS, STAGES

REPORT_COLUMNS = ("stage", "recipe", "steps", "first loss", "last loss", "s/step")
REPORT_COLUMNS += ("trainable @ lr", "DiffFP", "image merge", "skipped", "fixed")
REPORT_COLUMNS += ("ranks in sync",)
REPORT_COLUMNS += ("held-out eval",)


def loss_plot_png(stages: dict[int, list[float]]) -> bytes:
    """Loss per step, stages side by side on one axis (Agg canvas, no pyplot)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    offset = 0
    for n, losses in sorted(stages.items()):
        xs = range(offset + 1, offset + len(losses) + 1)
        ax.plot(list(xs), losses, label=f"stage {n}")
        if offset:
            ax.axvline(offset + 0.5, color="#9e9e9e", lw=0.8, ls="--")
        offset += len(losses)
    ax.set_xlabel("step (stages in order)")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    if stages:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _eval_cell(ev: dict | None) -> str:
    """Held-out loss per task and grounding mIoU, as one table cell."""
    if not ev or "loss" not in ev:
        return ""
    parts = [f"{task} {loss:.3f}" for task, loss in sorted(ev["loss_by_task"].items())]
    g = ev.get("grounding")
    if g:
        parts.append(f"grounding mIoU {g['mIoU']:.1f} (n={g['n']}, unparsed {g['unparsed']})")
    return f"{ev['samples']} samples: " + "; ".join(parts)


def write_report(cfg: TrainConfig, results: dict[int, dict]) -> Path:
    """``output/report.html``: a table of the stages (``results``, and those finished by
    earlier runs) and the loss curves (also ``loss.png``)."""
    import base64
    import html

    out = Path(cfg.output)
    results = dict(results)
    for n in STAGES:  # stages finished by earlier runs too
        done = out / f"stage{n}" / "final" / "result.json"
        if n not in results and done.is_file():
            results[n] = json.loads(done.read_text())
    curves = {
        n: [r["loss"] for r in read_metrics(out / f"stage{n}" / "metrics.jsonl")]
        for n in STAGES
        if (out / f"stage{n}" / "metrics.jsonl").is_file()
    }
    png = loss_plot_png(curves)
    write_bytes(out / "loss.png", png)

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    def row(n: int, r: dict) -> list:
        lrs = ", ".join(f"{g} {r['parameters'][g]['trainable']:,} @ {r['lr'][g]:g}" for g in GROUPS)
        on = "on" if r["token_compression"] else "off"
        if r["token_compression"] and "diff_threshold" in r:
            on += f" ({r['diff_threshold']})"
        m = r.get("image_merge_size")  # results written before it was recorded lack it
        merge = f"{m}x{m}" if m else None
        skipped = json.dumps(r["skipped"]) if r["skipped"] else ""
        fixed = json.dumps(r["fixed"]) if r.get("fixed") else ""
        loss = [r["first_loss"], r["last_loss"], r["mean_step_time_s"]]
        return [
            n,
            r["recipe"],
            r["steps"],
            *loss,
            lrs,
            on,
            merge,
            skipped,
            fixed,
            "yes" if r["in_sync"] else "NO",
            _eval_cell(r.get("eval")),
        ]

    cells = [row(n, r) for n, r in sorted(results.items())]
    rows = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in c) + "</tr>" for c in cells)
    head = "".join(f"<th>{h}</th>" for h in REPORT_COLUMNS)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(cfg.name)}: training report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>{html.escape(cfg.name)}</h1>
<p>preset <b>{html.escape(cfg.model.preset)}</b>, output {html.escape(str(out))}</p>
<table><tr>{head}</tr>{rows}</table>
<h2>Loss per stage</h2>
<img alt="loss per stage" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Config</h2><pre>{html.escape(json.dumps(to_dict(cfg), indent=2))}</pre>
</body></html>
"""
    path = out / "report.html"
    write_bytes(path, page.encode())
    return path


__all__ = ["REPORT_COLUMNS", "loss_plot_png", "write_report"]
