"""``report.html`` of a raw-video shard set: the funnel and reasons, each video's timeline (its
clips as bars, scene cuts as red marks, dropped clips grey) and the frame strips of the first
samples (a caption set's samples are single clips: a strip per clip, with its caption).

Built from the output folder alone, with the page kit of :mod:`reports` and the video report's
sample strips (:mod:`video_prep.report`), kept in a module of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from manifests.atomic import write_bytes
from manifests.ledger import read_ledger
from reports.html import esc, num, render_page, table
from reports.ledger_summary import read_json, summarize_ledger
from reports.sections import funnel_html, header_html, reasons_html
from video_prep.report import _samples_html

TIMELINES = 12  # videos drawn
WIDTH, HEIGHT = 720, 34


def timeline_svg(duration: float, clips: list[dict], cuts: list[float]) -> str:
    """One video as an SVG bar: clips (kept blue, dropped grey) and the cuts (red)."""
    scale = WIDTH / max(duration, 1e-6)
    parts = [f'<rect x="0" y="8" width="{WIDTH}" height="16" fill="#eee"/>']
    for c in clips:
        x, w = c["start"] * scale, max(1.0, (c["end"] - c["start"]) * scale)
        fill = "#4a7ab5" if c["status"] == "kept" else "#bbb"
        tip = f"clip {c['index']}: {c['start']:.1f}-{c['end']:.1f} s, {c['status']}"
        if c.get("reason"):
            tip += f" ({c['reason']})"
        parts.append(
            f'<rect x="{x:.1f}" y="8" width="{w:.1f}" height="16" fill="{fill}" '
            f'stroke="#fff"><title>{esc(tip)}</title></rect>'
        )
    for t in cuts:
        x = t * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="2" x2="{x:.1f}" y2="30" stroke="#d33" stroke-width="2">'
            f"<title>cut at {t:.2f} s</title></line>"
        )
    parts.append('<text x="0" y="34" font-size="9">0 s</text>')
    parts.append(f'<text x="{WIDTH - 40}" y="34" font-size="9">{duration:.1f} s</text>')
    return f'<svg width="{WIDTH}" height="{HEIGHT + 4}" class="timeline">{"".join(parts)}</svg>'


def _timelines_html(out: Path) -> str:
    try:
        rows = read_ledger(out, ["source_key", "status", "reason", "duration", "cuts", "clips"])
    except FileNotFoundError:
        return '<p class="muted">No ledger.</p>'
    blocks, n_cuts, n_clips, n_kept = [], 0, 0, 0
    for r in rows.to_pylist():
        clips = json.loads(r.get("clips") or "[]")
        cuts = json.loads(r.get("cuts") or "[]")
        n_cuts += len(cuts)
        n_clips += len(clips)
        n_kept += sum(1 for c in clips if c["status"] == "kept")
        if not r.get("duration") or len(blocks) >= TIMELINES:
            continue
        caps = "".join(
            f"<li>{c['start']:.1f}-{c['end']:.1f} s: "
            f"{esc(c.get('short_caption') or c['reason'])}</li>"
            for c in clips
        )
        head = f"<b>{esc(r['source_key'])}</b> · {len(cuts)} cuts · {len(clips)} clips"
        if r["status"] != "kept":
            head += f" · {esc(r['status'])} ({esc(r['reason'])})"
        blocks.append(
            f'<div class="video">{head}<br>{timeline_svg(r["duration"], clips, cuts)}'
            f"<ul>{caps}</ul></div>"
        )
    summary = table(
        [("", False), ("count", True)],
        [["scene cuts", num(n_cuts)], ["clips", num(n_clips)], ["clips kept", num(n_kept)]],
    )
    return summary + "".join(blocks)


def render(out: Path) -> str:
    notes: list[str] = []
    meta = read_json(out / "dataset.json", notes)
    stats = read_json(out / "stats.json", notes) or {}
    summary = summarize_ledger(out)
    sections = [
        ("funnel", "Funnel by stage", funnel_html(summary, stats)),
        ("reasons", "Why videos went", reasons_html(summary)),
        ("timelines", "Scene cuts and clips", _timelines_html(out)),
        ("samples", "Samples (frame strips)", _samples_html(out, meta)),
    ]
    header = header_html(out, summary, stats, {**(meta or {}), "samples": None}, notes)
    name = (meta or {}).get("name") or out.name
    return render_page(
        f"{name} — raw video report",
        header,
        notes,
        sections,
        extra_css=".sample,.video{margin:14px 0}.sheet figure img{max-width:112px}",
        generator="video_prep.raw_report",
    )


def write_raw_report(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    target = out / "report.html"
    write_bytes(target, render(out).encode())
    return target
