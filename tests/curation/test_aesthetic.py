"""The aesthetic stage against the real published LAION heads and rating embeddings.

The weight files live outside the project (``/work/shared/weights/aesthetic``); on a clone
without them these tests skip. Downloads are tested against the loopback HTTP server serving
the real ``.pth`` bytes, so the sha256 check sees the published hash.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.stages.aesthetic import (
    KNOWN_WEIGHTS,
    AestheticScore,
    head_input_dim,
    load_aesthetic_head,
    resolve_weights,
    score_embeddings,
)
from manifests.marks import mark, set_column
from manifests.schema import new_rows
from tests.http_server import ImageServer

torch = pytest.importorskip("torch", reason="the aesthetic stage needs torch")

WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "aesthetic"
pytestmark = pytest.mark.skipif(
    not WEIGHTS.is_dir(),
    reason=f"real aesthetic weights not found at {WEIGHTS} (kept outside the repository)",
)

MLP = "sac+logos+ava1-l14-linearMSE"
V1_L14 = "sa_0_4_vit_l_14_linear"
V1_B32 = "sa_0_4_vit_b_32_linear"


def pth(name: str) -> Path:
    return WEIGHTS / f"{name}.pth"


@pytest.fixture(scope="module")
def ratings() -> np.ndarray:
    """The ten published 768-d rating embeddings, rating0 (worst) to rating9 (best)."""
    rows = [np.load(WEIGHTS / "rating_embeddings_vit_l_14" / f"rating{i}.npy") for i in range(10)]
    return np.concatenate(rows).astype(np.float32)


def test_real_files_match_the_published_hashes() -> None:
    for name in (MLP, V1_L14, V1_B32):
        assert hashlib.sha256(pth(name).read_bytes()).hexdigest() == KNOWN_WEIGHTS[name].sha256


def test_both_formats_load_in_eval_mode() -> None:
    mlp = load_aesthetic_head(pth(MLP))
    l14 = load_aesthetic_head(pth(V1_L14))
    b32 = load_aesthetic_head(pth(V1_B32))
    assert isinstance(mlp[0], torch.nn.Sequential)  # the improved MLP: layers.0 ... layers.7
    assert len(mlp[0]) == 8
    assert sum(isinstance(m, torch.nn.Dropout) for m in mlp.modules()) == 3
    assert isinstance(l14, torch.nn.Linear)
    assert isinstance(b32, torch.nn.Linear)
    assert (head_input_dim(mlp), head_input_dim(l14), head_input_dim(b32)) == (768, 768, 512)
    for m in (mlp, l14, b32):
        assert not m.training
    # strictly loaded: the published tensors, not a fresh init
    sd = torch.load(pth(MLP), map_location="cpu", weights_only=True)
    assert torch.equal(mlp[0][7].weight, sd["layers.7.weight"])


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [(V1_L14, -2.46, 11.30), (MLP, 1.66, 5.75)],
)
def test_heads_rank_the_rating_embeddings(
    ratings: np.ndarray, name: str, lo: float, hi: float
) -> None:
    head = load_aesthetic_head(pth(name))
    scores = score_embeddings(head, ratings)
    assert scores.dtype == np.float32 and scores.shape == (10,)
    assert np.all(np.diff(scores) > 0), scores
    assert scores[0] == pytest.approx(lo, abs=0.02)
    assert scores[-1] == pytest.approx(hi, abs=0.02)
    # eval mode: dropout is off, so a second pass gives the very same scores
    assert np.array_equal(score_embeddings(head, ratings), scores)


def test_b32_head_refuses_l14_embeddings(ratings: np.ndarray) -> None:
    head = load_aesthetic_head(pth(V1_B32))
    with pytest.raises(ValueError, match=r"512-d.*ViT-B/32.*768-d.*ViT-L/14"):
        score_embeddings(head, ratings)


def test_wrong_state_dicts_are_refused(tmp_path: Path) -> None:
    cases = {
        "unknown_keys": {"fc.weight": torch.zeros(1, 768), "fc.bias": torch.zeros(1)},
        "linear_1024": {"weight": torch.zeros(1, 1024), "bias": torch.zeros(1)},
        "mlp_wrong_width": {
            **torch.load(pth(MLP), map_location="cpu", weights_only=True),
            "layers.0.weight": torch.zeros(1024, 512),
        },
    }
    for label, state in cases.items():
        path = tmp_path / f"{label}.pth"
        torch.save(state, path)
        with pytest.raises(ValueError, match=r"layers\.\{0,2,4,6,7\}.*weight \[1, d\]") as e:
            load_aesthetic_head(path)
        assert next(iter(state)) in str(e.value)  # names the keys it found


def test_arbitrary_pickles_are_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1), "x": Path("/")}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_aesthetic_head(path)


# --------------------------------------------------------------------------- the stage


def _batch(ratings: np.ndarray) -> pa.Table:
    """Five rows: 0, 2, 4 alive with embeddings; 3 alive without one; 1 dropped earlier, and
    given an embedding anyway, so only the status keeps it from being scored."""
    batch = new_rows("folder:/pool", 0, [f"{i}.jpg" for i in range(5)])
    batch = mark(batch, [None, "aspect_ratio", None, None, None], "shape")
    embs = [ratings[0], ratings[3], ratings[9], None, ratings[5]]
    column = pa.array([None if e is None else e.tolist() for e in embs], pa.list_(pa.float32()))
    return set_column(batch, "clip_embedding", column)


def test_stage_scores_only_alive_rows_with_embeddings(ratings: np.ndarray) -> None:
    stage = AestheticScore(weights=str(pth(V1_L14)), device="cpu")
    stage.setup()
    out = stage(_batch(ratings))
    assert out.schema.field("aesthetic").type == pa.float32()
    scores = out["aesthetic"].to_pylist()
    assert scores[1] is None and scores[3] is None  # dropped row; alive row without embedding
    expect = score_embeddings(stage.model, ratings[[0, 9, 5]])
    assert [scores[0], scores[2], scores[4]] == pytest.approx(expect.tolist())
    assert scores[0] == pytest.approx(-2.46, abs=0.02)
    assert scores[2] == pytest.approx(11.30, abs=0.02)
    assert out["status"].to_pylist() == ["kept", "dropped", "kept", "kept", "kept"]
    assert stage.calls == 1  # one batched forward pass for the batch
    stage(_batch(ratings))
    assert stage.calls == 2


def test_stage_with_nothing_to_score_runs_no_forward_pass(ratings: np.ndarray) -> None:
    stage = AestheticScore(weights=str(pth(MLP)), device="cpu")
    stage.setup()
    batch = _batch(ratings)
    batch = mark(batch, ["x"] * batch.num_rows, "shape")
    out = stage(batch)
    assert out["aesthetic"].null_count == batch.num_rows
    assert stage.calls == 0


def test_stage_refuses_embeddings_of_the_wrong_clip(ratings: np.ndarray) -> None:
    stage = AestheticScore(weights=str(pth(V1_B32)), device="cpu")
    stage.setup()
    with pytest.raises(ValueError, match=r"512-d.*ViT-B/32.*768-d.*ViT-L/14"):
        stage(_batch(ratings))


def test_setup_is_what_loads(tmp_path: Path, ratings: np.ndarray) -> None:
    # construction touches nothing: a path that does not exist yet is fine until setup()
    missing = tmp_path / "later.pth"
    stage = AestheticScore(weights=str(missing), device="cpu")
    assert stage.model is None and stage.calls == 0
    pickle.loads(pickle.dumps(stage))  # ships to Ray actors small, before setup
    with pytest.raises(RuntimeError, match="setup"):
        stage(_batch(ratings))
    with pytest.raises(FileNotFoundError):
        stage.setup()
    missing.write_bytes(pth(MLP).read_bytes())
    stage.setup()
    assert stage.model is not None and not stage.model.training
    assert (stage.name, stage.batch_size, stage.concurrency) == ("aesthetic", 1024, 1)
    assert (stage.num_gpus, stage.num_cpus) == (0, 1)


# --------------------------------------------------------------------------- downloads

LOOPBACK = ("127.0.0.1/32",)  # the test server's address, not public


def test_known_name_downloads_verifies_and_caches(
    image_server: ImageServer, tmp_path: Path
) -> None:
    url = image_server.add_image("mlp.pth", pth(MLP).read_bytes(), "application/octet-stream")
    cache = tmp_path / "cache"
    got = resolve_weights(MLP, cache, url=url, allow_addresses=LOOPBACK)
    assert got.parent == cache
    assert got.read_bytes() == pth(MLP).read_bytes()
    assert image_server.hits["/img/mlp.pth"] == 1
    assert sorted(p.name for p in cache.iterdir()) == [got.name]  # no temp files left
    # second call: the cached file has the right hash, no request
    assert resolve_weights(MLP, cache, url=url, allow_addresses=LOOPBACK) == got
    assert image_server.hits["/img/mlp.pth"] == 1
    # a corrupted cache entry is fetched again
    got.write_bytes(b"garbage")
    assert resolve_weights(MLP, cache, url=url, allow_addresses=LOOPBACK) == got
    assert image_server.hits["/img/mlp.pth"] == 2
    assert hashlib.sha256(got.read_bytes()).hexdigest() == KNOWN_WEIGHTS[MLP].sha256
    # and what landed there loads and scores
    assert head_input_dim(load_aesthetic_head(got)) == 768


def test_hash_mismatch_is_refused_and_deleted(image_server: ImageServer, tmp_path: Path) -> None:
    wrong = pth(V1_L14).read_bytes()  # a real head, but not the one this name promises
    url = image_server.add_image("wrong.pth", wrong, "application/octet-stream")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256 mismatch") as e:
        resolve_weights(MLP, cache, url=url, allow_addresses=LOOPBACK)
    assert KNOWN_WEIGHTS[MLP].sha256 in str(e.value)
    assert hashlib.sha256(wrong).hexdigest() in str(e.value)
    assert list(cache.iterdir()) == []  # neither the file nor a temp file is left


def test_plain_urls_and_local_paths(image_server: ImageServer, tmp_path: Path) -> None:
    assert resolve_weights(str(pth(V1_B32)), tmp_path) == pth(V1_B32)  # a path is used as is
    url = image_server.add_image("b32.pth", pth(V1_B32).read_bytes(), "application/octet-stream")
    got = resolve_weights(url, tmp_path / "c", allow_addresses=LOOPBACK)
    assert got.read_bytes() == pth(V1_B32).read_bytes()
    assert resolve_weights(url, tmp_path / "c", allow_addresses=LOOPBACK) == got
    assert image_server.hits["/img/b32.pth"] == 1
    # the stage takes the URL too
    stage = AestheticScore(
        weights=url, device="cpu", cache_dir=str(tmp_path / "c"), allow_addresses=LOOPBACK
    )
    stage.setup()
    assert head_input_dim(stage.model) == 512
    assert image_server.hits["/img/b32.pth"] == 1


def test_download_refuses_other_schemes_and_huge_files(
    image_server: ImageServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="http"):
        resolve_weights("ftp://127.0.0.1/w.pth", cache)
    with pytest.raises(ValueError, match="http"):
        resolve_weights(image_server.url("/redirect-file"), cache, allow_addresses=LOOPBACK)
    with pytest.raises(ValueError, match="cap"):
        resolve_weights(
            image_server.url("/big-declared"), cache, max_bytes=1_000_000, allow_addresses=LOOPBACK
        )
    with pytest.raises(ValueError, match="cap"):
        resolve_weights(
            image_server.url("/big-nolength"), cache, max_bytes=1_000_000, allow_addresses=LOOPBACK
        )
    with pytest.raises(RuntimeError, match="HTTP 404"):
        resolve_weights(image_server.url("/404"), cache, allow_addresses=LOOPBACK)
    with pytest.raises(FileNotFoundError, match="known name"):
        resolve_weights("no-such-head", cache)
    assert list(cache.iterdir()) == []


def test_weights_from_a_private_address_are_refused_unless_allowed(
    image_server: ImageServer, tmp_path: Path
) -> None:
    """The weights URL passes the same address gate as image URLs: loopback is not public."""
    url = image_server.add_image("b32.pth", pth(V1_B32).read_bytes(), "application/octet-stream")
    with pytest.raises(ValueError, match=r"non-public .*download\.allow_addresses"):
        resolve_weights(url, tmp_path / "c")
    assert image_server.hits["/img/b32.pth"] == 0  # refused before connecting
    assert list((tmp_path / "c").iterdir()) == []
