"""``report.html`` of a video shard set: the funnel and reasons (as for images), clip lengths and
caption densities against the job's bounds, and frame strips of the first samples with their
conversations, so a person can see what the trainer will get.

Built from the output folder alone (dataset.json, stats.json, the ledger, the shards), with the
page kit of :mod:`reports`; one self-contained HTML file.
"""

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
from reports.samples import conversation_lines
from reports.sections import funnel_html, header_html, reasons_html
from reports.thumbs import make_thumb

STRIP_SAMPLES = 12
STRIP_FRAMES = 8
#: Longest side of a frame in the strips: a frame fills its card (at least FRAME_CARD_PX wide),
#: so it is made large enough to stay sharp there.
FRAME_PX = 320
FRAME_CARD_PX = 220
BINS = 20
#: The frame strips: a few wide cards per row, each frame as wide as its card.
STRIP_CSS = (
    ".sample{margin:14px 0}"
    f".frames{{grid-template-columns:repeat(auto-fill,minmax({FRAME_CARD_PX}px,1fr))}}"
    ".frames figure img{width:100%;max-width:none;max-height:none;height:auto}"
)


def _hist(
    values_kept: list[float],
    values_other: list[float],
    log: bool = False,
    values_exempt: list[float] | None = None,
) -> dict:
    """Bins over every value; ``values_exempt`` (kept rows a bound does not apply to) are
    counted apart from ``values_kept``, so the plot can tell them apart."""
    exempt = values_exempt or []
    allv = np.asarray(values_kept + values_other + exempt, dtype=float)
    lo, hi = float(allv.min()), float(allv.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.geomspace(lo, hi, BINS + 1) if log and lo > 0 else np.linspace(lo, hi, BINS + 1)
    return {
        "edges": edges,
        "kept": np.histogram(values_kept, edges)[0],
        "other": np.histogram(values_other, edges)[0],
        "exempt": np.histogram(exempt, edges)[0],
        "log": bool(log and lo > 0),
        "n": int(allv.size),
    }


def _clips_html(clips: list[dict], cfg: dict, stats: dict) -> str:
    if not clips:
        return '<p class="muted">No clips were cut (no video got past probing).</p>'
    kept = [c for c in clips if c["status"] == "kept"]
    other = [c for c in clips if c["status"] != "kept"]
    bounds = cfg.get("clips") or {}
    # clips shorter than density_min_len_s are not judged by density (video_prep.clips)
    short_s = bounds.get("density_min_len_s") or 0
    exempt = [c for c in kept if c["length"] < short_s]
    judged = [c for c in kept if c["length"] >= short_s]
    density = _hist(
        [c["per_min"] for c in judged],
        [c["per_min"] for c in other],
        values_exempt=[c["per_min"] for c in exempt],
    )
    density["exempt_label"] = f"kept, shorter than {short_s:g} s: exempt"
    plots = [
        hist_png(
            "clip length (s)",
            _hist([c["length"] for c in kept], [c["length"] for c in other]),
            [bounds["max_len_s"]] if "max_len_s" in bounds else [],
        ),
        hist_png(
            "captions per minute",
            density,
            [
                v
                for v in (bounds.get("min_captions_per_min"), bounds.get("max_captions_per_min"))
                if v is not None
            ],
        ),
    ]
    legend = (
        '<p class="muted legend">Green: kept clips; orange: dropped clips; dashed: the job\'s '
        "bounds."
    )
    if exempt:
        legend += (
            f' <span class="exempt-legend"><b style="color:#1565c0">Blue, hatched</b>: '
            f"{num(len(exempt))} kept clip(s) shorter than density_min_len_s = {short_s:g} s, "
            "exempt from the captions-per-minute bounds: one caption on a few-second clip says "
            "nothing about density, so they may lie outside the bounds and still be kept (they "
            f"are only dropped as too dense if they hold more captions than a {short_s:g} s clip "
            "may).</span>"
        )
    legend += "</p>"
    reasons: dict[str, int] = {}
    for c in other:
        reasons[c["reason"]] = reasons.get(c["reason"], 0) + 1
    summary_table = table(
        [("clips", False), ("count", True)],
        [["kept", num(len(kept))]]
        + [[f"<b>{esc(r)}</b>", num(n)] for r, n in reasons.items()]
        + [["samples written", num(stats.get("samples"))], ["frames", num(stats.get("frames"))]],
    )
    imgs = "".join(img(p, "image/png", "plot hist", "clip histogram") for p in plots)
    return f'{summary_table}{legend}<div class="plots">{imgs}</div>'


def _strip(sample: dict) -> str:
    rec = json.loads(sample["json"])
    names = [n.split(".", 1)[1] for n in rec.get("frames", [])]
    ts = rec.get("timestamps", [])
    pick = np.linspace(0, len(names) - 1, min(STRIP_FRAMES, len(names)), dtype=int) if names else []
    figs = []
    for i in dict.fromkeys(int(x) for x in pick):
        thumb = make_thumb(sample.get(names[i], b""), FRAME_PX)
        pic = (
            img(base64.b64encode(thumb).decode(), "image/jpeg", "frame", names[i])
            if thumb
            else '<div class="nopic">no frame</div>'
        )
        t = f"{ts[i]:.1f} s" if i < len(ts) else ""
        figs.append(f"<figure>{pic}<figcaption><span class='d'>{t}</span></figcaption></figure>")
    text = "\n".join(conversation_lines(rec))
    head = f"<b>{esc(rec.get('key', sample['__key__']))}</b> · {len(names)} frames"
    if rec.get("clip"):
        c = rec["clip"]
        head += f" · clip {c['start']:.1f}-{c['end']:.1f} s of {esc(rec.get('source_video'))}"
    return (
        f'<div class="sample"><div>{head}</div>'
        f'<div class="sheet frames">{"".join(figs)}</div><pre>{esc(text)}</pre></div>'
    )


def _samples_html(out: Path, meta: dict | None) -> str:
    if not meta or not meta.get("shards"):
        return '<p class="muted">No samples were written.</p>'
    strips = []
    for sample in iter_samples(shard_paths(out)):
        strips.append(_strip(sample))
        if len(strips) >= STRIP_SAMPLES:
            break
    return "".join(strips)


def render(out: Path) -> str:
    notes: list[str] = []
    meta = read_json(out / "dataset.json", notes)
    stats = read_json(out / "stats.json", notes) or {}
    summary = summarize_ledger(out)
    clips: list[dict] = []
    if summary["ledger_files"]:
        for text in read_ledger(out, ["clips"])["clips"].to_pylist():
            clips += json.loads(text or "[]")
    sections = [
        ("funnel", "Funnel by stage", funnel_html(summary, stats)),
        ("reasons", "Why videos went", reasons_html(summary)),
        ("clips", "Clips", _clips_html(clips, (meta or {}).get("config") or {}, stats)),
        ("samples", "Samples (frame strips)", _samples_html(out, meta)),
    ]
    # a video gives many samples: the header's samples-vs-kept-rows check is for image sets
    header = header_html(out, summary, stats, {**(meta or {}), "samples": None}, notes)
    name = (meta or {}).get("name") or out.name
    return render_page(
        f"{name} — video report",
        header,
        notes,
        sections,
        extra_css=STRIP_CSS,
        generator="video_prep.report",
    )


def write_video_report(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    target = out / "report.html"
    write_bytes(target, render(out).encode())
    return target
