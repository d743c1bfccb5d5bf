"""Loading a CLIP-family model from open_clip or transformers behind one small interface.

``load_clip`` returns a :class:`ClipHandle` with ``encode_images`` / ``encode_texts`` returning
L2-normalised float32 numpy arrays, and the model's preprocessing parameters, which our own fast
preprocessing (``curation.stages.clip_embed.preprocess``) reproduces.

Model names:
- open_clip: a built-in name with a ``pretrained`` tag (``ViT-L-14`` + ``openai``: downloads on
  a machine with network), a built-in name with a checkpoint file as ``pretrained``, a model
  config ``.json`` (a custom architecture) with a checkpoint file, or ``local-dir:/path``
  (``open_clip_config.json`` + weights, as ``vl3data.tiny_models`` writes).
- transformers: a hub id or a local directory of ``CLIPModel`` or ``SiglipModel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = {
    "open_clip": "pip install 'vl3data[models]'  (or: pip install open_clip_torch torchvision)",
    "transformers": "pip install 'vl3data[models]'  (or: pip install transformers torch)",
}


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model's own transform does, so ours can do the same on raw bytes."""

    size: tuple[int, int]  # (height, width) fed to the model
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"  # shortest side to size then centre crop | "squash" to size
    crop_offset: str = "round"  # torchvision rounds the centre-crop offset, transformers floors


def _import(backend: str):
    try:
        if backend == "open_clip":
            import open_clip

            return open_clip
        import transformers

        return transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"the {backend} CLIP backend needs: {INSTALL_HINT[backend]}") from exc
    except RuntimeError as exc:  # a torch/torchvision pair that does not match
        raise ImportError(
            f"importing {backend} failed ({exc}); torch and torchvision must be a matching pair, "
            "e.g. pip install torch==2.14.1 torchvision==0.29.1"
        ) from exc


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ClipStage:
    """What the CLIP stages share: which model, where, and its loaded handle.

    Subclasses (the embedding and the similarity stage) load it in ``setup()`` through
    :meth:`load_model`; they name the same model, so the similarity stage scores texts in the
    space the images were embedded in."""

    backend: str = "open_clip"
    model: str = "ViT-L-14"
    pretrained: str | None = "openai"
    device: str = "auto"
    precision: str = "auto"
    concurrency: int = 1
    num_gpus: float = 0
    num_cpus: float = 1
    clip: ClipHandle | None = field(default=None, init=False, repr=False)

    def load_model(self) -> None:
        self.clip = load_clip(
            self.backend, self.model, self.pretrained, self.device, self.precision
        )


class ClipHandle:
    """A loaded CLIP: encode images (already preprocessed) and texts to unit vectors."""

    def __init__(
        self, model: Any, tokenize: Any, spec: PreprocessSpec, device: str, dtype: Any, backend: str
    ):
        self.model, self.tokenize, self.spec = model, tokenize, spec
        self.device, self.dtype, self.backend = device, dtype, backend
        self.image_calls = 0
        self.text_calls = 0

    @property
    def dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[1])

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) normalised float32 -> (n, d) unit float32."""
        import torch

        self.image_calls += 1
        x = torch.from_numpy(pixels).to(self.device, self.dtype)
        with torch.inference_mode():
            if self.backend == "open_clip":
                feats = self.model.encode_image(x)
            else:
                feats = _features(self.model.get_image_features(pixel_values=x))
        return _unit(feats)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        self.text_calls += 1
        with torch.inference_mode():
            if self.backend == "open_clip":
                feats = self.model.encode_text(self.tokenize(texts).to(self.device))
            else:
                enc = self.tokenize(texts, padding=True, truncation=True, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                feats = _features(self.model.get_text_features(**enc))
        return _unit(feats)


def _features(out: Any) -> Any:
    """transformers 5 may return a model output object where 4.x returned the tensor."""
    if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
        return out.pooler_output
    return out


def _unit(feats: Any) -> np.ndarray:
    x = feats.float().cpu().numpy()
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_clip(
    backend: str,
    model: str,
    pretrained: str | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> ClipHandle:
    """Load a CLIP-family model for inference. fp16 on GPU by default, fp32 on CPU."""
    import torch

    device = resolve_device(device)
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if backend == "open_clip":
        open_clip = _import("open_clip")
        name = model
        if name.endswith(".json"):  # a custom architecture: register it under its file's stem
            open_clip.add_model_config(name)
            name = Path(name).stem
        net = open_clip.create_model(
            name,
            pretrained=None if name.startswith("local-dir:") else pretrained,
            device=device,
            weights_only=True,
        )
        net = net.to(dtype).eval()
        cfg = net.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], tuple | list) else (cfg["size"],) * 2
        spec = PreprocessSpec(
            size=(int(size[0]), int(size[1])),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            resize_mode="shortest"
            if cfg.get("resize_mode", "shortest") == "shortest"
            else "squash",
        )
        return ClipHandle(net, open_clip.get_tokenizer(name), spec, device, dtype, backend)
    if backend != "transformers":
        raise ValueError(f"unknown CLIP backend {backend!r}: open_clip or transformers")
    transformers = _import("transformers")
    net = transformers.AutoModel.from_pretrained(model, dtype=dtype).to(device).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(model)
    tok = transformers.AutoTokenizer.from_pretrained(model)
    return ClipHandle(net, tok, _hf_spec(proc), device, dtype, backend)


def _hf_spec(proc: Any) -> PreprocessSpec:
    """CLIPImageProcessor resizes the short side then centre-crops; SigLIP's squashes."""
    size = proc.size
    if getattr(proc, "do_center_crop", False) and "shortest_edge" in size:
        crop = proc.crop_size
        return PreprocessSpec(
            (crop["height"], crop["width"]),
            tuple(proc.image_mean),
            tuple(proc.image_std),
            "shortest",
            crop_offset="floor",
        )
    return PreprocessSpec(
        (size["height"], size["width"]), tuple(proc.image_mean), tuple(proc.image_std), "squash"
    )
