"""Captioning engines behind one interface (see ``base``)."""

from __future__ import annotations

from recaption.engines.base import Engine, EngineConfig


def make_engine(cfg: EngineConfig) -> Engine:
    """The engine ``cfg.kind`` names, constructed (its model loads in ``setup()``)."""
    if cfg.kind == "transformers":
        from recaption.engines.hf import TransformersEngine

        return TransformersEngine(cfg)
    if cfg.kind == "vllm":
        from recaption.engines.vllm_engine import VllmEngine

        return VllmEngine(cfg)
    from recaption.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(cfg)
