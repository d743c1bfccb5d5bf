"""Where an engine can run: inside plain partition tasks, or only in an actor pool.

Read by the jobs' configs (``recaption.config``, ``video_prep.raw_config`` users) to choose
their passes before any work, so it imports nothing but the engine's config.
"""

from __future__ import annotations

from recaption.engines.base import EngineConfig


def runs_in_tasks(e: EngineConfig) -> bool:
    """Whether engine ``e`` can run inside plain partition tasks: an OpenAI-compatible
    server's client, or transformers on the CPU (no GPU asked for, no CUDA device named)."""
    if e.kind == "openai":
        return True
    return e.kind == "transformers" and not e.num_gpus and not e.device.startswith("cuda")
