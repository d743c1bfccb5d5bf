"""Aesthetic score: a LAION aesthetic-predictor head over each image's CLIP embedding.

Two published head formats are understood, told apart by their state-dict keys:

* the "improved aesthetic predictor" MLP (``sac+logos+ava1-l14-linearMSE``; keys
  ``layers.0/2/4/6/7.{weight,bias}``): Linear 768→1024, Dropout, Linear 1024→128, Dropout,
  Linear 128→64, Dropout, Linear 64→16, Linear 16→1, over OpenAI CLIP ViT-L/14 embeddings;
* the v1 linear heads (``sa_0_4_vit_l_14_linear``, ``sa_0_4_vit_b_32_linear``; keys ``weight``,
  ``bias``): one Linear d→1, d = 768 (ViT-L/14) or 512 (ViT-B/32).

A head only means something over embeddings of the CLIP model it was trained on, so the stage
refuses embeddings of another width instead of scoring garbage. Weight files are read with
``torch.load(..., weights_only=True)``: a state dict of tensors, never arbitrary pickles.
``weights`` may be a local path, one of :data:`KNOWN_WEIGHTS` (downloaded once into a cache and
checked against its published sha256) or an http(s) URL.

torch is imported only inside functions: importing this module (e.g. to build a pipeline on a
driver without torch) costs nothing, and the model loads in :meth:`AestheticScore.setup`, once
per Ray actor.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.address_gate import REDIRECT_STATUSES, AddressGate, AddressRefused, check_url
from manifests.marks import alive, set_column
from manifests.schema import EMBEDDING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TORCH_INSTALL = (
    "pip install torch  (CPU-only wheel: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)

#: Refuse weight downloads above this size (the largest known head is 3.7 MB).
MAX_WEIGHTS_BYTES = 50 * 1024 * 1024
DEFAULT_CACHE_DIR = Path("~/.cache/vl3data/weights")
MAX_REDIRECTS = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
TOTAL_TIMEOUT_S = 600.0

#: Which CLIP model produces embeddings of each width the known heads take.
CLIP_FOR_DIM = {768: "OpenAI CLIP ViT-L/14", 512: "OpenAI CLIP ViT-B/32"}


class KnownWeights(NamedTuple):
    url: str
    sha256: str
    clip_model: str


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "sac+logos+ava1-l14-linearMSE": KnownWeights(
        "https://raw.githubusercontent.com/christophschuhmann/improved-aesthetic-predictor/"
        "main/sac%2Blogos%2Bava1-l14-linearMSE.pth",
        "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
        CLIP_FOR_DIM[768],
    ),
    "sa_0_4_vit_l_14_linear": KnownWeights(
        "https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/"
        "sa_0_4_vit_l_14_linear.pth",
        "2cd4e60f4f24ae3bcd57b847b13c1f3ba27edc28cc1a7f9ce74ee9f421243cba",
        CLIP_FOR_DIM[768],
    ),
    "sa_0_4_vit_b_32_linear": KnownWeights(
        "https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/"
        "sa_0_4_vit_b_32_linear.pth",
        "c7b14cead230694acc7b9447974d3cad78003c72da032e402a303b6c2429e85f",
        CLIP_FOR_DIM[512],
    ),
}

#: (index, in, out) of the improved MLP's Linear layers; the gaps 1, 3, 5 are Dropouts.
_MLP_LINEARS = ((0, 768, 1024), (2, 1024, 128), (4, 128, 64), (6, 64, 16), (7, 16, 1))
_MLP_DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}
_MLP_KEYS = frozenset(f"layers.{i}.{p}" for i, _, _ in _MLP_LINEARS for p in ("weight", "bias"))
_LINEAR_KEYS = frozenset({"weight", "bias"})
_LINEAR_DIMS = (768, 512)
_EXPECTED_FORMATS = (
    "expected either the improved aesthetic MLP (keys layers.{0,2,4,6,7}.{weight,bias}: "
    "Linear 768→1024→128→64→16→1) or a v1 linear head (keys weight [1, d], bias [1], "
    "d = 768 or 512)"
)


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only where torch is absent
        raise ImportError(
            f"the aesthetic stage needs PyTorch; install it with: {TORCH_INSTALL}"
        ) from e
    return torch


# --------------------------------------------------------------------------- loading


def _build_mlp() -> torch.nn.Module:
    nn = _torch().nn
    layers: list[torch.nn.Module] = []
    linears = {i: (d_in, d_out) for i, d_in, d_out in _MLP_LINEARS}
    for i in range(8):
        layers.append(nn.Linear(*linears[i]) if i in linears else nn.Dropout(_MLP_DROPOUTS[i]))
    # keys "layers.N.weight", as in the original ``MLP`` class, with no custom class needed
    return nn.Sequential(OrderedDict(layers=nn.Sequential(*layers)))


def load_aesthetic_head(path: str | Path) -> torch.nn.Module:
    """The aesthetic head stored at ``path``, loaded strictly, in eval mode, on the CPU.

    Raises ValueError when the file is not a state dict of one of the two known formats.
    """
    torch = _torch()
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} is not a plain state dict of tensors (only weights_only loading is "
            f"allowed): {e}"
        ) from e
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{path} is not an aesthetic-head state dict (found {found}); {_EXPECTED_FORMATS}"
        )
    keys = set(state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if keys == _MLP_KEYS:
        model = _build_mlp()
    elif keys == _LINEAR_KEYS and len(shapes["weight"]) == 2 and shapes["weight"][0] == 1:
        dim = shapes["weight"][1]
        if dim not in _LINEAR_DIMS:
            raise ValueError(
                f"{path}: a linear head over {dim}-d embeddings is not a known aesthetic head "
                f"(found {shapes}); {_EXPECTED_FORMATS}"
            )
        model = torch.nn.Linear(dim, 1)
    else:
        raise ValueError(
            f"{path} is not a known aesthetic head: found keys {shapes}; {_EXPECTED_FORMATS}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # right keys, wrong shapes
        raise ValueError(
            f"{path} has the keys of an aesthetic head but not its shapes ({shapes}); "
            f"{_EXPECTED_FORMATS}"
        ) from e
    return model.float().eval()


def head_input_dim(model: torch.nn.Module) -> int:
    """The embedding width a head takes (the ``in_features`` of its first Linear)."""
    nn = _torch().nn
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    raise ValueError("the aesthetic head has no Linear layer")


def _dim_error(head_dim: int, emb_dim: int) -> ValueError:
    want = CLIP_FOR_DIM.get(head_dim, "a CLIP model of that width")
    got = CLIP_FOR_DIM.get(emb_dim, "no CLIP model these heads know")
    return ValueError(
        f"the aesthetic head takes {head_dim}-d embeddings ({want}) but clip_embedding holds "
        f"{emb_dim}-d ones ({got}); use the head trained on your CLIP model: "
        "sac+logos+ava1-l14-linearMSE or sa_0_4_vit_l_14_linear for ViT-L/14 (768-d), "
        "sa_0_4_vit_b_32_linear for ViT-B/32 (512-d)"
    )


def score_embeddings(
    model: torch.nn.Module, embeddings: np.ndarray, device: str = "cpu"
) -> np.ndarray:
    """Scores of an ``[n, d]`` array of CLIP embeddings in one forward pass (float32, ``[n]``)."""
    torch = _torch()
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {emb.shape}")
    head_dim = head_input_dim(model)
    if emb.shape[1] != head_dim:
        raise _dim_error(head_dim, emb.shape[1])
    if not (emb.flags.writeable and emb.flags.c_contiguous):  # arrow buffers are read-only
        emb = np.array(emb, dtype=np.float32, order="C")
    with torch.inference_mode():
        x = torch.from_numpy(emb).to(device)
        out = model(x).reshape(-1)
        return out.float().cpu().numpy()


# --------------------------------------------------------------------------- weights


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, sha256: str | None, max_bytes: int, gate: AddressGate) -> Path:
    """GET ``url`` into ``dest`` (temp file + ``os.replace``): http(s) only and public
    addresses only (``gate``), on every hop, at most ``max_bytes``, verified against
    ``sha256`` when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, gate.session() as session:
            session.headers["Accept-Encoding"] = "identity"
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                if check_url(current) is not None:
                    raise ValueError(f"refusing to download {current!r}: only http(s) URLs")
                try:
                    resp = session.get(
                        current,
                        stream=True,
                        allow_redirects=False,
                        timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                    )
                except AddressRefused as exc:
                    raise ValueError(
                        f"refusing to download {current!r}: {exc}; to fetch weights from a "
                        "private network, list it in download.allow_addresses"
                    ) from None
                if resp.status_code in REDIRECT_STATUSES and resp.headers.get("Location"):
                    resp.close()
                    current = urljoin(current, resp.headers["Location"].strip())
                    continue
                break
            else:
                raise RuntimeError(f"downloading {url}: more than {MAX_REDIRECTS} redirects")
            with resp:
                if resp.status_code != 200:
                    raise RuntimeError(f"downloading {current}: HTTP {resp.status_code}")
                declared = (resp.headers.get("Content-Length") or "").strip()
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ValueError(
                        f"downloading {current}: {declared} bytes declared, over the "
                        f"{max_bytes}-byte cap for weight files"
                    )
                for chunk in resp.iter_content(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ValueError(
                            f"downloading {current}: over the {max_bytes}-byte cap for weight files"
                        )
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"downloading {current}: over {TOTAL_TIMEOUT_S:.0f} s")
                    h.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            raise ValueError(
                f"sha256 mismatch for {url}: expected {sha256}, got {got}; the file was "
                "deleted (a corrupted download, or the published file changed)"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("downloaded %s (%d bytes) to %s", url, size, dest)
    return dest


def resolve_weights(
    spec: str | Path,
    cache_dir: Path | None = None,
    *,
    url: str | None = None,
    max_bytes: int = MAX_WEIGHTS_BYTES,
    allow_addresses: Iterable[str] = (),
) -> Path:
    """A local path to the weights ``spec`` names.

    ``spec`` is a local file (returned as is), a name in :data:`KNOWN_WEIGHTS` (downloaded from
    its public URL, or from ``url`` when given, and checked against its published sha256) or an
    http(s) URL (downloaded as is; a URL of a known name is checked against that sha256 too).
    Downloads land in ``cache_dir`` (default ``~/.cache/vl3data/weights``) and are reused.
    Like image URLs, they come from public addresses only, plus the ``allow_addresses``
    networks (``download.allow_addresses``).
    """
    text = str(spec).strip()
    local = Path(text).expanduser()
    if local.is_file():
        if url is not None:
            raise ValueError("url= only overrides the download address of a known weights name")
        return local
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    if text in KNOWN_WEIGHTS:
        known = KNOWN_WEIGHTS[text]
        source, sha256 = url or known.url, known.sha256
        dest = cache / f"{text}.pth"
    elif urlsplit(text).scheme.lower() in ("http", "https"):
        if url is not None:
            raise ValueError("url= only overrides the download address of a known weights name")
        source = text
        by_url = {k.url: k.sha256 for k in KNOWN_WEIGHTS.values()}
        sha256 = by_url.get(text)
        base = unquote(urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1]) or "weights"
        safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in base)[-80:]
        dest = cache / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}-{safe}"
    else:
        if urlsplit(text).scheme and len(urlsplit(text).scheme) > 1:
            raise ValueError(f"refusing {text!r}: weights URLs must be http(s)")
        raise FileNotFoundError(
            f"aesthetic weights {text!r}: no such file, and not an http(s) URL nor a known name "
            f"({', '.join(KNOWN_WEIGHTS)})"
        )
    if dest.is_file():
        if sha256 is None:
            return dest
        got = _sha256(dest)
        if got == sha256:
            return dest
        log.warning("cached %s has sha256 %s, expected %s: downloading again", dest, got, sha256)
    return _download(source, dest, sha256, max_bytes, AddressGate.allowing(allow_addresses))


# --------------------------------------------------------------------------- the stage


@dataclass
class AestheticScore:
    """Model stage: writes ``aesthetic`` (float32) for live rows with a ``clip_embedding``.

    Rows that are not alive, or whose embedding is null, get a null score. The head is
    resolved and loaded in :meth:`setup` (once per Ray actor), never at construction, so the
    stage pickles small and a driver without torch can build the pipeline.
    """

    weights: str
    name: str = "aesthetic"
    batch_size: int = 1024
    concurrency: int = 1
    num_gpus: float = 0
    num_cpus: float = 1
    device: str = "auto"
    cache_dir: str | None = None
    #: non-public networks a weights URL may come from (``download.allow_addresses``)
    allow_addresses: tuple[str, ...] = ()
    input_column: str = EMBEDDING
    output_column: str = "aesthetic"
    #: Forward passes run so far (one per batch with anything to score).
    calls: int = field(default=0, init=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def setup(self) -> None:
        torch = _torch()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        cache = Path(self.cache_dir) if self.cache_dir else None
        path = resolve_weights(self.weights, cache, allow_addresses=self.allow_addresses)
        model = load_aesthetic_head(path).to(device)
        self._model, self._device = model, device
        log.info("%s: %s on %s", self.name, path, device)

    @property
    def model(self) -> torch.nn.Module | None:
        return self._model

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._model is None:
            raise RuntimeError(f"{self.name}: call setup() before scoring (it loads the head)")
        n = batch.num_rows
        if self.input_column not in batch.column_names:
            raise ValueError(
                f"{self.name}: the batch has no {self.input_column!r} column; "
                "put the CLIP stage before the aesthetic stage"
            )
        emb_col = batch[self.input_column]
        todo = alive(batch) & pc.is_valid(emb_col).to_numpy(zero_copy_only=False)
        scores = np.zeros(n, dtype=np.float32)
        idx = np.flatnonzero(todo)
        if idx.size:
            picked = emb_col.take(pa.array(idx))
            lengths = pc.list_value_length(picked)
            lo, hi = pc.min(lengths).as_py(), pc.max(lengths).as_py()
            if lo != hi:
                raise ValueError(
                    f"{self.name}: {self.input_column} rows have different widths ({lo}..{hi})"
                )
            values = pc.list_flatten(picked)
            if values.null_count:
                raise ValueError(f"{self.name}: {self.input_column} holds null values")
            emb = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            scores[idx] = score_embeddings(self._model, emb.reshape(idx.size, hi), self._device)
            self.calls += 1
        column = pa.array(scores, type=pa.float32(), mask=~todo)
        return set_column(batch, self.output_column, column)
