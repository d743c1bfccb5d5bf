"""The import's sink: a partition's records into its own tars of each modality's shard set.

Samples are laid out exactly as our own jobs write them (DESIGN §4-5), so mixtures and the
trainer read an imported set as they read a curated or prepared one:

- image: ``{key}.jpg`` (or the original ``png``/``webp``) and ``{key}.json`` with
  ``"image": ["{key}.jpg"]``, as ``curation.write`` writes; a record of several images has
  ``{key}.i00.jpg``, ``{key}.i01.png`` ... named in that order in ``image``;
- video: ``{key}.f0000.jpg`` ... and ``"video": ["{key}"]``, ``"frames"``, ``"timestamps"``, as
  ``video_prep.samples`` writes (a streaming record keeps ``stream``, ``start_time``,
  ``end_time`` and ``conversation``, times in seconds of the video);
- text: ``{key}.json`` alone, ``{"conversations": [...]}``.

Every set's ledger part has a row for every record of the partition: a record of another
modality is ``dropped`` there (stage ``modality``, reason ``in_{modality}_set``), so each set
accounts for every input.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from engine.partitions import Partition
from ingest.config import ImportConfig
from manifests import ledger
from manifests.schema import DROPPED, KEPT, STATUSES
from manifests.shards import ShardSetWriter

LEDGER_DROP = ("_raw", "_cells", "_fields", "_images", "_exts", "_video", "_frames", "_timestamps")


def training_record(row: dict, key: str) -> tuple[dict, dict[str, bytes]]:
    """The sample's ``json`` record and its media members (name -> bytes)."""
    fields = json.loads(row["_fields"])
    meta = fields.pop("meta", None)
    rec: dict = {"key": key, "id": row["id"], "source": row["source"]}
    rec["source_key"] = row["source_key"]
    members: dict[str, bytes] = {}
    if row["modality"] == "image":
        images, exts = row["_images"], row["_exts"]
        names = [ext if len(images) == 1 else f"i{j:02d}.{ext}" for j, ext in enumerate(exts)]
        members = dict(zip(names, images, strict=True))
        rec["image"] = [f"{key}.{n}" for n in names]
        rec["width"], rec["height"] = row["width"], row["height"]
    elif row["modality"] == "video":
        names = [f"f{j:04d}.jpg" for j in range(len(row["_frames"]))]
        members = dict(zip(names, row["_frames"], strict=True))
        rec["video"] = [key]
        rec["frames"] = [f"{key}.{n}" for n in names]
        rec["timestamps"] = row["_timestamps"]
        rec["source_video"] = json.loads(row["media"])[0]
        rec["width"], rec["height"] = row["width"], row["height"]
    rec.update(fields)
    if meta:
        rec["meta"] = meta
    return rec, members


class ImportShards:
    """Sink of the import (``engine.runner.Sink``)."""

    def __init__(self, cfg: ImportConfig):
        self.out, self.modalities = Path(cfg.output), list(cfg.modalities)
        self.subset = cfg.name
        self.max_count, self.max_bytes = cfg.shards.max_count, cfg.shards.max_bytes

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        writers = {
            m: ShardSetWriter(self.out / m, self.subset, self.max_count, self.max_bytes, part.index)
            for m in self.modalities
        }
        meta = {m: _empty_meta() for m in self.modalities}
        ledgers: dict[str, list[pa.Table]] = {m: [] for m in self.modalities}
        for rows in chunks:
            written = self._write_chunk(rows, writers, meta)
            for m in self.modalities:
                ledgers[m].append(_set_rows(rows, m, written, meta[m]))
        out: dict = {"sets": {}}
        for m in self.modalities:
            if ledgers[m]:
                table = pa.concat_tables(ledgers[m], promote_options="default")
                ledger.write_part(self.out / m, part.index, table)
            else:
                ledger.part_path(self.out / m, part.index).unlink(missing_ok=True)
            out["sets"][m] = {**meta[m], "shards": writers[m].close()}
            for k in ("counts", "reasons", "fixes"):
                out["sets"][m][k] = dict(meta[m][k])
        return out

    @staticmethod
    def _write_chunk(rows: pa.Table, writers: dict, meta: dict) -> dict[int, tuple[str, str]]:
        """Write the chunk's kept records; row -> (shard, key)."""
        written: dict[int, tuple[str, str]] = {}
        status, kinds = rows["status"].to_pylist(), rows["modality"].to_pylist()
        kept = [i for i, (s, m) in enumerate(zip(status, kinds, strict=True)) if s == KEPT]
        if not kept:
            return written
        for i, row in zip(kept, rows.take(pa.array(kept, pa.int64())).to_pylist(), strict=True):
            m = row["modality"]
            key = row["id"]
            rec, members = training_record(row, key)
            sample = {"__key__": key, **members, "json": json.dumps(rec).encode()}
            written[i] = (writers[m].write(sample), key)
            meta[m]["samples"] += 1
            meta[m]["frames"] += len(row.get("_frames") or [])
            meta[m]["images"] += len(row.get("_images") or [])
        return written


def _empty_meta() -> dict:
    return {
        "counts": Counter(dict.fromkeys(STATUSES, 0)),
        "reasons": Counter(),
        "fixes": Counter(),
        "samples": 0,
        "frames": 0,
        "images": 0,
    }


def _set_rows(rows: pa.Table, m: str, written: dict[int, tuple[str, str]], meta: dict) -> pa.Table:
    """The chunk's ledger rows as the ``m`` set sees them; counted into ``meta``."""
    status, stage = rows["status"].to_pylist(), rows["stage"].to_pylist()
    reason, kinds = rows["reason"].to_pylist(), rows["modality"].to_pylist()
    fixes = rows["fixes"].to_pylist()
    shards: list[str | None] = [None] * rows.num_rows
    keys: list[str | None] = [None] * rows.num_rows
    for i in range(rows.num_rows):
        if status[i] == KEPT and kinds[i] != m:
            status[i], stage[i], reason[i] = DROPPED, "modality", f"in_{kinds[i]}_set"
        elif status[i] == KEPT:
            shards[i], keys[i] = written[i]
            for f in (fixes[i] or "").split(","):
                if f:
                    meta["fixes"][f] += 1
        meta["counts"][status[i]] += 1
        if status[i] != KEPT:
            meta["reasons"][reason[i]] += 1
    t = rows.drop_columns(
        [c for c in (*LEDGER_DROP, "status", "stage", "reason") if c in rows.column_names]
    )
    t = t.append_column("status", pa.array(status, pa.string()))
    t = t.append_column("stage", pa.array(stage, pa.string()))
    t = t.append_column("reason", pa.array(reason, pa.string()))
    t = t.append_column("shard", pa.array(shards, pa.string()))
    return ledger.to_ledger(t.append_column("key", pa.array(keys, pa.string())))
