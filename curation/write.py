"""The curate job's sink: a partition's kept images into its own tars, in the worker.

Per partition: ``shards/{subset}-{partition:06d}-{k:03d}.tar`` (original bytes + the training
record), ``ledger/part-{partition:06d}.parquet`` (every input, with shard and key where kept)
and ``embeddings/part-{partition:06d}.npy`` (the CLIP vectors the ledger's ``embedding_row``
points into). What goes back to the driver is the partition's counts and shard list.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.partitions import Partition
from engine.workdir import WorkDir
from manifests import ledger
from manifests.atomic import write_bytes
from manifests.schema import EMBEDDING, HEAVY_COLUMNS, KEPT, STATUSES
from manifests.shards import ShardSetWriter

# in the ledger but not the training record
NOT_IN_RECORD = {
    "image",
    "thumb",
    "status",
    "stage",
    "reason",
    "partition",
    "row",
    "ext",
    *HEAVY_COLUMNS,
}


def training_record(row: dict, key: str, ext: str) -> dict:
    """The sample's ``json`` member: LLaVA/VideoLLaMA3 style (DESIGN §5) plus its scores.

    Curated images have no caption of ours yet; the alt-text, where present, is the answer
    (recaptioning replaces it).
    """
    rec = {k: v for k, v in row.items() if k not in NOT_IN_RECORD and v is not None}
    rec["key"] = key
    rec["image"] = [f"{key}.{ext}"]
    if row.get("meta"):
        rec["meta"] = json.loads(row["meta"])
    if row.get("text"):
        rec["conversations"] = [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": row["text"]},
        ]
    return rec


def embeddings_path(out: Path, partition: int) -> Path:
    return out / "embeddings" / f"part-{partition:06d}.npy"


class CuratedShards:
    """Sink of the curate job's writing pass (``engine.runner.Sink``).

    ``clusters``: the work dir of the cluster-assignment pass, whose pieces hold each row's
    cluster and distance (None when the job does not cluster)."""

    def __init__(
        self,
        out: Path,
        subset: str,
        max_count: int,
        max_bytes: int,
        embeddings_dtype: str,
        clusters: WorkDir | None = None,
    ):
        self.out, self.subset = Path(out), subset
        self.max_count, self.max_bytes = max_count, max_bytes
        self.dtype, self.clusters = embeddings_dtype, clusters

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        p = part.index
        embeddings_path(self.out, p).unlink(missing_ok=True)  # an interrupted attempt's
        writer = ShardSetWriter(self.out, self.subset, self.max_count, self.max_bytes, p)
        lookup = self._clusters(p)
        counts = dict.fromkeys(STATUSES, 0)
        parts: list[pa.Table] = []
        vectors: list[list[float]] = []
        for rows in chunks:
            if lookup is not None:
                rows = _with_clusters(rows, lookup)
            rows = _embedding_rows(rows, vectors)
            shards, keys = [None] * rows.num_rows, [None] * rows.num_rows
            status = rows["status"].to_pylist()
            for s in status:
                counts[s] += 1
            kept = [i for i, s in enumerate(status) if s == KEPT]
            if kept:
                for i, row in zip(kept, rows.take(kept).to_pylist(), strict=True):
                    key, ext = row["id"], row["ext"] or "jpg"
                    rec = training_record(row, key, ext)
                    sample = {"__key__": key, ext: row["image"], "json": json.dumps(rec).encode()}
                    shards[i], keys[i] = writer.write(sample), key
            rows = rows.append_column("shard", pa.array(shards, pa.string()))
            rows = rows.append_column("key", pa.array(keys, pa.string()))
            parts.append(ledger.to_ledger(rows))
        shard_list = writer.close()
        if vectors:
            buf = io.BytesIO()
            np.save(buf, np.asarray(vectors, dtype=self.dtype), allow_pickle=False)
            write_bytes(embeddings_path(self.out, p), buf.getvalue())
        if parts:
            ledger.write_part(self.out, p, pa.concat_tables(parts, promote_options="default"))
        else:
            ledger.part_path(self.out, p).unlink(missing_ok=True)
        return {"counts": counts, "shards": shard_list}

    def _clusters(self, partition: int) -> dict[str, tuple[int, float]] | None:
        if self.clusters is None:
            return None
        t = self.clusters.read_partition(partition, ["id", "cluster", "cluster_dist"])
        if t is None:
            return {}
        return {
            i: (c, d)
            for i, c, d in zip(
                t["id"].to_pylist(),
                t["cluster"].to_pylist(),
                t["cluster_dist"].to_pylist(),
                strict=True,
            )
            if c is not None
        }


def _with_clusters(rows: pa.Table, lookup: dict[str, tuple[int, float]]) -> pa.Table:
    found = [lookup.get(i) for i in rows["id"].to_pylist()]
    rows = rows.append_column("cluster", pa.array([f[0] if f else None for f in found], pa.int32()))
    return rows.append_column(
        "cluster_dist", pa.array([f[1] if f else None for f in found], pa.float32())
    )


def _embedding_rows(rows: pa.Table, vectors: list[list[float]]) -> pa.Table:
    """Collect the chunk's embeddings into ``vectors``; the ledger keeps each row's index."""
    if EMBEDDING not in rows.column_names:
        return rows
    index: list[int | None] = []
    for v in rows[EMBEDDING].to_pylist():
        if v is None:
            index.append(None)
        else:
            index.append(len(vectors))
            vectors.append(v)
    return rows.append_column("embedding_row", pa.array(index, pa.int32()))
