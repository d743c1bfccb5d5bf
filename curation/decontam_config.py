"""Config of decontamination (``decontam:`` in a curate YAML): curated images that are copies of
evaluation images (exact, perceptual or semantic) are dropped, naming the evaluation image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manifests.configs import require


@dataclass
class DecontamConfig:
    """Evaluation images a model trained on this set will be tested on, and how near counts."""

    # folders of images, or shard sets (a folder with shards/*.tar, or a folder of tars)
    eval_sets: list[str] = field(default_factory=list)
    exact: bool = True  # the same decoded pixels
    phash: bool = True  # pHash within phash_max_distance bits: re-encoded, resized, cropped
    phash_max_distance: int = 4
    semantic: bool = False  # CLIP cosine above semantic_threshold (needs clip.enabled)
    semantic_threshold: float = 0.95

    def __post_init__(self) -> None:
        require(
            0 <= self.phash_max_distance <= 16,
            "phash_max_distance",
            f"{self.phash_max_distance} is not in 0..16",
        )
        require(
            0 < self.semantic_threshold <= 1,
            "semantic_threshold",
            f"{self.semantic_threshold} is not in (0, 1]",
        )
        require(
            not self.eval_sets or self.exact or self.phash or self.semantic,
            "eval_sets",
            "are given but exact, phash and semantic are all off",
            "turn one of them on",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.eval_sets)

    @property
    def hashes(self) -> bool:
        """Whether the score pass computes the image hashes for this step."""
        return self.enabled and (self.exact or self.phash)

    def check_paths(self) -> None:
        """Every evaluation set is there (before any work starts)."""
        for i, path in enumerate(self.eval_sets):
            require(
                Path(path).is_dir(),
                f"decontam.eval_sets[{i}]",
                f"{path} is not a folder",
                "a folder of images, or a shard set's folder",
            )
