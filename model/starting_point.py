"""Where a stage starts: the previous stage's ``final``, ``model.init``, or ``output/init`` built
here for stage 1 (Qwen2.5 + SigLIP parts, or a fresh preset around a BPE trained on the recipes).

Apart from the loop because it is the one place that builds a model rather than loading one, and
the only user of the tokenizer trainer and :mod:`model.init_parts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from manifests.atomic import write_json
from model.build import build_from_preset, save_checkpoint
from model.checkpoints import publish, tmp_dir
from model.config import TrainConfig
from model.distributed import Dist
from model.init_parts import build_from_parts
from model.stages import STAGES
from model.tokenizer import corpus_from_recipes, load_tokenizer

log = logging.getLogger(__name__)


def stage_recipes(cfg: TrainConfig) -> list[str]:
    """The recipes the config names, stage 1 to 4 (the tokenizer reads all of them)."""
    return [cfg.stage(n).recipe for n in STAGES if cfg.stage(n).recipe]


def tokenizer_corpus(cfg: TrainConfig) -> Callable[[], list[str]]:
    """What to train the BPE on, read only when called (a given tokenizer needs none): every
    readable recipe's text less the held-out samples."""

    def read() -> list[str]:
        texts: list[str] = []
        for recipe in dict.fromkeys(stage_recipes(cfg)):  # each recipe once
            try:
                texts += corpus_from_recipes(
                    [recipe], cfg.model.tokenizer_records, cfg.data.holdout_fraction
                )
            except (FileNotFoundError, ValueError) as exc:
                log.warning("tokenizer: not reading %s: %s", recipe, exc)
        if not texts:
            raise RuntimeError("no text to train the tokenizer on: no recipe could be read")
        return texts

    return read


def starting_point(cfg: TrainConfig, n: int, d: Dist, fresh: bool) -> Path:
    """The checkpoint stage ``n`` starts from (module docs); stage 1 without ``model.init``
    builds ``output/init`` first (rank 0; the others wait and load it)."""
    out = Path(cfg.output)
    if n > 1:
        prev = out / f"stage{n - 1}" / "final"
        if prev.is_dir():
            return prev
        if cfg.model.init:
            return Path(cfg.model.init)
        raise FileNotFoundError(
            f"stage {n} starts from stage {n - 1}'s weights, but {prev} does not exist: run "
            f"stage {n - 1} first (--stage all), or --set model.init=CHECKPOINT"
        )
    if cfg.model.init:
        return Path(cfg.model.init)
    init = out / "init"
    if d.main and (fresh or not (init / "config.json").is_file()):
        m = cfg.model
        tok = load_tokenizer(m.tokenizer) if m.tokenizer else None
        tmp = tmp_dir(init)
        if m.init_llm:  # the paper's start: Qwen2.5 + SigLIP, a new projector
            model, processor, parts = build_from_parts(
                m.init_llm,
                m.init_vision,
                m.preset,
                tokenizer=tok,
                seed=cfg.seed,
                attn_implementation=m.attn_implementation,
            )
            save_checkpoint(model, processor, tmp)
            write_json(tmp / "parts.json", parts)
        else:
            model, processor = build_from_preset(
                m.preset,
                tokenizer=tok,
                corpus=tokenizer_corpus(cfg),
                vocab_size=m.vocab_size or None,
                seed=cfg.seed,
                attn_implementation=m.attn_implementation,
            )
            save_checkpoint(model, processor, tmp)
        publish(tmp, init)
        log.info(
            "built the stage-1 start in %s (%s, vocabulary %d)",
            init,
            f"from {m.init_llm} + {m.init_vision}" if m.init_llm else f"{m.preset} preset",
            len(processor.tokenizer),
        )
    d.barrier()
    return init


__all__ = ["stage_recipes", "starting_point", "tokenizer_corpus"]
