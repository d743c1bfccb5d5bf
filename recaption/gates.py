"""Caption quality gates, run on every generated caption before it is written.

A VLM fails in a few recognisable ways: it errors, says nothing, runs into max_new_tokens, loops,
refuses, answers in another language (InternVL is bilingual and sometimes switches to Chinese) or
answers too tersely, or emits broken text (U+FFFD from a bad byte-level decode, control
characters). ``check_caption`` names the first failure, checked in this order (cheap and certain
first), so the ledger's ``reason`` says why a caption was dropped:

``engine_error`` -> ``empty`` -> ``garbled`` -> ``refusal`` -> ``repetition`` -> ``truncated``
-> ``wrong_language`` -> ``too_short``

Repetition precedes truncation because a loop usually runs into max_new_tokens, and "it looped"
is the more useful diagnosis. Everything is dependency-free: the language check counts scripts
rather than guessing a language, which is all an English-only dataset needs.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from manifests.configs import require
from recaption.engines.base import Result

REASONS = (
    "engine_error",
    "empty",
    "garbled",
    "refusal",
    "repetition",
    "truncated",
    "wrong_language",
    "too_short",
)
LANGUAGES = ("en",)
REFUSAL_PREFIXES = (
    "i'm sorry",
    "i am sorry",
    "sorry,",
    "i apologize",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i'm afraid",
    "as an ai",
    "unfortunately, i",
    "i don't see an image",
    "there is no image",
)
QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»", "„": "“"}
WORD = re.compile(r"\w+")
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass
class GateConfig:
    """Thresholds of the caption gates. The defaults suit short captions; detailed ones want a
    larger ``min_chars`` (e.g. 100)."""

    min_chars: int = 10  # shorter (after clean_caption) is too_short
    language: str | None = "en"  # None: no language check
    min_latin_share: float = 0.9  # en: Latin letters / all letters below this is wrong_language
    char_loop_repeats: int = 8  # a 1-10 character unit repeated this often in a row loops
    word_loop_repeats: int = 4  # a 1-8 word unit repeated this often in a row loops
    ngram: int = 3  # word n-gram size of the coverage rule
    ngram_min_count: int = 3  # an n-gram seen this often counts as repeated
    max_repeated_share: float = 0.5  # share of words inside repeated n-grams that is a loop
    ngram_min_words: int = 20  # shorter texts skip the n-gram coverage rule
    max_sentence_repeats: int = 2  # one sentence (2+ words) said more often than this loops
    refusal_prefixes: list[str] = field(default_factory=lambda: list(REFUSAL_PREFIXES))

    def __post_init__(self) -> None:
        require(self.min_chars >= 0, "gates.min_chars", "must be 0 or more")
        require(
            self.language is None or self.language in LANGUAGES,
            "gates.language",
            f"{self.language!r} is not one of {LANGUAGES}",
            "null skips the language check",
        )
        require(0 <= self.min_latin_share <= 1, "gates.min_latin_share", "must be in [0, 1]")
        require(self.char_loop_repeats >= 2, "gates.char_loop_repeats", "must be at least 2")
        require(self.word_loop_repeats >= 2, "gates.word_loop_repeats", "must be at least 2")
        require(self.ngram >= 1, "gates.ngram", "must be at least 1")
        require(self.ngram_min_count >= 2, "gates.ngram_min_count", "must be at least 2")
        require(self.ngram_min_words >= 1, "gates.ngram_min_words", "must be at least 1")
        require(0 < self.max_repeated_share <= 1, "gates.max_repeated_share", "must be in (0, 1]")
        require(self.max_sentence_repeats >= 1, "gates.max_sentence_repeats", "must be at least 1")
        require(
            all(isinstance(p, str) and p.strip() for p in self.refusal_prefixes),
            "gates.refusal_prefixes",
            "must be non-empty strings",
        )
        self.refusal_prefixes = [_normalise_quotes(p).lower() for p in self.refusal_prefixes]


def clean_caption(text: str) -> str:
    """Strip surrounding whitespace and one pair of quotes wrapping the whole caption (only
    when that quote does not occur inside, so ``"Stop" sign on a "road"`` stays as it is).
    Nothing else: rewording the model's answer is not a gate's business."""
    text = text.strip()
    if len(text) >= 2 and QUOTE_PAIRS.get(text[0]) == text[-1]:
        inner = text[1:-1]
        if text[0] not in inner and text[-1] not in inner:
            text = inner.strip()
    return text


def check_caption(result: Result, cfg: GateConfig | None = None, **fields) -> str | None:
    """The reason ``result`` must not be written (one of ``REASONS``), or None when it passes.
    ``fields`` override ``cfg``'s (``check_caption(r, min_chars=100)``), validated the same."""
    cfg = cfg or GateConfig()
    if fields:
        cfg = dataclasses.replace(cfg, **fields)
    if result.error:
        return "engine_error"
    text = clean_caption(result.text)
    if not any(ch.isalnum() for ch in text):
        return "empty"
    if is_garbled(text):
        return "garbled"
    if is_refusal(text, cfg.refusal_prefixes):
        return "refusal"
    if is_repetitive(text, cfg):
        return "repetition"
    if result.finish_reason == "length":
        return "truncated"
    if cfg.language == "en" and latin_share(text) < cfg.min_latin_share:
        return "wrong_language"
    if len(text) < cfg.min_chars:
        return "too_short"
    return None


def is_garbled(text: str) -> bool:
    """U+FFFD (a token cut mid-character, or bytes that were never UTF-8) or a control
    character other than newline and tab: text a trainer should not learn to write."""
    return any(
        ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\t") for ch in text
    )


def is_refusal(text: str, prefixes: list[str]) -> bool:
    """A refusal or apology opens the answer; later in a caption these words are innocent."""
    head = _normalise_quotes(text[:64]).lower()
    return any(head.startswith(p) for p in prefixes)


def is_repetitive(text: str, cfg: GateConfig) -> bool:
    """A degenerate loop, by any of four rules that each have a clear threshold:

    - characters: a unit of 1-10 characters (not only spaces) repeated ``char_loop_repeats``
      times in a row (``!!!!!!!!``, ``hahahahaha...``, ``的的的的...``);
    - words: a unit of 1-8 words repeated ``word_loop_repeats`` times in a row
      (``very very very very``, ``a cat, a cat, a cat, a cat``);
    - coverage: in a text of ``ngram_min_words`` or more words, more than ``max_repeated_share``
      of them lie inside word ``ngram``-grams that occur ``ngram_min_count`` or more times (a
      loop that alternates or drifts: ``the man wears a hat. the man wears a shirt. ...``);
      shorter texts are exempt, where a list like ``a man with a hat, a man with a dog and a
      man with a bike`` would trip it;
    - sentences: one sentence of 2+ words occurs more than ``max_sentence_repeats`` times.
    """
    char_loop = r"(\S.{0,9}?)\1{" + str(cfg.char_loop_repeats - 1) + ",}"
    if re.search(char_loop, text, re.DOTALL):
        return True
    words = WORD.findall(text.lower())
    if _has_word_loop(words, cfg.word_loop_repeats):
        return True
    if (
        len(words) >= cfg.ngram_min_words
        and _repeated_share(words, cfg.ngram, cfg.ngram_min_count) > cfg.max_repeated_share
    ):
        return True
    sentences = Counter(
        " ".join(ws) for s in SENTENCE_END.split(text) if len(ws := WORD.findall(s.lower())) >= 2
    )
    return any(n > cfg.max_sentence_repeats for n in sentences.values())


def _has_word_loop(words: list[str], repeats: int, max_unit: int = 8) -> bool:
    """A unit of ``size`` words repeated ``repeats`` times in a row is a stretch where every word
    equals the one ``size`` places on, for ``(repeats - 1) * size`` words running."""
    for size in range(1, max_unit + 1):
        run = 0
        for i in range(len(words) - size):
            run = run + 1 if words[i] == words[i + size] else 0
            if run >= (repeats - 1) * size:
                return True
    return False


def _repeated_share(words: list[str], n: int, min_count: int) -> float:
    """Share of word positions covered by some n-gram that occurs ``min_count`` times or more."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = set()
    for i, gram in enumerate(grams):
        if counts[gram] >= min_count:
            covered.update(range(i, i + n))
    return len(covered) / len(words)


def latin_share(text: str) -> float:
    """Share of letters that are Latin script (ASCII and accented: ``café`` is English enough);
    0.0 when there are no letters at all."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    latin = sum(1 for ch in letters if ch.isascii() or "LATIN" in unicodedata.name(ch, ""))
    return latin / len(letters)


def _normalise_quotes(text: str) -> str:
    return text.replace("’", "'").replace("‘", "'")
