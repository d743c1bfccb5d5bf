"""The HTML primitives every report shares: escaping, number formats, images, tables, the page.

One stylesheet and one page frame for all jobs, so the image, caption and video reports look
alike and a fix to escaping or layout lands everywhere at once. Everything returns strings:
a report is a single self-contained file with every plot and thumbnail inlined as base64, so it
can be mailed, attached to a ticket or opened from a bucket without a server.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
from typing import Any

#: Caption text longer than this is cut (the full text is in the tooltip).
CAPTION_CHARS = 140
#: For a page meant to be read on a phone too; passed as ``render_page(head=...)``.
VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'

CSS = """
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
figcaption .d{color:#616161;display:block;font-variant-numeric:tabular-nums}
figcaption .c{font-style:italic;display:block}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.score-group h4{font-size:13px;margin:8px 0 4px;color:#424242}
.pair .score-group{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:4px 8px 8px}
@media (max-width:700px){.pair{grid-template-columns:1fr}}
.ok{color:#2e7d32} .bad{color:#c62828;font-weight:600}
.muted{color:#757575} details{margin:8px 0} pre{background:#fff;border:1px solid #e0e0e0;
  padding:8px;overflow:auto;font-size:12px}
"""


def esc(value: Any) -> str:
    """Any value as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def num(n: int | float | None) -> str:
    """Thousands separators; two decimals only for a fraction; a dash for "not known"."""
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def row_count(n: int) -> str:
    """Counts in running text: 1 row, 2 rows."""
    return f"{num(n)} row" if n == 1 else f"{num(n)} rows"


def pct(part: int, whole: int) -> str:
    """A share that stays readable when tiny (0.003 %) instead of rounding to zero."""
    if not whole:
        return "—"
    p = 100.0 * part / whole
    return f"{p:.1f} %" if p >= 0.1 or p == 0 else f"{p:.2g} %"


def duration(seconds: Any) -> str:
    """Seconds as people read them; "unknown" for anything that is not a number."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


#: C0/C1 control characters (whitespace aside): invalid in HTML; model captions may hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Control characters replaced, so model output cannot make the page invalid."""
    return _CONTROL.sub("\ufffd", text)


def short(text: str, limit: int = CAPTION_CHARS) -> str:
    """Cut before escaping, so an entity is never cut in half."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mime(data: bytes) -> str:
    """The type of stored thumbnail bytes, from their magic number (JPEG unless told otherwise)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def img(b64: str, mime_type: str, cls: str, alt: str, extra: str = "") -> str:
    """An inlined image: the page must open with nothing else beside it."""
    return f'<img class="{cls}" src="data:{mime_type};base64,{b64}" alt="{esc(alt)}"{extra}>'


def table(head: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """``head``: (label, numeric); ``rows``: cells already escaped."""
    ths = "".join(f'<th class="num">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>" for h, n in head)
    body = []
    for row in rows:
        tds = "".join(
            f'<td class="num">{c}</td>' if n else f"<td>{c}</td>"
            for c, (_, n) in zip(row, head, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_page(
    title: str,
    header: str,
    notes: list[str],
    sections: list[tuple[str, str, str]],
    *,
    extra_css: str = "",
    generator: str = "reports.html",
    head: str = "",
    notes_id: str | None = None,
    appendix: str = "",
) -> str:
    """A self-contained report page: header, notes, a nav bar and ``(id, title, html)``
    sections, then ``appendix`` (e.g. collapsed config and versions) and who generated it.

    ``head`` goes into ``<head>`` after the title (e.g. :data:`VIEWPORT`); ``notes_id`` gives
    the notes list an anchor. Every job's report (images, captions, video) goes through here.
    """
    nav = "<nav>" + "".join(f'<a href="#{s}">{esc(t)}</a>' for s, t, _ in sections) + "</nav>"
    body = "".join(f'<section id="{s}"><h2>{esc(t)}</h2>{c}</section>' for s, t, c in sections)
    anchor = f' id="{esc(notes_id)}"' if notes_id else ""
    note_html = (
        f'<ul class="notes"{anchor}>' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
        if notes
        else ""
    )
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"{head}<style>{CSS}{extra_css}</style></head><body><main>{header}{note_html}{nav}{body}"
        f'{appendix}<p class="muted">Report generated {generated} by {esc(generator)}.</p>'
        "</main></body></html>\n"
    )
