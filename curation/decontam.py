"""Decontamination: drop curated images that are copies of evaluation images.

A global step after the first pass (and after deduplication). The evaluation sets (folders of
images, or shard sets) are read once, a partition at a time, into an index that holds no image:
their content hashes (a set), their 64-bit pHashes (faiss ``IndexBinaryMultiHash``) and, for
``semantic``, their CLIP embeddings computed with the job's own CLIP (``IndexFlatIP``). Every
live curated row is then looked up: an exact, perceptual or semantic match drops it (stage
``decontam``) with the matched evaluation image's key in the ledger's ``eval_match``
(``{set folder name}:{its key}``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.decontam_config import DecontamConfig
from curation.dedup import PHASH_BITS, phash_codes
from curation.passes import Drops, iter_live
from curation.stages.dedup_hashes import image_hashes
from engine.partitions import Partition
from engine.workdir import WorkDir
from manifests.schema import EMBEDDING

log = logging.getLogger(__name__)
STAGE = "decontam"


@dataclass
class EvalIndex:
    """What is known of the evaluation images: no pixels, only hashes and embeddings."""

    keys: list[str] = field(default_factory=list)
    content: dict[str, int] = field(default_factory=dict)  # content hash -> key index
    phash: list[str | None] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # unit rows, one per key (semantic only)


def eval_rows(path: str) -> Iterator[pa.Table]:
    """The evaluation set's images as source rows, a partition at a time (a shard set through
    the tar source, a folder of images through the folder source)."""
    from curation.config import InputConfig
    from curation.sources import list_partitions, load_partition

    root = Path(path)
    if (root / "shards").is_dir():
        cfg = InputConfig(kind="webdataset", path=str(root / "shards"))
    elif any(root.glob("*.tar")):
        cfg = InputConfig(kind="webdataset", path=str(root))
    else:
        cfg = InputConfig(kind="folder", path=str(root))
    for part in list_partitions(cfg):
        yield load_partition(part, cfg)


def build_index(cfg: DecontamConfig, clip_kw: dict | None) -> EvalIndex:
    """Hash (and embed) every evaluation image once; unreadable ones are counted and skipped."""
    index, vectors, bad = EvalIndex(), [], 0
    embed = None
    if cfg.semantic:
        from curation.stages.clip_embed import ClipEmbed, embedding_matrix

        embed = ClipEmbed(**(clip_kw or {}))
    for path in cfg.eval_sets:
        name = Path(path).resolve().name
        for rows in eval_rows(path):
            if embed is not None:
                rows = embed(rows)
            ok = [s == "kept" for s in rows["status"].to_pylist()]
            for i, (key, data) in enumerate(
                zip(rows["source_key"].to_pylist(), rows["image"].to_pylist(), strict=True)
            ):
                if not ok[i] or not data:
                    bad += 1
                    continue
                try:
                    content, phash = image_hashes(data)
                except (OSError, ValueError, SyntaxError):
                    bad += 1
                    continue
                index.content.setdefault(content, len(index.keys))
                index.phash.append(phash)
                index.keys.append(f"{name}:{key}")
                if embed is not None:
                    vectors.append(embedding_matrix(rows, np.array([i]))[0])
    if vectors:
        x = np.asarray(vectors, np.float32)
        index.embeddings = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if bad:
        log.warning("decontam: %d evaluation files could not be read and are not compared", bad)
    return index


def decontam_step(
    last: WorkDir,
    base: WorkDir,
    drops: Drops,
    parts: Sequence[Partition],
    cfg: DecontamConfig,
    clip_kw: dict | None = None,
) -> dict:
    """Match every live row against the evaluation index; one drop list (stage decontam)."""
    import faiss

    index = build_index(cfg, clip_kw)
    codes, valid = phash_codes(index.phash)
    binary = None
    if cfg.phash and valid.any():
        slices = cfg.phash_max_distance + 1
        binary = faiss.IndexBinaryMultiHash(PHASH_BITS, slices, PHASH_BITS // slices)
        binary.add(codes[valid])
    eval_of_code = np.flatnonzero(valid)
    flat = None
    if cfg.semantic and index.embeddings is not None:
        flat = faiss.IndexFlatIP(index.embeddings.shape[1])
        flat.add(index.embeddings)
    columns = ["content_hash", "phash"] if cfg.exact or cfg.phash else []
    if cfg.semantic:
        columns.append(EMBEDDING)
    ids, reasons, matches = [], [], []
    for rows in iter_live(last, base, drops, parts, columns):
        found = _match(rows, cfg, index, binary, eval_of_code, flat)
        for i, (reason, key) in found.items():
            ids.append(rows["id"][i].as_py())
            reasons.append(reason)
            matches.append(key)
    drops.write(STAGE, ids, STAGE, reasons, notes={"eval_match": matches})
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    log.info(
        "decontam: %d of the curated images match %d evaluation images", len(ids), len(index.keys)
    )
    return {"eval_images": len(index.keys), "dropped": counts}


def _match(rows, cfg, index, binary, eval_of_code, flat) -> dict[int, tuple[str, str]]:
    """Row -> (reason, evaluation key) for the rows of one batch that match; exact first."""
    found: dict[int, tuple[str, str]] = {}
    if cfg.exact:
        for i, h in enumerate(rows["content_hash"].to_pylist()):
            if h is not None and h in index.content:
                found[i] = ("contaminated:content_hash", index.keys[index.content[h]])
    if binary is not None:
        codes, valid = phash_codes(rows["phash"].combine_chunks())
        todo = np.flatnonzero(valid)
        if todo.size:
            lims, dist, hit = binary.range_search(codes[todo], cfg.phash_max_distance + 1)
            for q, i in enumerate(todo.tolist()):
                if i in found or lims[q] == lims[q + 1]:
                    continue
                best = lims[q] + int(np.argmin(dist[lims[q] : lims[q + 1]]))
                key = index.keys[eval_of_code[hit[best]]]
                found[i] = (f"contaminated:phash<={cfg.phash_max_distance}", key)
    if flat is not None:
        from curation.stages.clip_embed import embedding_matrix

        have = np.flatnonzero(~np.array(rows[EMBEDDING].is_null().to_pylist(), bool))
        if have.size:
            x = embedding_matrix(rows, have)  # a read-only view of the Arrow column
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            sim, hit = flat.search(x, 1)
            for q, i in enumerate(have.tolist()):
                if i not in found and sim[q, 0] > cfg.semantic_threshold:
                    reason = f"contaminated:cos>{cfg.semantic_threshold:g}"
                    found[i] = (reason, index.keys[hit[q, 0]])
    return found
