"""``report.html`` of a caption subset: funnel and gate failures, caption length distribution,
throughput per worker, and examples (kept captions with their images, failed ones with text)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from manifests.atomic import write_bytes
from manifests.dataset import shard_paths
from manifests.ledger import read_ledger
from manifests.shards import iter_samples
from reports.html import esc, img, num, render_page, table
from reports.ledger_summary import read_json, summarize_ledger
from reports.plots import hist_png
from reports.sections import funnel_html, header_html, reasons_html
from reports.thumbs import make_thumb

EXAMPLES = 12
FAILED_PER_REASON = 3


def _lengths_html(rows: list[dict]) -> str:
    kept = [r["words"] for r in rows if r["status"] == "kept" and r["words"]]
    other = [r["words"] for r in rows if r["status"] != "kept" and r["words"]]
    if not kept and not other:
        return '<p class="muted">No captions were generated.</p>'
    allv = np.asarray(kept + other, dtype=float)
    lo, hi = float(allv.min()), float(allv.max())
    edges = np.linspace(lo - 0.5, hi + 0.5, min(30, int(hi - lo) + 2))
    h = {
        "edges": edges,
        "kept": np.histogram(kept, edges)[0],
        "other": np.histogram(other, edges)[0],
        "log": False,
        "n": int(allv.size),
    }
    q = np.percentile(np.asarray(kept or other), [5, 50, 95]).round(1).tolist()
    summary_table = table(
        [("words per caption", False), ("p5", True), ("median", True), ("p95", True)],
        [["kept" if kept else "all", *(num(x) for x in q)]],
    )
    plot = img(hist_png("caption words", h, []), "image/png", "plot hist", "caption lengths")
    return f'{summary_table}<div class="plots">{plot}</div>'


def _throughput_html(stats: dict) -> str:
    pw = stats.get("per_worker") or {}
    tok = stats.get("tokens") or {}
    rows = [
        ["model", esc(stats.get("model")), ""],
        ["engine", esc(stats.get("engine")), ""],
        ["images / s / worker", num(pw.get("images_per_s")), ""],
        [
            "prompt tokens / s / worker",
            num(pw.get("prompt_tokens_per_s")),
            num(tok.get("prompt")),
        ],
        [
            "output tokens / s / worker",
            num(pw.get("output_tokens_per_s")),
            num(tok.get("output")),
        ],
    ]
    att = stats.get("attempts") or {}
    rows += [[f"captions taking {k} attempt(s)", num(v), ""] for k, v in att.items()]
    return table([("", False), ("rate", True), ("total tokens", True)], rows)


def _examples_html(out: Path, meta: dict | None) -> str:
    if not meta or not meta.get("shards"):
        return '<p class="muted">No caption was kept.</p>'
    figs = []
    for sample in iter_samples(shard_paths(out)):
        rec = json.loads(sample["json"])
        ext = rec["image"][0].rsplit(".", 1)[1]
        thumb = make_thumb(sample.get(ext, b""), 160)
        pic = img(base64.b64encode(thumb).decode(), "image/jpeg", "t", rec["key"]) if thumb else ""
        human, gpt = (c["value"] for c in rec["conversations"][:2])
        figs.append(
            f"<figure>{pic}<figcaption><span class='k'>{esc(rec['key'])}</span>"
            f"<span class='d'>{esc(human.removeprefix('<image>').strip())}</span>"
            f"<span class='c'>{esc(gpt)}</span></figcaption></figure>"
        )
        if len(figs) >= EXAMPLES:
            break
    return f'<div class="sheet">{"".join(figs)}</div>'


def _failures_html(rows: list[dict]) -> str:
    by_reason: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] != "kept" and r["reason"]:
            by_reason.setdefault(r["reason"], []).append(r)
    if not by_reason:
        return '<p class="muted">Every caption passed the gates.</p>'
    body = []
    for reason, rs in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        examples = [
            [
                esc(r["id"]),
                esc(r.get("finish_reason")),
                num(r.get("attempts")),
                esc(r.get("caption") or ""),
            ]
            for r in rs[:FAILED_PER_REASON]
        ]
        head = [("key", False), ("finish", False), ("attempts", True), ("caption", False)]
        body.append(f"<h3>{esc(reason)} ({len(rs)})</h3>{table(head, examples)}")
    return "".join(body)


def render(out: Path) -> str:
    notes: list[str] = []
    meta = read_json(out / "dataset.json", notes)
    stats = read_json(out / "stats.json", notes) or {}
    summary = summarize_ledger(out)
    cols = ["id", "status", "reason", "words", "caption", "finish_reason", "attempts"]
    rows = read_ledger(out, cols).to_pylist() if summary["ledger_files"] else []
    sections = [
        ("funnel", "Funnel by stage", funnel_html(summary, stats)),
        ("reasons", "Why captions failed", reasons_html(summary)),
        ("lengths", "Caption lengths", _lengths_html(rows)),
        ("throughput", "Throughput", _throughput_html(stats)),
        ("examples", "Kept captions", _examples_html(out, meta)),
        ("failures", "Failed captions by gate", _failures_html(rows)),
    ]
    header = header_html(out, summary, stats, meta, notes)
    name = (meta or {}).get("name") or out.name
    return render_page(
        f"{name} — caption report",
        header,
        notes,
        sections,
        extra_css=".sheet{grid-template-columns:repeat(auto-fill,minmax(220px,1fr))}",
        generator="recaption.report",
    )


def write_recaption_report(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    target = out / "report.html"
    write_bytes(target, render(out).encode())
    return target
