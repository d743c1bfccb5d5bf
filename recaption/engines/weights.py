"""How much memory a transformers checkpoint takes once loaded, read from its files alone.

A job that loads a model in every local worker process (the raw-video job's clip captions on
CPU) must know what one copy costs before it starts N of them: a 2B-parameter captioner in
fp32 is ~9 GB, and sixteen workers would ask for 140 GB. The parameter count comes from the
``*.safetensors`` headers (shapes only: no tensor is read, nothing is unpickled); a checkpoint
in pickle files (``*.bin``) is not opened, and its size is unknown (``None``).
"""

from __future__ import annotations

import math
from pathlib import Path

#: bytes per parameter once loaded, by the engine's precision (``auto`` is fp32 on CPU)
BYTES_PER_PARAM = {"auto": 4, "fp32": 4, "fp16": 2, "bf16": 2}


def checkpoint_parameters(model: str | Path) -> int | None:
    """Parameters in the checkpoint folder ``model`` (its safetensors files), or None when it
    has none (pickle weights, a hub name, a folder that is not there)."""
    from safetensors import safe_open

    files = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    if not files:
        return None
    n = 0
    for path in files:
        with safe_open(str(path), framework="numpy") as f:
            n += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)
    return n


def loaded_bytes(model: str | Path, precision: str = "auto") -> int | None:
    """The checkpoint's parameters in memory at ``precision``, or None when unknown."""
    n = checkpoint_parameters(model)
    return None if n is None else n * BYTES_PER_PARAM.get(precision, 4)
