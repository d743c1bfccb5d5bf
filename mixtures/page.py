"""A materialised mixture's ``report.html``: what a training stage will read, at a glance.

Every data job's shard set has a page; a mixture had only ``composition.json``, and the build
index showed its table. The page has what a person checks before spending GPU hours on a stage:

* the composition per group and source (realised samples and share against the recipe's
  targets) and the token estimate per epoch, from ``composition.json``;
* the first samples of every source, read back from the mixture's own shards (so what is shown
  is what the trainer gets): an image, or a strip of a video's frames with their times, and the
  conversation. The provenance ledger says which source each sample came from and which shard
  holds it: it is read until every source has its samples, and only those shards are opened,
  each streamed from its start until its samples are found.

Drawn by :func:`mixtures.materialise.write_mixture` (``vl3data mix --output``, a build's
``mix`` node) and again by ``vl3data report OUT``, from the files alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq

from manifests.atomic import write_bytes
from manifests.readers import IMAGE_EXTS
from mixtures.report import FRAME_MEMBER
from reports.html import esc, img, num, pct, render_page, short, table
from reports.ledger_summary import read_json
from reports.samples import conversation_lines, shard_samples
from reports.thumbs import make_thumb

log = logging.getLogger(__name__)

#: samples shown per source
PER_SOURCE = 3
#: frames shown per video sample, spread over the video
STRIP_FRAMES = 6
#: longest side of a shown image or frame, in pixels
PICTURE_PX = 160
#: characters of a conversation turn shown
TURN_CHARS = 300

CSS = (
    ".sample{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;"
    "margin:10px 0}.sample .pics{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}"
    ".sample figure{padding:3px}.sample figure img{max-width:160px;max-height:160px}"
    ".turns{margin:4px 0 0;padding-left:18px}.turns li{margin:2px 0;white-space:pre-wrap}"
)


def composition_html(rows: list[dict]) -> str:
    """``composition.json``'s rows as a table: realised samples and share per group and source,
    against the recipe's targets (the build index shows the same table)."""
    total = sum(r.get("epoch_samples") or 0 for r in rows if r.get("level") == "group")
    body = []
    for r in rows:
        is_group = r.get("level") == "group"
        name = f"<b>{esc(r.get('group'))}</b>" if is_group else f"&nbsp;&nbsp;{esc(r['source'])}"
        share, vs = r.get("target_share"), r.get("vs_target")
        body.append(
            [
                name,
                num(r.get("target")),
                num(r.get("epoch_samples")),
                pct(r.get("epoch_samples") or 0, total),
                "—" if share is None else f"{100 * share:.1f} %",
                "—" if vs is None else f"{vs:.2f}×",
            ]
        )
    head = [
        ("group / source", False),
        ("target", True),
        ("samples", True),
        ("share", True),
        ("target share", True),
        ("vs target", True),
    ]
    return table(head, body)


def tokens_html(est: dict) -> str:
    """The token estimate per source and for the stage; "unknown" where the data cannot say."""

    def n(x: float | None) -> str:
        return "unknown" if x is None else num(round(x))

    rows = [
        [
            esc(r.get("source")),
            esc(r.get("modality")),
            num(r.get("epoch_samples")),
            n(r.get("text_tokens_per_sample")),
            n(r.get("vision_tokens_per_sample")),
            n(r.get("text_tokens")),
            n(r.get("vision_tokens")),
        ]
        for r in est.get("sources", [])
    ]
    rows.append(
        ["<b>stage</b>", "", "", "", "", n(est.get("text_tokens")), n(est.get("vision_tokens"))]
    )
    head = [
        ("source", False),
        ("modality", False),
        ("samples", True),
        ("text / sample", True),
        ("vision / sample", True),
        ("text tokens", True),
        ("vision tokens", True),
    ]
    how = f'<p class="muted">{esc(est.get("heuristic", ""))}</p>'
    return table(head, rows) + how


class Pick(NamedTuple):
    """Where a shown sample came from, and which shard holds it (from the provenance ledger)."""

    group: str
    source: str
    shard: str


def picked_keys(
    out: Path, per_source: int = PER_SOURCE, sizes: dict[str, int] | None = None
) -> dict[str, Pick]:
    """The first ``per_source`` samples of each source, in shard order, by key, from the
    provenance ledger, read a batch at a time; with ``sizes`` (samples per source, from
    ``composition.json``) the read stops once every source has its share."""
    picked: dict[str, Pick] = {}
    taken: dict[str, int] = {}
    wanted = {s: min(per_source, n) for s, n in (sizes or {}).items()}
    for part in sorted((out / "ledger").glob("*.parquet")):
        cols = ["key", "group", "source", "shard"]
        for batch in pq.ParquetFile(part).iter_batches(batch_size=8192, columns=cols):
            for key, group, source, shard in zip(
                *(batch.column(c).to_pylist() for c in cols), strict=True
            ):
                if taken.get(source, 0) < per_source:
                    taken[source] = taken.get(source, 0) + 1
                    picked[key] = Pick(group, source, shard)
            if wanted and all(taken.get(s, 0) >= n for s, n in wanted.items()):
                return picked
    return picked


def _picture(data: bytes, label: str, caption: str = "") -> str:
    thumb = make_thumb(data, PICTURE_PX) if data else None
    pic = (
        img(base64.b64encode(thumb).decode(), "image/jpeg", "frame", label)
        if thumb
        else '<div class="nopic">does not decode</div>'
    )
    cap = f"<figcaption><span class='d'>{esc(caption)}</span></figcaption>" if caption else ""
    return f"<figure>{pic}{cap}</figure>"


def _pictures(rec: dict, sample: dict) -> tuple[str, str]:
    """The sample's pictures (an image, or a strip of its frames) and what it is."""
    frames = sorted(k for k in sample if FRAME_MEMBER.match(k))
    if frames:
        stamps = rec.get("timestamps") or []
        n = min(STRIP_FRAMES, len(frames))
        pick = sorted({round(i * (len(frames) - 1) / max(1, n - 1)) for i in range(n)})
        figs = [
            _picture(
                sample[frames[i]],
                frames[i],
                f"{stamps[i]:.1f} s"
                if i < len(stamps) and isinstance(stamps[i], int | float)
                else "",
            )
            for i in pick
        ]
        return "".join(figs), f"video, {len(frames)} frames"
    for ext in IMAGE_EXTS:
        if ext in sample:
            size = f", {rec['width']}×{rec['height']}" if "width" in rec and "height" in rec else ""
            return _picture(sample[ext], ext), f"image{size}"
    return "", "text"


def sample_html(sample: dict, group: str, source: str) -> str:
    """One sample as the trainer gets it: its pictures and its conversation."""
    try:
        rec = json.loads(sample.get("json", b"{}"))
    except (ValueError, UnicodeDecodeError):
        rec = {}
    rec = rec if isinstance(rec, dict) else {}
    pics, what = _pictures(rec, sample)
    turns = "".join(f"<li>{esc(short(t, TURN_CHARS))}</li>" for t in conversation_lines(rec))
    return (
        f'<div class="sample"><div><b>{esc(source)}</b> <span class="muted">({esc(group)}) · '
        f"{esc(what)} · key {esc(sample.get('__key__'))}</span></div>"
        f'<div class="pics">{pics}</div>'
        + (f'<ol class="turns">{turns}</ol>' if turns else '<p class="muted">no conversation</p>')
        + "</div>"
    )


def samples_html(out: Path, sizes: dict[str, int] | None, notes: list[str]) -> str:
    """The first samples of each source, read back from the shards the ledger puts them in
    (only those shards, each streamed from its start until its picked samples are found)."""
    picked = picked_keys(out, sizes=sizes)
    if not picked:
        return '<p class="muted">The ledger names no sample.</p>'
    by_shard: dict[str, set[str]] = {}
    for key, pick in picked.items():
        by_shard.setdefault(pick.shard, set()).add(key)
    found: dict[str, str] = {}
    root = out.resolve()
    for shard, keys in by_shard.items():
        path = (out / shard).resolve()
        if not path.is_relative_to(root):  # the ledger is data: it names nothing outside OUT
            notes.append(f"The ledger names a shard outside the mixture: {shard}.")
            continue
        if not path.is_file():
            notes.append(f"Shard {shard}, named by the ledger, is missing.")
            continue
        try:
            with contextlib.closing(shard_samples(path, keys)) as stream:
                for sample in stream:
                    key = str(sample.get("__key__"))
                    found[key] = sample_html(sample, picked[key].group, picked[key].source)
                    if keys <= found.keys():
                        break
        except Exception as exc:  # a broken shard is a finding, not a lost page
            notes.append(f"Shard {shard} could not be read: {type(exc).__name__}: {exc}")
    if len(found) < len(picked):
        notes.append(f"{len(picked) - len(found)} sample(s) the ledger names are in no shard.")
    by_source: dict[str, list[str]] = {}
    for key, pick in picked.items():
        if key in found:
            by_source.setdefault(pick.source, []).append(found[key])
    return "".join(f"<h3>{esc(s)}</h3>{''.join(cards)}" for s, cards in by_source.items())


def render(out: Path) -> str:
    notes: list[str] = []
    dataset = read_json(out / "dataset.json", notes) or {}
    comp = read_json(out / "composition.json", notes) or {}
    stage = comp.get("stage") or dataset.get("name") or out.name
    notes += [f"recipe: {n}" for n in comp.get("notes", []) if isinstance(n, str)]
    shards = dataset.get("shards") or []
    header = (
        f"<h1>{esc(stage)} — mixture</h1>"
        f'<div class="sub">{esc(out)} · {num(dataset.get("samples"))} samples in '
        f"{num(len(shards))} shards · the recipe in <code>recipe.yaml</code></div>"
    )
    sections = []
    if isinstance(comp.get("composition"), list):
        sections.append(("composition", "Composition", composition_html(comp["composition"])))
    if isinstance(comp.get("tokens"), dict):
        sections.append(("tokens", "Tokens per epoch (estimate)", tokens_html(comp["tokens"])))
    rows = comp.get("composition") if isinstance(comp.get("composition"), list) else []
    sizes = {
        r["source"]: r.get("epoch_samples") or 0
        for r in rows
        if isinstance(r, dict) and r.get("level") == "source" and r.get("source")
    }
    sections.append(("samples", "Samples by source", samples_html(out, sizes or None, notes)))
    return render_page(
        f"{stage} — mixture report",
        header,
        notes,
        sections,
        extra_css=CSS,
        generator="mixtures.page",
    )


def write_mixture_report(out_dir: str | Path) -> Path:
    """(Re)write ``OUT/report.html`` from the mixture's files."""
    out = Path(out_dir)
    target = out / "report.html"
    write_bytes(target, render(out).encode())
    log.debug("mixture report: %s", target)
    return target
