"""Target vs realised composition of a stage, and a token estimate per stage.

* :func:`composition`: per source and per group, the paper's ``target``, the recipe's
  ``amount``, the realised samples per epoch, the realised share of the epoch, and the target
  share (see the function) where targets exist. Nothing is read but the plan.
* :func:`token_estimate`: tokens per epoch, measured on the first samples of each source (see
  :data:`HEURISTIC`); what cannot be measured from the data is reported as unknown (``None``),
  never guessed.

``vl3data mix RECIPE --check`` prints both; ``--output OUT`` also writes them to
``OUT/composition.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import re

from mixtures.sampler import Plan, SourcePlan, source_stream

SAMPLE_RECORDS = 200
BYTES_PER_TOKEN = 4
PATCH = 14  # VideoLLaMA3's vision encoder patch size, in pixels
VIDEO_MERGE = 2  # video frames: 2x2 neighbouring patches merged into one token
HEURISTIC = (
    f"measured on the first {SAMPLE_RECORDS} selected records of each source (shard order). "
    f"Text tokens ~= UTF-8 bytes of the record's 'conversations' list, re-serialised with "
    f"json.dumps(ensure_ascii=False), / {BYTES_PER_TOKEN}; a record without 'conversations' "
    f"counts 0, and a source where no sampled record has one is unknown. Image tokens = "
    f"ceil(width/{PATCH}) * ceil(height/{PATCH}) from the record's 'width'/'height' (VideoLLaMA3's "
    f"{PATCH}-px patches, one token each, before the processor's min/max-pixel resizing); video "
    f"tokens = frames * ceil(width/{PATCH}/{VIDEO_MERGE}) * ceil(height/{PATCH}/{VIDEO_MERGE}) "
    f"with frames counted from the sample's frame members (fNNNN.*), before any frame pruning. "
    f"A record without width/height is not counted; a source where none has them is unknown. "
    f"Per-epoch tokens = mean per measured record * the source's samples per epoch."
)
#: a video frame member of a sample (``f0000.jpg``), as video_prep writes them
FRAME_MEMBER = re.compile(r"^f\d+\.[a-z0-9]+$")


def _share(n: int | None, total: int) -> float | None:
    return None if n is None or total <= 0 else n / total


def composition(plan: Plan) -> list[dict]:
    """One row per source, then a row for its group (``source`` is ``None``), in plan order.

    ``epoch_samples`` is what one epoch realises, ``share`` its part of the epoch. ``amount`` is
    what the recipe's ``amount`` asks for (a group's is the sum when all its sources have one).
    ``target_share`` is the row's ``target`` over the sum of targets at its level (sources, or
    groups); it is given only when every row at that level has a target, since a share of a
    partial table would be misleading. ``vs_target`` is ``epoch_samples / target``."""
    total = plan.epoch_samples
    groups = list(plan.group_targets)
    src_targets = [sp.target for sp in plan.sources]
    src_target_sum = (
        sum(src_targets) if src_targets and all(t is not None for t in src_targets) else None
    )
    grp_targets = [plan.group_targets[g] for g in groups]
    grp_target_sum = (
        sum(grp_targets) if grp_targets and all(t is not None for t in grp_targets) else None
    )

    def row(level, group, source, target, amount, n, target_sum) -> dict:
        return {
            "level": level,
            "group": group,
            "source": source,
            "target": target,
            "amount": amount,
            "epoch_samples": n,
            "share": _share(n, total),
            "target_share": None
            if target_sum is None or target is None
            else _share(target, target_sum),
            "vs_target": None if not target else n / target,
        }

    out = []
    for g in groups:
        mine: list[SourcePlan] = [sp for sp in plan.sources if sp.group == g]
        for sp in mine:
            out.append(
                row("source", g, sp.name, sp.target, sp.amount, sp.epoch_samples, src_target_sum)
            )
        amounts = [sp.amount for sp in mine if sp.amount is not None]
        amount = sum(amounts) if mine and len(amounts) == len(mine) else None
        n = sum(sp.epoch_samples for sp in mine)
        out.append(row("group", g, None, plan.group_targets[g], amount, n, grp_target_sum))
    return out


def format_composition(rows: list[dict]) -> str:
    """:func:`composition` as a text table."""

    def num(n: int | None) -> str:
        return "-" if n is None else f"{n:,}"

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    head = ("group", "source", "target", "amount", "realised", "share", "target share", "vs tgt")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["group"],
                r["source"] or "(group)",
                num(r["target"]),
                num(r["amount"]),
                num(r["epoch_samples"]),
                pct(r["share"]),
                pct(r["target_share"]),
                "-" if r["vs_target"] is None else f"{r['vs_target']:.2f}x",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _vision_tokens(rec: dict, sample: dict, modality: str) -> int | None:
    if modality == "text":
        return 0
    w, h = rec.get("width"), rec.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return None
    if modality == "image":
        return math.ceil(w / PATCH) * math.ceil(h / PATCH)
    frames = sum(1 for k in sample if FRAME_MEMBER.match(k))
    if not frames:
        return None
    per_frame = math.ceil(w / PATCH / VIDEO_MERGE) * math.ceil(h / PATCH / VIDEO_MERGE)
    return frames * per_frame


def _measure(sp: SourcePlan, limit: int) -> dict:
    runs = [(i, sel) for i, sel in enumerate(sp.selection) if len(sel)]
    sampled = with_text = with_vision = 0
    text_bytes = vision = 0
    for sample in itertools.islice(source_stream(sp, runs), limit):
        sampled += 1
        try:
            rec = json.loads(sample.get("json", b"null"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        rec = rec if isinstance(rec, dict) else {}
        conv = rec.get("conversations")
        if not isinstance(conv, list):  # a streaming record's dialogue (DESIGN §5)
            conv = rec.get("conversation")
        if isinstance(conv, list):
            with_text += 1
            text_bytes += len(json.dumps(conv, ensure_ascii=False).encode("utf-8"))
        v = _vision_tokens(rec, sample, sp.modality)
        if v is not None:
            with_vision += 1
            vision += v
    text = text_bytes / BYTES_PER_TOKEN / sampled if with_text else None
    vis = vision / with_vision if with_vision else None
    n = sp.epoch_samples
    return {
        "group": sp.group,
        "source": sp.name,
        "modality": sp.modality,
        "epoch_samples": n,
        "sampled": sampled,
        "with_conversations": with_text,
        "with_vision_size": with_vision,
        "text_tokens_per_sample": text,
        "vision_tokens_per_sample": vis,
        "text_tokens": None if text is None else round(text * n),
        "vision_tokens": None if vis is None else round(vis * n),
    }


def token_estimate(plan: Plan, sample: int = SAMPLE_RECORDS) -> dict:
    """Estimated tokens per epoch of the stage, per source and in all; see :data:`HEURISTIC`
    (also in the result as ``heuristic``). A stage total is ``None`` when no source could be
    measured; ``unknown_text`` / ``unknown_vision`` list the sources left out of it."""
    rows = [_measure(sp, sample) for sp in plan.sources]
    out: dict = {"heuristic": HEURISTIC, "stage": plan.stage, "sources": rows}
    for kind in ("text", "vision"):
        known = [r[f"{kind}_tokens"] for r in rows if r[f"{kind}_tokens"] is not None]
        out[f"{kind}_tokens"] = sum(known) if known else None
        out[f"unknown_{kind}"] = [
            r["source"] for r in rows if r[f"{kind}_tokens"] is None and r["epoch_samples"]
        ]
    return out


def format_tokens(est: dict) -> str:
    """:func:`token_estimate` as a few lines of text."""

    def num(n: float | None) -> str:
        return "unknown" if n is None else f"{n:,.0f}"

    lines = [f"token estimate per epoch ({est['heuristic']})"]
    for r in est["sources"]:
        lines.append(
            f"  {r['source']}: text {num(r['text_tokens'])}, vision {num(r['vision_tokens'])} "
            f"({r['sampled']} records measured)"
        )
    lines.append(
        f"  stage {est['stage']}: text {num(est['text_tokens'])}, vision "
        f"{num(est['vision_tokens'])}"
    )
    for kind in ("text", "vision"):
        if est[f"unknown_{kind}"]:
            lines.append(f"  {kind} unknown for: {', '.join(est[f'unknown_{kind}'])}")
    return "\n".join(lines)


__all__ = ["HEURISTIC", "composition", "format_composition", "format_tokens", "token_estimate"]


def mixture_report(recipe, plan: Plan, notes: list[str] | None = None) -> dict:
    """What ``composition.json`` holds: the stage, its composition per group and source, the
    token estimate and the recipe check's notes."""
    return {
        "stage": recipe.stage,
        "composition": composition(plan),
        "tokens": token_estimate(plan),
        "notes": list(notes or []),
    }
