"""Instructions for the two caption sets, VL3-Syn7M-short and VL3-Syn7M-detailed.

Two different texts per sample: the ``model_prompt`` asks the captioning model (InternVL2) for
the kind of caption we want, worded for that model; the human turn stored in the training record
is drawn from a varied set, so the trained model does not learn one fixed question. The draw is a
hash of (seed, sample key), not a random stream: every worker, every rerun and every resumed
partition picks the same instruction for the same sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from manifests.configs import require

KINDS = ("short", "detailed")

SHORT_INSTRUCTIONS = (
    "Describe the image briefly.",
    "Write a one-sentence caption for this image.",
    "Give a short description of the image.",
    "Summarize the content of the image in one sentence.",
    "What does this image show? Answer briefly.",
    "Provide a brief caption for the picture.",
    "Describe this photo in a few words.",
    "Write a concise caption for the image.",
)
DETAILED_INSTRUCTIONS = (
    "Describe this image in detail.",
    "Give a detailed description of the image.",
    "What is happening in this image? Describe it thoroughly.",
    "Provide a comprehensive description of everything you see in the picture.",
    "Describe the scene, the objects in it and their attributes in detail.",
    "Write a detailed caption for this image.",
    "Explain the contents of this image, including any visible text, in detail.",
    "Describe this photo as completely as you can.",
)
SHORT_MODEL_PROMPT = "Describe this image in one sentence."
DETAILED_MODEL_PROMPT = (
    "Describe this image in detail, covering objects, their attributes, the scene, any text, "
    "and the style."
)


@dataclass
class PromptConfig:
    """Human-turn instruction sets and the prompts sent to the captioning model."""

    short: list[str] = field(default_factory=lambda: list(SHORT_INSTRUCTIONS))
    detailed: list[str] = field(default_factory=lambda: list(DETAILED_INSTRUCTIONS))
    seed: int = 0
    short_model_prompt: str = SHORT_MODEL_PROMPT
    detailed_model_prompt: str = DETAILED_MODEL_PROMPT

    def __post_init__(self) -> None:
        for kind in KINDS:
            texts = getattr(self, kind)
            require(len(texts) > 0, f"prompts.{kind}", "needs at least one instruction")
            for i, text in enumerate(texts):
                _check_text(text, f"prompts.{kind}[{i}]")
            _check_text(getattr(self, f"{kind}_model_prompt"), f"prompts.{kind}_model_prompt")

    def instruction(self, kind: str, key: str) -> str:
        """The human turn stored for sample ``key`` in the ``kind`` caption set."""
        return pick_instruction(self._instructions(kind), key, self.seed)

    def model_prompt(self, kind: str) -> str:
        """What the captioning model is asked for the ``kind`` caption set."""
        self._instructions(kind)  # validates kind
        return getattr(self, f"{kind}_model_prompt")

    def _instructions(self, kind: str) -> list[str]:
        if kind not in KINDS:
            raise ValueError(f"caption kind {kind!r} is not one of {KINDS}")
        return getattr(self, kind)


def pick_instruction(instructions: Sequence[str], key: str, seed: int) -> str:
    """A deterministic, evenly spread choice per sample: blake2b of (seed, key), never Python's
    per-process salted ``hash``."""
    if not instructions:
        raise ValueError("no instructions to pick from")
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return instructions[int.from_bytes(digest, "big") % len(instructions)]


def _check_text(text: object, name: str) -> None:
    require(isinstance(text, str) and bool(text.strip()), name, "must be a non-empty string")
    require(
        "<image>" not in text,  # type: ignore[operator]  # a str by now
        name,
        "must not contain <image>",
        "the training record adds the image token itself",
    )
