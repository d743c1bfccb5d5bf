"""Config of deduplication after decoding (``dedup:`` in a curate YAML): exact on the decoded
pixels, perceptual on a pHash with a Hamming threshold, semantic (SemDeDup) on the CLIP
embeddings inside the k-means clusters. Each is off by default; each is pool-wide."""

from __future__ import annotations

from dataclasses import dataclass

from manifests.configs import require


@dataclass
class DedupConfig:
    """Which duplicates go, and how near counts as a duplicate. The first copy in pool order
    (partition, row) is kept; the ledger names it in ``duplicate_of``."""

    exact: bool = False  # the same decoded pixels (ledger: dedup_exact, duplicate:content_hash)
    phash: bool = False  # perceptual: re-encoded, resized, slightly cropped (dedup_phash)
    phash_max_distance: int = 4  # Hamming distance between 64-bit pHashes counted as the same
    semantic: bool = False  # SemDeDup inside the balanced selection's clusters (dedup_semantic)
    semantic_threshold: float = 0.95  # cosine similarity above which two images are one

    def __post_init__(self) -> None:
        require(
            0 <= self.phash_max_distance <= 16,
            "phash_max_distance",
            f"{self.phash_max_distance} is not in 0..16",
            "4 to 8 for resized or re-encoded copies",
        )
        require(
            0 < self.semantic_threshold <= 1,
            "semantic_threshold",
            f"{self.semantic_threshold} is not in (0, 1]",
            "e.g. 0.95",
        )

    @property
    def hashes(self) -> bool:
        """Whether the score pass computes the image hashes."""
        return self.exact or self.phash
