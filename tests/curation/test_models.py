"""Model stages on real photos with tiny random models of the real classes."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.stages.blip2_caption import Blip2Caption
from curation.stages.clip_embed import EMBEDDING, ClipEmbed, preprocess
from curation.stages.clip_model import load_clip
from curation.stages.similarity import ClipTextSim
from manifests.marks import mark
from manifests.schema import new_rows
from vl3data.sample_media import jpeg_bytes


def photo_batch(photos, names=("astronaut", "chelsea", "coffee", "grace_hopper")) -> pa.Table:
    data = [jpeg_bytes(photos[n]) for n in names]
    return new_rows("t", 0, list(names), image=data, text=[f"a photo of {n}" for n in names])


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_preprocess_matches_the_libraries_own_transform(photos, tiny_models, backend):
    """Without draft decoding our numpy preprocessing is the library's: every value within one
    8-bit level (transformers rounds a few pixels the other way), on average identical."""
    if backend == "open_clip":
        import open_clip

        model = f"local-dir:{tiny_models / 'open_clip'}"
        _, _, ref = open_clip.create_model_and_transforms(model)
        reference = lambda im: ref(im).numpy()  # noqa: E731
    else:
        from transformers import AutoImageProcessor

        model = str(tiny_models / "hf_clip")
        proc = AutoImageProcessor.from_pretrained(model)
        reference = lambda im: proc(im, return_tensors="np")["pixel_values"][0]  # noqa: E731
    spec = load_clip(backend, model, None).spec
    for name, arr in photos.items():
        data = jpeg_bytes(arr)
        ours = preprocess(data, spec, draft=False)
        want = reference(Image.open(io.BytesIO(data)))
        assert ours.shape == want.shape, name
        one_level = 1.0 / 255 / min(spec.std) + 1e-4
        assert np.abs(ours - want).max() <= one_level, name
        assert np.abs(ours - want).mean() < 1e-3, name
        # draft decoding is close, not exact
        assert np.abs(preprocess(data, spec, draft=True) - want).mean() < 0.25, name


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_clip_embeds_each_live_image_once(photos, tiny_models, backend):
    model = (
        f"local-dir:{tiny_models / 'open_clip'}"
        if backend == "open_clip"
        else str(tiny_models / "hf_clip")
    )
    stage = ClipEmbed(backend=backend, model=model, pretrained=None)
    assert stage.clip is None  # nothing loads at construction
    batch = mark(photo_batch(photos), [None, "x", None, None], "test")
    stage.setup()
    out = stage(batch)
    assert stage.clip.image_calls == 1  # one batched forward pass for the batch
    emb = out[EMBEDDING].to_pylist()
    assert emb[1] is None  # a dropped row is not embedded
    vecs = np.array([e for e in emb if e is not None], np.float32)
    assert vecs.shape == (3, 768)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # the same image gives the same vector in another batch
    again = stage(photo_batch(photos, ("coffee",)))[EMBEDDING].to_pylist()[0]
    assert np.allclose(again, emb[2], atol=1e-5)


def test_similarity_reuses_the_embedding(photos, tiny_models):
    model = f"local-dir:{tiny_models / 'open_clip'}"
    embed = ClipEmbed(model=model, pretrained=None)
    batch = embed(photo_batch(photos))
    batch = batch.append_column("coarse_caption", pa.array(["a cat", "", None, "a woman"]))
    sim = ClipTextSim(model=model, pretrained=None, alt_text=True)
    out = sim(batch)
    assert sim.clip.image_calls == 0  # the image tower never runs again
    s = out["clip_sim"].to_pylist()
    assert s[1] is None and s[2] is None  # no caption, nothing to compare
    text = sim.clip.encode_texts(["a cat"])[0]
    img = np.asarray(batch[EMBEDDING][0].as_py(), np.float32)
    assert s[0] == pytest.approx(float(img @ text), abs=1e-5)
    assert all(v is not None for v in out["clip_sim_alt"].to_pylist())


def test_blip2_captions_live_rows_greedily(photos, tiny_models):
    stage = Blip2Caption(model=str(tiny_models / "blip2"), max_new_tokens=6, batch_size=4)
    batch = mark(photo_batch(photos), [None, None, "x", None], "test")
    stage.setup()
    out = stage(batch)
    caps = out["coarse_caption"].to_pylist()
    assert stage.calls == 1
    assert caps[2] is None
    assert all(isinstance(c, str) and c for c in (caps[0], caps[1], caps[3]))
    assert stage(batch)["coarse_caption"].to_pylist() == caps  # greedy: deterministic
    short = Blip2Caption(model=str(tiny_models / "blip2"), max_new_tokens=2)
    short_caps = short(batch)["coarse_caption"].to_pylist()
    for long_c, short_c in zip(caps, short_caps, strict=True):
        assert (long_c is None) == (short_c is None)
        assert long_c is None or len(short_c) <= len(long_c)  # max_new_tokens bounds it


def test_open_clip_config_and_checkpoint_file_round_trip(photos, tiny_models, tmp_path):
    """A custom architecture (.json) plus a checkpoint file gives the same embeddings as the
    local directory it came from; transformers' local directory loads with its own classes."""
    import json

    import torch
    from safetensors.torch import load_file

    cfg = json.loads((tiny_models / "open_clip" / "open_clip_config.json").read_text())
    arch = tmp_path / "vl3-tiny-clip.json"
    arch.write_text(json.dumps(cfg["model_cfg"]))
    ckpt = tmp_path / "tiny.pt"
    torch.save(load_file(tiny_models / "open_clip" / "open_clip_model.safetensors"), ckpt)
    batch = photo_batch(photos)
    from_dir = ClipEmbed(model=f"local-dir:{tiny_models / 'open_clip'}", pretrained=None)(batch)
    from_file = ClipEmbed(model=str(arch), pretrained=str(ckpt))(batch)
    a = np.array(from_dir[EMBEDDING].to_pylist(), np.float32)
    b = np.array(from_file[EMBEDDING].to_pylist(), np.float32)
    assert np.allclose(a, b, atol=1e-5)
    hf = load_clip("transformers", str(tiny_models / "hf_clip"))
    assert type(hf.model).__name__ == "CLIPModel"


def test_a_broken_torchvision_gives_the_fix_not_a_stack_trace(monkeypatch):
    """A CPU torch with a CUDA-only torchvision breaks `import open_clip` with a RuntimeError
    deep in torchvision (DESIGN §8); the user must be told what to install instead."""
    import builtins

    from curation.stages import clip_model

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "open_clip":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match=r"matching pair.*torchvision"):
        clip_model._import("open_clip")
