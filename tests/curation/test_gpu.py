"""GPU paths of the model stages: fp16 actors and GPU faiss. Run with `make test-gpu` on a
machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_clip_on_gpu_in_fp16_matches_cpu(photos, tiny_models):
    from curation.stages.clip_embed import EMBEDDING, ClipEmbed
    from manifests.schema import new_rows
    from vl3data.sample_media import jpeg_bytes

    names = ["astronaut", "coffee", "chelsea"]
    batch = new_rows("t", 0, names, image=[jpeg_bytes(photos[n]) for n in names])
    model = f"local-dir:{tiny_models / 'open_clip'}"
    gpu = ClipEmbed(model=model, pretrained=None, device="cuda")
    cpu = ClipEmbed(model=model, pretrained=None, device="cpu")
    a = np.array(gpu(batch)[EMBEDDING].to_pylist(), np.float32)
    b = np.array(cpu(batch)[EMBEDDING].to_pylist(), np.float32)
    assert gpu.clip.dtype == torch.float16  # fp16 on GPU by default
    assert np.all((a * b).sum(axis=1) > 0.99)


def test_blip2_on_gpu(photos, tiny_models):
    from curation.stages.blip2_caption import Blip2Caption
    from manifests.schema import new_rows
    from vl3data.sample_media import jpeg_bytes

    stage = Blip2Caption(model=str(tiny_models / "blip2"), device="cuda", max_new_tokens=4)
    batch = new_rows("t", 0, ["a"], image=[jpeg_bytes(photos["coffee"])])
    assert stage(batch)["coarse_caption"].to_pylist()[0]


def test_faiss_kmeans_on_gpu_when_faiss_has_it():
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() == 0:
        pytest.skip("this faiss build has no GPU support (pip install faiss-gpu-cu12)")
    from curation.clustering import assign, train_kmeans

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 64)).astype(np.float32)
    cpu = train_kmeans(x, 8, seed=0, gpu=False)
    gpu = train_kmeans(x, 8, seed=0, gpu=True)
    assert cpu.shape == gpu.shape == (8, 64)
    labels, _ = assign(x, gpu)
    assert len(np.unique(labels)) == 8
