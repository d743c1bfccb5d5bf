"""Contact sheets: the kept samples as the shards hold them, and the dropped rows by reason.

Numbers say how many rows went; pictures show whether a filter went where it should. Kept
samples come from :func:`reports.samples.kept_samples`, dropped ones from the thumbnails the
ledger stored (:func:`reports.samples.dropped_thumbs`).
"""

from __future__ import annotations

import base64
from typing import Any

from reports.html import esc, img, mime, row_count, short

#: Why a reason has no pictures, unless the caller knows better (see ``dropped_html``).
NOT_DECODED = "no picture (not decoded)"


def kept_html(samples: list[dict[str, Any]], total_kept: int) -> str:
    """One figure per kept sample: thumbnail (or the error that stopped it), key, caption."""
    if not samples:
        return '<p class="muted">No kept samples could be read from the shards.</p>'
    figs = []
    for s in samples:
        key, text = s["key"], s.get("text") or ""
        if "jpeg" in s:
            pic = img(base64.b64encode(s["jpeg"]).decode("ascii"), "image/jpeg", "thumb kept", key)
        else:
            pic = f'<div class="nopic">{esc(s.get("error", "no picture"))}</div>'
        cap = f'<span class="k" title="{esc(s["shard"])}">{esc(key)}</span>'
        if text:
            cap += f'<span title="{esc(text)}">{esc(short(text))}</span>'
        figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
    note = (
        f'<p class="muted">{len(samples):,} of {total_kept:,} kept samples, '
        "read back from the shards.</p>"
    )
    return f'{note}<div class="sheet">{"".join(figs)}</div>'


def dropped_html(
    summary: dict[str, Any],
    thumbs: dict[str, list[dict[str, Any]]],
    unpictured: dict[str, str] | None = None,
) -> str:
    """One sheet per drop reason, biggest first; reasons without thumbnails listed at the end.

    ``unpictured`` maps a reason to the HTML that says why it has no pictures and where to look
    instead (a job's own section); any other reason is :data:`NOT_DECODED`.
    """
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
            why = (unpictured or {}).get(reason, NOT_DECODED)
            without.append(
                f"<li><b>{esc(reason)}</b> ({esc(where)}): {row_count(g['count'])} — {why}</li>"
            )
            continue
        figs = []
        for row in rows:
            data = row["thumb"]
            key = row.get("source_key") or "?"
            pic = img(base64.b64encode(data).decode("ascii"), mime(data), "thumb dropped", key)
            cap = f'<span class="k" title="{esc(key)}">{esc(key)}</span><span>{esc(reason)}</span>'
            figs.append(f"<figure>{pic}<figcaption>{cap}</figcaption></figure>")
        parts.append(
            f'<h3>{esc(reason)} <span class="muted">({esc(where)}: {row_count(g["count"])}, '
            f"{len(rows)} pictured)</span></h3>"
            f'<div class="sheet">{"".join(figs)}</div>'
        )
    if without:
        parts.append(f'<h3>Reasons without pictures</h3><ul class="nopics">{"".join(without)}</ul>')
    return "".join(parts)
