"""``report.html`` of an imported shard set: the funnel and the reasons records went (as every
job's report opens), the repairs made, and the first samples as the trainer will get them (an
image or a strip of frames, and the conversation).

Built from the output folder alone with the page kit of :mod:`reports`; one self-contained file.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from manifests.atomic import write_bytes
from manifests.dataset import shard_paths
from manifests.shards import iter_samples
from reports.html import esc, img, num, render_page, table
from reports.ledger_summary import read_json, summarize_ledger
from reports.sections import funnel_html, header_html, reasons_html
from reports.thumbs import make_thumb

SAMPLES = 12
STRIP = 6


def _pictures(sample: dict, rec: dict) -> str:
    names = rec.get("frames") or rec.get("image") or []
    if len(names) > STRIP:
        step = (len(names) - 1) / (STRIP - 1)
        names = [names[round(i * step)] for i in range(STRIP)]
    figs = []
    for n in names:
        thumb = make_thumb(sample.get(n.split(".", 1)[1], b""), 112)
        figs.append(
            img(base64.b64encode(thumb).decode(), "image/jpeg", "frame", n)
            if thumb
            else '<div class="nopic">no picture</div>'
        )
    return "".join(f"<figure>{f}</figure>" for f in figs)


def _sample_html(sample: dict) -> str:
    rec = json.loads(sample["json"])
    if rec.get("stream"):
        turns = [f"[{m['time']:.1f} s] {m['role']}: {m['content']}" for m in rec["conversation"]]
    else:
        turns = [f"{t['from']}: {t['value']}" for t in rec.get("conversations", [])]
    head = f"<b>{esc(rec.get('key'))}</b> · {esc(rec.get('source_key'))}"
    return (
        f'<div class="sample"><div>{head}</div><div class="sheet">{_pictures(sample, rec)}</div>'
        f"<pre>{esc(chr(10).join(turns))}</pre></div>"
    )


def _samples_html(out: Path, meta: dict | None) -> str:
    if not meta or not meta.get("shards"):
        return '<p class="muted">No samples were written.</p>'
    parts = []
    for sample in iter_samples(shard_paths(out)):
        parts.append(_sample_html(sample))
        if len(parts) >= SAMPLES:
            break
    return "".join(parts)


def _fixes_html(stats: dict) -> str:
    fixes = stats.get("fixes") or {}
    if not fixes:
        return '<p class="muted">No record needed a repair.</p>'
    rows = [[esc(k), num(v)] for k, v in sorted(fixes.items())]
    return table([("repair (record kept)", False), ("records", True)], rows)


def render(out: Path) -> str:
    notes: list[str] = []
    meta = read_json(out / "dataset.json", notes)
    stats = read_json(out / "stats.json", notes) or {}
    summary = summarize_ledger(out)
    sections = [
        ("funnel", "Funnel by stage", funnel_html(summary, stats)),
        ("reasons", "Why records went", reasons_html(summary)),
        ("fixes", "Repairs", _fixes_html(stats)),
        ("samples", "Samples", _samples_html(out, meta)),
    ]
    header = header_html(out, summary, stats, meta, notes)
    name = (meta or {}).get("name") or out.name
    return render_page(
        f"{name} — import report",
        header,
        notes,
        sections,
        extra_css=".sample{margin:14px 0}.sheet figure img{max-width:112px}",
        generator="ingest.report",
    )


def write_import_report(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    target = out / "report.html"
    write_bytes(target, render(out).encode())
    return target
