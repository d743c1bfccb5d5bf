"""k-means, assignment and balanced selection on toy blobs: 8 seeded Gaussian blobs on the unit
sphere in 64-d with very unequal sizes, so "balanced" has something to fix."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curation.clustering import (
    assign,
    balanced_select,
    cluster_sizes,
    hierarchical_balanced_select,
    hierarchical_kmeans,
    select_from_tree,
    train_kmeans,
    training_sample,
    upper_levels,
    water_fill,
)

SIZES = [5, 20, 50, 200, 1000, 3000, 40, 10]
DIM = 64


def make_blobs(seed: int = 0, sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(SIZES), DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(SIZES)), SIZES)
    x = centres[y] + sigma * rng.standard_normal((len(y), DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs()


@pytest.fixture(scope="module")
def assigned(blobs):
    """Over-clustered (k=48) so several clusters exceed the caps used below."""
    x, _ = blobs
    centroids = train_kmeans(x, 48, seed=0, init="kmeans++")
    labels, distances = assign(x, centroids)
    return x, labels, distances


def purity(labels: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose cluster's majority blob is their own blob."""
    return sum(np.bincount(y[labels == c]).max() for c in np.unique(labels)) / len(y)


def assert_recovers_blobs(labels: np.ndarray, y: np.ndarray) -> None:
    """Every cluster holds one blob only, hence every blob, down to the 5-row one, is a union of
    whole clusters."""
    for c in np.unique(labels):
        assert len(np.unique(y[labels == c])) == 1, f"cluster {c} mixes blobs"


def test_kmeans_recovers_blobs(blobs):
    x, y = blobs
    centroids = train_kmeans(x, 48, seed=0, init="kmeans++")
    assert centroids.shape == (48, DIM) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    labels, _ = assign(x, centroids)
    assert_recovers_blobs(labels, y)


def test_default_random_init_recovers_the_bulk(blobs):
    # Random init may merge the 5- and 10-row blobs into a neighbour (no initial centroid lands
    # in them): the bulk is still clustered correctly.
    x, y = blobs
    labels, _ = assign(x, train_kmeans(x, 16, seed=0))
    assert purity(labels, y) >= 0.97


def test_max_train_points_trains_on_the_seeded_sample(blobs):
    x, y = blobs
    sample = training_sample(len(x), 2000, seed=3)
    assert sample is not None and len(sample) == 2000 and len(np.unique(sample)) == 2000
    assert training_sample(len(x), len(x), seed=3) is None
    sampled = train_kmeans(x, 48, seed=3, max_train_points=2000, init="kmeans++")
    np.testing.assert_array_equal(sampled, train_kmeans(x[sample], 48, seed=3, init="kmeans++"))
    assert not np.array_equal(sampled, train_kmeans(x, 48, seed=3, init="kmeans++"))
    labels, _ = assign(x, sampled)  # trained on 46 % of the rows, assigned over all of them
    assert_recovers_blobs(labels, y)


def test_faiss_does_not_subsample_behind_our_back(blobs):
    # faiss would train k=1 on 256 rows (max_points_per_centroid); on all rows the one spherical
    # centroid is the normalised mean of every row.
    x, _ = blobs
    mean = x.mean(axis=0)
    np.testing.assert_allclose(train_kmeans(x, 1)[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_train_kmeans_is_deterministic_and_validates(blobs):
    x, _ = blobs
    a = train_kmeans(x, 8, seed=5)
    np.testing.assert_array_equal(a, train_kmeans(x, 8, seed=5))
    assert not np.array_equal(a, train_kmeans(x, 8, seed=6))
    assert train_kmeans(x[:3], 10).shape == (3, DIM)  # k clamped to n
    with pytest.raises(ValueError, match="at least one row"):
        train_kmeans(np.zeros((0, DIM), np.float32), 4)
    with pytest.raises(ValueError, match="k must be"):
        train_kmeans(x, 0)
    plain = train_kmeans(x * 3.0, 8, spherical=False, seed=5)
    assert np.linalg.norm(plain, axis=1).mean() > 2.0  # not normalised


@pytest.mark.parametrize("spherical", [True, False])
def test_assign_matches_faiss_search(blobs, spherical):
    x, _ = blobs
    x = x * np.linspace(0.5, 2.0, len(x), dtype=np.float32)[:, None]  # unnormalised input
    centroids = np.random.default_rng(1).standard_normal((12, DIM)).astype(np.float32)
    labels, distances = assign(x, centroids, spherical=spherical, batch_size=1000)
    if spherical:
        xn, cn = x.copy(), centroids.copy()
        faiss.normalize_L2(xn)
        faiss.normalize_L2(cn)
        index = faiss.IndexFlatIP(DIM)
        index.add(cn)
        sim, ref = index.search(xn, 1)
        np.testing.assert_allclose(distances, 1.0 - sim[:, 0], atol=1e-6)
    else:
        index = faiss.IndexFlatL2(DIM)
        index.add(centroids)
        d2, ref = index.search(x, 1)
        np.testing.assert_allclose(distances, d2[:, 0], rtol=1e-6)
    assert labels.dtype == np.int64 and distances.dtype == np.float32
    np.testing.assert_array_equal(labels, ref[:, 0])
    one_batch = assign(x, centroids, spherical=spherical, batch_size=len(x))
    np.testing.assert_array_equal(labels, one_batch[0])


@pytest.mark.parametrize("strategy", ["closest", "random", "spread"])
def test_balanced_select_caps_clusters_and_keeps_small_ones(assigned, strategy):
    x, labels, distances = assigned
    cap = 30
    sizes = cluster_sizes(labels, labels.max() + 1)
    assert (sizes > cap).sum() >= 5 and ((sizes > 0) & (sizes <= cap)).sum() >= 3
    idx = balanced_select(labels, distances, cap, strategy=strategy, seed=1, x=x)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    got = cluster_sizes(labels[idx], len(sizes))
    np.testing.assert_array_equal(got, np.minimum(sizes, cap))  # capped, small kept whole
    np.testing.assert_array_equal(
        idx, balanced_select(labels, distances, cap, strategy=strategy, seed=1, x=x)
    )


def test_random_strategy_depends_on_seed(assigned):
    _, labels, distances = assigned
    a = balanced_select(labels, distances, 30, strategy="random", seed=1)
    b = balanced_select(labels, distances, 30, strategy="random", seed=2)
    assert len(a) == len(b) and not np.array_equal(a, b)


def test_closest_picks_the_nearest_rows(assigned):
    _, labels, distances = assigned
    cap = 30
    idx = set(balanced_select(labels, distances, cap).tolist())
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        nearest = members[np.argsort(distances[members], kind="stable")[:cap]]
        assert set(nearest.tolist()) <= idx
    # ties go to the lower row index
    tie = balanced_select(np.zeros(5, np.int64), np.zeros(5, np.float32), 2)
    np.testing.assert_array_equal(tie, [0, 1])


def mean_pairwise_distance(x: np.ndarray) -> float:
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    return float(d.sum() / (len(x) * (len(x) - 1)))


def test_spread_is_more_spread_out_than_closest(assigned):
    x, labels, distances = assigned
    cap = 10
    closest = balanced_select(labels, distances, cap)
    spread = balanced_select(labels, distances, cap, strategy="spread", x=x)
    big = [c for c in np.unique(labels) if (labels == c).sum() > 3 * cap]
    assert len(big) >= 5
    for c in big:
        a = closest[labels[closest] == c]
        b = spread[labels[spread] == c]
        assert mean_pairwise_distance(x[b]) > mean_pairwise_distance(x[a])
        first = np.flatnonzero(labels == c)[np.argmin(distances[labels == c])]
        assert first in b  # starts from the row closest to the centroid
    with pytest.raises(ValueError, match="needs the feature rows"):
        balanced_select(labels, distances, cap, strategy="spread")


def test_balanced_select_edge_cases():
    assert balanced_select(np.zeros(0, np.int64), np.zeros(0), 5).size == 0
    assert balanced_select(np.array([0, 1]), np.array([0.1, 0.2]), 0).size == 0
    with pytest.raises(ValueError, match=">= 0"):
        balanced_select(np.array([0, -1]), np.array([0.1, 0.2]), 1)
    with pytest.raises(ValueError, match="strategy"):
        balanced_select(np.array([0, 1]), np.array([0.1, 0.2]), 1, strategy="best")


def test_cluster_sizes():
    np.testing.assert_array_equal(cluster_sizes(np.array([0, 2, 2]), 4), [1, 0, 2, 0])


def test_water_fill_is_max_min_fair():
    np.testing.assert_array_equal(water_fill(np.array([5, 20, 50, 200]), 100), [5, 20, 37, 38])
    np.testing.assert_array_equal(water_fill(np.array([3, 3, 3]), 100), [3, 3, 3])
    np.testing.assert_array_equal(water_fill(np.array([10, 0, 10]), 7), [3, 0, 4])
    assert water_fill(np.array([4, 9, 1]), 0).sum() == 0


def test_hierarchical_kmeans_shapes(blobs):
    x, _ = blobs
    tree = hierarchical_kmeans(x, [32, 6, 2], seed=0)
    assert [c.shape for c, _ in tree] == [(32, DIM), (6, DIM), (2, DIM)]
    assert [len(lab) for _, lab in tree] == [len(x), 32, 6]
    assert all(lab.max() < len(c) for c, lab in tree)


def top_level_counts(x, levels, idx, seed=0):
    """Selected rows per top-level cluster (the same tree hierarchical_balanced_select builds)."""
    tree = hierarchical_kmeans(x, levels, seed=seed)
    row_label = tree[0][1]
    for _, lab in tree[1:]:
        row_label = lab[row_label]
    k_top = len(tree[-1][0])
    return cluster_sizes(row_label[idx], k_top), cluster_sizes(row_label, k_top)


def test_hierarchical_select_hits_target_and_is_balanced(blobs):
    x, _ = blobs
    levels, target = [48, 8], 400
    idx = hierarchical_balanced_select(x, levels, target, seed=0)
    assert len(idx) == target and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, hierarchical_balanced_select(x, levels, target, seed=0))
    counts, caps = top_level_counts(x, levels, idx)
    np.testing.assert_array_equal(counts, water_fill(caps, target))
    uniform = np.sort(np.random.default_rng(0).choice(len(x), target, replace=False))
    uniform_counts, _ = top_level_counts(x, levels, uniform)
    # Uniform sampling mirrors the 3000-row blob's dominance; the hierarchy evens it out.
    assert counts.max() < uniform_counts.max() / 2
    assert counts.min() >= uniform_counts.min()
    assert counts.std() < uniform_counts.std() / 2
    assert len(hierarchical_balanced_select(x, levels, len(x) + 5)) == len(x)


def test_upper_levels_from_level1_centroids_alone_rebuild_the_tree(blobs):
    """The pool-scale path keeps no row embedding on the driver: levels 2.. come from the
    level-1 centroids only, and give the very tree (and selection) clustering the rows does."""
    x, _ = blobs
    levels, target = [32, 6, 2], 300
    tree = hierarchical_kmeans(x, levels, seed=3)
    rebuilt = [tree[0], *upper_levels(tree[0][0], levels[1:], seed=3)]
    for (c, lab), (c2, lab2) in zip(tree, rebuilt, strict=True):
        np.testing.assert_array_equal(c, c2)
        np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_array_equal(
        select_from_tree(rebuilt, target, seed=3),
        hierarchical_balanced_select(x, levels, target, seed=3),
    )
    assert upper_levels(tree[0][0], []) == []


def test_too_few_training_points_per_centroid_are_flagged_with_the_fix():
    from curation.balance import check_training_size

    # the paper's case at the default sample: 1M points for 70,000 clusters
    msg = check_training_size(1_000_000, 100_000_000, 70_000, 1_000_000)
    assert "14.3 per centroid" in msg and "max_train_points to 2,730,000" in msg
    # a small pool, used whole: only a smaller k helps
    msg = check_training_size(500, 500, 100, 1_000_000)
    assert "lower k to 12" in msg
    assert check_training_size(39 * 70_000, 10**8, 70_000, 39 * 70_000) is None
