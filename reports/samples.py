"""Samples for the contact sheets: kept ones read back from the shards, dropped ones from the
thumbnails the ledger stored.

Reading the shards (not the ledger) checks that what was written can be read back, grouped into
samples by webdataset's own rule (``manifests.shards.tar_samples``).
Shards are streamed from their start and left as soon as enough is found, so a thousand 1 GB
shards cost a few small reads; a shard that does not read is a note on the page, never a lost
report.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from manifests.readers import IMAGE_EXTS
from manifests.schema import KEPT
from reports.ledger_summary import NO_REASON, scan_batches
from reports.thumbs import make_thumb

#: Longest side of a contact-sheet thumbnail, in pixels.
THUMB_PX = 128


def listed_shards(out: Path, dataset_json: dict[str, Any] | None) -> list[Path]:
    """The shards dataset.json lists, or (without it) whatever tars lie in shards/."""
    listed = (dataset_json or {}).get("shards") or []
    paths = [out / s["path"] for s in listed if isinstance(s, dict) and s.get("path")]
    return paths or sorted((out / "shards").glob("*.tar"))


def kept_samples(
    out: Path, dataset_json: dict[str, Any] | None, max_thumbs: int, notes: list[str]
) -> list[dict[str, Any]]:
    """Up to ``max_thumbs`` samples read back from the shards, spread over the shards.

    Each shard is read only up to its quota, from its start.
    """
    shards = listed_shards(out, dataset_json)
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
        label = shard_label(out, path)
        try:
            with contextlib.closing(shard_samples(path)) as stream:
                for sample in stream:
                    if taken >= quota or len(samples) >= max_thumbs:
                        break
                    samples.append(kept_sample(label, sample))
                    taken += 1
        except Exception as exc:  # a broken shard is a finding, not a reason to lose the report
            notes.append(f"Shard {path.name} could not be read: {type(exc).__name__}: {exc}")
    if missing:
        notes.append(
            f"{len(missing)} shard(s) listed in dataset.json are missing, e.g. {missing[0]}."
        )
    return samples


def shard_label(out: Path, path: Path) -> str:
    """The shard's path as the ledger names it (relative to the output folder) when it can."""
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def shard_samples(path: Path, keys: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard, streamed from its start; with ``keys``, only those samples.

    Members of other samples are skipped without being held, so picking a few keys out of a
    large shard costs one sequential read and no memory. Close the generator (or exhaust it)
    to close the file.
    """
    from manifests.shards import tar_samples

    yield from tar_samples(str(path), lambda _ordinal, key: keys is None or key in keys)


def conversation_lines(rec: dict[str, Any]) -> list[str]:
    """A training record's turns as "who: what" lines; a streaming record's dialogue (DESIGN
    §5: ``conversation``, each turn with its ``time``) with its times."""
    if isinstance(rec.get("conversations"), list):
        return [f"{m.get('from')}: {m.get('value')}" for m in rec["conversations"]]
    if isinstance(rec.get("conversation"), list):
        return [
            f"[{m.get('time', 0):.1f} s] {m.get('role')}: {m.get('content')}"
            for m in rec["conversation"]
            if isinstance(m, dict)
        ]
    return []


def kept_sample(shard: str, sample: dict[str, Any]) -> dict[str, Any]:
    """Key, caption (from the sample's json) and a thumbnail, or the error that stopped it."""
    key = str(sample.get("__key__", "?"))
    text = ""
    raw_json = sample.get("json")
    if raw_json:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            meta = json.loads(raw_json)
            if isinstance(meta, dict):
                text = str(meta.get("text") or meta.get("caption") or "")
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    item: dict[str, Any] = {"key": key, "text": text, "shard": shard}
    if ext is None:
        item["error"] = "no image member"
        return item
    # shown in the sheet: a kept image that does not decode is a bug
    try:
        jpeg = make_thumb(sample[ext], THUMB_PX)
    except Exception as exc:  # anything else PIL raises: a finding, not a reason to lose the report
        item["error"] = f"{type(exc).__name__}: {exc}"
        return item
    if jpeg is None:
        item["error"] = f"{ext} member does not decode"
    else:
        item["jpeg"] = jpeg
    return item


def dropped_thumbs(
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
    for batch in scan_batches(dataset, cols, filter=ds.field("thumb").is_valid()):
        for row in batch.to_pylist():
            if row.get("status") == KEPT:
                continue
            group = found.setdefault(row.get("reason") or NO_REASON, [])
            if len(group) < max_thumbs:
                group.append(row)
        if reasons and all(len(found.get(r, [])) >= max_thumbs for r in reasons):
            break
    return found
