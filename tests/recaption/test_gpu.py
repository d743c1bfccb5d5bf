"""The transformers engine's GPU path (cuda + bf16 by default). Run with `make test-gpu` on a
machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_hf_engine_on_gpu_in_bf16(photos, tiny_internvl):
    from recaption.engines.base import EngineConfig, Request, SamplingConfig
    from recaption.engines.hf import TransformersEngine
    from vl3data.sample_media import jpeg_bytes

    engine = TransformersEngine(EngineConfig(model=str(tiny_internvl), max_image_side=112))
    engine.setup()
    assert engine._device == "cuda" and engine._dtype == torch.bfloat16
    reqs = [Request(n, jpeg_bytes(photos[n]), "Describe the image.") for n in ("coffee", "rocket")]
    for temperature in (0.0, 1.0):
        sampling = SamplingConfig(max_new_tokens=4, temperature=temperature, seed=1)
        results = engine.generate(reqs, sampling)
        assert [r.key for r in results] == ["coffee", "rocket"]
        assert all(r.error is None and 1 <= r.output_tokens <= 4 for r in results)
        assert engine.generate(reqs, sampling) == results
