"""The tokenizer, built offline: a byte-level BPE trained on our shard sets' text, or a local one.

:func:`train_tokenizer` trains a BPE with ``tokenizers`` (Qwen2's pre-tokenizer split, byte-level,
so any text encodes) and wraps it as a transformers ``Qwen2Tokenizer`` carrying what
VideoLLaMA3 needs: ChatML markers (``<|im_start|>``, ``<|im_end|>`` as eos), the processor's
placeholders (``<|image_pad|>``, ``<|video_pad|>``), the streaming markers
(``<|stream_start|>``, ``<|stream_end|>``), the records' ``<image>``/``<video>`` tags (kept whole
should one appear outside the template) and our chat template (:mod:`model.chat`).
:func:`corpus_from_recipes` reads the text of every record a stage recipe selects.
:func:`load_tokenizer` reads a local tokenizer (e.g. Qwen2.5's) and adds what it lacks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from manifests.chat import IMAGE_PAD, STREAM_END, STREAM_START, VIDEO_PAD
from model.chat import TRAIN_CHAT_TEMPLATE
from model.heldout import is_heldout

# Qwen2's pre-tokenizer split, so the result is an ordinary ``Qwen2Tokenizer``
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
EOS, PAD, IM_START = "<|im_end|>", "<|endoftext|>", "<|im_start|>"
NAMED = {"image_token": IMAGE_PAD, "video_token": VIDEO_PAD}  # what VideoLlama3Processor reads
ADDED = (IM_START, STREAM_START, STREAM_END, "<image>", "<video>")
# what the chat template writes around the records' text, so BPE learns it whole
TEMPLATE_TEXT = [
    "user\n",
    "assistant\n",
    "system\n",
    "stream\n",
    *(f"Time {t:.1f}s:" for t in range(0, 200)),
]


def record_text(rec: dict) -> Iterator[str]:
    """The words of a training record (DESIGN §5): its conversation turns, tags removed."""
    for turn in rec.get("conversations") or []:
        value = turn.get("value")
        if isinstance(value, str):
            yield value.replace("<image>", "").replace("<video>", "").strip()
    for turn in rec.get("conversation") or []:  # streaming
        content = turn.get("content")
        if isinstance(content, str):
            yield content


def corpus_from_recipes(
    recipes: Iterable[str | Path], max_records: int = 50_000, holdout: float = 0.0
) -> list[str]:
    """The text of up to ``max_records`` records per recipe (one pass, in plan order), less the
    ``holdout`` fraction the trainer evaluates on: a tokenizer fitted to the held-out answers
    would flatter their loss."""
    from mixtures.recipe import load_recipe
    from mixtures.sampler import build_plan, iter_reader

    texts: list[str] = []
    for path in dict.fromkeys(str(r) for r in recipes):  # each recipe once
        plan = build_plan(load_recipe(path))
        for i, sample in enumerate(iter_reader(plan, epoch=0, rank=0, world_size=1)):
            if i >= max_records:
                break
            if holdout and is_heldout(sample["__key__"], holdout):
                continue
            raw = sample.get("json")
            if raw is None:
                continue
            texts.extend(record_text(json.loads(raw)))
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 1):
    """A ``Qwen2Tokenizer``: byte-level BPE with Qwen2's split trained on ``texts`` (and the
    template's fixed strings), up to ``vocab_size`` entries before the special tokens.
    Deterministic for the same texts."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*TEMPLATE_TEXT, *texts], trainer)
    learned = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Qwen2Tokenizer(
        vocab=learned["vocab"],
        merges=merges,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=dict(NAMED),
        model_max_length=32768,
    )
    return add_special_tokens(tok)


def add_special_tokens(tok):
    """Add what VideoLLaMA3 training needs and ``tok`` lacks (placeholders, ChatML and stream
    markers, a pad token) and set our chat template. Returns ``tok``."""
    from transformers import AddedToken

    vocab = tok.get_vocab()
    missing = [t for t in (*NAMED.values(), EOS, *ADDED) if t not in vocab]
    if missing:
        tok.add_tokens([AddedToken(t, special=True) for t in missing])
    if tok.pad_token is None:
        tok.pad_token = PAD if PAD in tok.get_vocab() else EOS
    tok.chat_template = TRAIN_CHAT_TEMPLATE
    return tok


def load_tokenizer(path: str | Path):
    """A local tokenizer directory (``AutoTokenizer``, no hub), completed by
    :func:`add_special_tokens`."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"no tokenizer directory at {p}")
    return add_special_tokens(AutoTokenizer.from_pretrained(p, local_files_only=True))


__all__ = [
    "ADDED",
    "NAMED",
    "QWEN2_SPLIT",
    "add_special_tokens",
    "corpus_from_recipes",
    "load_tokenizer",
    "record_text",
    "train_tokenizer",
]
