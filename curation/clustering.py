"""Clustering and balanced sampling of image embeddings, as pure functions over numpy arrays.

VideoLLaMA3 (VL3-Syn7M) clusters the CLIP features of the images that survived filtering with
k-means and keeps a fixed number of images per cluster, so frequent concepts (product shots,
screenshots) stop drowning out rare ones. This module is that step with no Ray, no files and no
state: arrays and a target size go in, row indices come out. The caller owns I/O; the centroids
are an artifact it may save (``np.save``) and reuse to assign later shards.

How it scales: :func:`train_kmeans` fits centroids on a seeded sample that fits one node
(``max_train_points``), and :func:`assign` is a separate, batched pass over all rows (it can run
per shard, in parallel, against the saved centroids). :func:`balanced_select` then only needs the
``labels``/``distances`` columns.

Geometry: with ``spherical=True`` (the default, what CLIP features want) rows and centroids are
L2-normalised, clustering uses inner product, and the distance reported by :func:`assign` is the
cosine distance ``1 - cos``. With ``spherical=False`` it is plain k-means and the distance is the
*squared* L2 distance (what ``faiss.IndexFlatL2`` returns).

k-means is faiss's (``faiss.Kmeans``), never hand-written. Two faiss behaviours are pinned here:

- faiss silently subsamples to ``k * max_points_per_centroid`` points (default 256) with its own
  RNG. We set ``max_points_per_centroid`` to the training-set size so the only subsampling is ours
  (``max_train_points``), visible and seeded.
- faiss warns when there are fewer than ``k * min_points_per_centroid`` (default 39) points. Small
  clusterings are legitimate here (upper levels of :func:`hierarchical_kmeans` cluster a few
  hundred centroids), so we set it to 1; we check ``n >= 1`` and clamp ``k`` to ``n`` ourselves.

Initialisation: faiss's default is random rows (``init="random"``), cheap and what ``bench/``
compares against. With very unequal cluster sizes it can merge a tiny, well separated group
into a big cluster (no initial centroid lands in it); ``init="kmeans++"`` fixes most of that at
the cost of about ``k`` sequential passes over the data, ``"afk-mc2"`` is a cheap approximation.
"""

from __future__ import annotations

import faiss
import numpy as np

INIT_METHODS = {
    "random": faiss.ClusteringInitMethod_RANDOM,
    "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    "afk-mc2": faiss.ClusteringInitMethod_AFK_MC2,
}
STRATEGIES = ("closest", "random", "spread")


def _as_matrix(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 2-D view/copy: the only layout faiss accepts."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d), got shape {x.shape}")
    return x


def _normalized(x: np.ndarray) -> np.ndarray:
    """Row-L2-normalised float32 copy (the caller's array is never modified; zero rows stay 0)."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(out)
    return out


def training_sample(n: int, max_train_points: int | None, seed: int) -> np.ndarray | None:
    """Rows :func:`train_kmeans` trains on: ``None`` (all of them) when ``n <= max_train_points``,
    else ``max_train_points`` distinct rows drawn with ``numpy.random.default_rng(seed)``, sorted
    (sorted so the gather reads memory in order). Public so a caller can log or reproduce it."""
    if max_train_points is None or n <= max_train_points:
        return None
    if max_train_points < 1:
        raise ValueError(f"max_train_points must be >= 1, got {max_train_points}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_train_points, replace=False))


def train_kmeans(
    x: np.ndarray,
    k: int,
    *,
    spherical: bool = True,
    seed: int = 0,
    niter: int = 20,
    max_train_points: int | None = None,
    gpu: bool | None = None,
    init: str = "random",
) -> np.ndarray:
    """Fit ``k`` centroids to the rows of ``x`` with faiss k-means; returns them, (k, d) float32.

    ``k`` is clamped to the number of training rows (k-means cannot place more centroids than
    points), so the result may have fewer than ``k`` rows. With ``max_train_points`` and more rows
    than that, training runs on the seeded sample from :func:`training_sample`; assign everything
    afterwards with :func:`assign`. ``gpu=None`` uses GPU faiss when one is visible. The result is
    a function of (data, k, seed, niter, init) on one machine; faiss's BLAS may round differently
    across thread counts or CPU/GPU, so bitwise equality is not promised across machines.
    """
    x = _as_matrix(x)
    n, d = x.shape
    if n < 1:
        raise ValueError("train_kmeans needs at least one row")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if niter < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {sorted(INIT_METHODS)}, got {init!r}")
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu is None:
        gpu = n_gpus > 0
    elif gpu and n_gpus == 0:
        raise RuntimeError("gpu=True but faiss sees no GPU (faiss-cpu build or no CUDA device)")

    sample = training_sample(n, max_train_points, seed)
    train = x if sample is None else x[sample]
    if spherical:
        train = _normalized(train)
    n_train = train.shape[0]
    k = min(k, n_train)

    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        gpu=bool(gpu),
        # Never let faiss subsample behind our back: every training row is used.
        max_points_per_centroid=n_train,
        # Few points per centroid is expected for upper hierarchy levels; don't warn.
        min_points_per_centroid=1,
        init_method=INIT_METHODS[init],
    )
    km.train(train)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    if spherical:
        faiss.normalize_L2(centroids)  # faiss already does; make the contract explicit
    return centroids


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    *,
    spherical: bool = True,
    batch_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row: ``(labels int64, distances float32)``, each of length n.

    Distance is ``1 - cosine similarity`` when ``spherical`` (rows are normalised batch by batch,
    centroids once), else squared L2. Rows go through an exact faiss flat index (``IndexFlatIP``
    / ``IndexFlatL2``) ``batch_size`` at a time, so extra memory is one normalised batch plus its
    results, whatever n is.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d), got shape {x.shape}")
    c = _as_matrix(centroids)
    if c.shape[0] < 1 or c.shape[1] != x.shape[1]:
        raise ValueError(f"centroids {c.shape} do not fit rows of dimension {x.shape[1]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if spherical:
        c = _normalized(c)
        index = faiss.IndexFlatIP(c.shape[1])
    else:
        index = faiss.IndexFlatL2(c.shape[1])
    index.add(c)

    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = x[start : start + batch_size]
        batch = _normalized(batch) if spherical else _as_matrix(batch)
        dist, lab = index.search(batch, 1)
        labels[start : start + len(batch)] = lab[:, 0]
        distances[start : start + len(batch)] = 1.0 - dist[:, 0] if spherical else dist[:, 0]
    return labels, distances


def cluster_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    """Rows per cluster, length ``k`` (empty clusters count 0)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)


def _group_starts(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For labels sorted so equal ones are adjacent: (start position of each run, run id per
    position). ``rank within cluster = position - starts[run_id]``."""
    n = len(sorted_labels)
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        np.not_equal(sorted_labels[1:], sorted_labels[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    run_id = np.cumsum(new) - 1
    return starts, run_id


def _take_ranked(order: np.ndarray, labels: np.ndarray, quota: np.ndarray | int) -> np.ndarray:
    """Given ``order`` (row ids grouped by label, best first inside each group), keep the first
    ``quota`` rows of each group (``quota`` an int, or an array indexed by label). Sorted ids."""
    sorted_labels = labels[order]
    starts, run_id = _group_starts(sorted_labels)
    rank = np.arange(len(order)) - starts[run_id]
    cap = quota if np.isscalar(quota) else np.asarray(quota)[sorted_labels]
    return np.sort(order[rank < cap]).astype(np.int64, copy=False)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("labels must be a 1-D integer array")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (faiss reports -1 for rows it could not assign)")
    return labels


def _farthest_points(xs: np.ndarray, m: int) -> np.ndarray:
    """Greedy farthest-point traversal of ``xs`` (rows ordered closest-to-centroid first):
    start at row 0, then repeatedly take the row farthest (Euclidean) from everything taken so
    far. O(m * len(xs) * d) time, O(len(xs)) extra memory besides the gathered rows."""
    xs = xs.astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", xs, xs)
    picked = np.empty(m, dtype=np.int64)
    picked[0] = 0
    min_d = sq + sq[0] - 2.0 * (xs @ xs[0])
    min_d[0] = -np.inf
    for i in range(1, m):
        j = int(np.argmax(min_d))  # ties: the earlier row, i.e. the one closer to the centroid
        picked[i] = j
        np.minimum(min_d, sq + sq[j] - 2.0 * (xs @ xs[j]), out=min_d)
        min_d[picked[: i + 1]] = -np.inf
    return picked


def balanced_select(
    labels: np.ndarray,
    distances: np.ndarray,
    per_cluster: int,
    *,
    strategy: str = "closest",
    seed: int = 0,
    x: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (sorted, int64) of at most ``per_cluster`` rows from every cluster.

    Clusters with ``per_cluster`` rows or fewer are kept whole; that is what makes the result
    balanced: big clusters are cut down to the cap, rare ones are not diluted further.

    Strategies, inside each cluster that is over the cap:

    - ``closest``: the rows nearest their centroid (most typical), ties broken by row index.
    - ``random``: a seeded uniform sample.
    - ``spread``: greedy farthest-point (diversity) traversal in the rows of ``x``: start at the
      row closest to the centroid, then keep adding the row farthest from all rows taken.
      Euclidean on ``x`` as given, so pass L2-normalised features for cosine geometry.
      O(per_cluster * cluster_size * d) per cluster.

    ``closest`` and ``random`` are one sort over all rows (``np.lexsort`` by (label, distance),
    then rank within each label run), about a second for 1M rows.
    """
    labels = _check_labels(labels)
    distances = np.asarray(distances)
    if distances.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and distances {distances.shape} differ")
    if per_cluster < 0:
        raise ValueError(f"per_cluster must be >= 0, got {per_cluster}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = len(labels)
    if n == 0 or per_cluster == 0:
        return np.empty(0, dtype=np.int64)

    if strategy == "random":
        perm = np.random.default_rng(seed).permutation(n)
        order = perm[np.argsort(labels[perm], kind="stable")]
        return _take_ranked(order, labels, per_cluster)

    order = np.lexsort((distances, labels))  # stable: equal distances stay in index order
    if strategy == "closest":
        return _take_ranked(order, labels, per_cluster)

    # spread
    if x is None:
        raise ValueError("strategy='spread' needs the feature rows x")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"x must be (n, d) with n={n}, got {x.shape}")
    starts, _ = _group_starts(labels[order])
    ends = np.append(starts[1:], n)
    keep = [order[s:e] for s, e in zip(starts, ends, strict=True) if e - s <= per_cluster]
    for s, e in zip(starts, ends, strict=True):
        if e - s > per_cluster:
            members = order[s:e]
            keep.append(members[_farthest_points(x[members], per_cluster)])
    return np.sort(np.concatenate(keep)).astype(np.int64, copy=False)


def hierarchical_kmeans(
    x: np.ndarray,
    levels: list[int],
    *,
    spherical: bool = True,
    seed: int = 0,
    niter: int = 20,
    max_train_points: int | None = None,
    init: str = "random",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hierarchical k-means à la Vo et al. 2024 ("Automatic data curation for self-supervised
    learning"): level 1 clusters the rows of ``x`` into ``levels[0]`` clusters, level 2 clusters
    the level-1 centroids into ``levels[1]`` clusters, and so on.

    Returns one ``(centroids, labels)`` per level, where ``labels`` maps each item of the
    previous level (rows of ``x`` for level 1, level-(i-1) centroids for level i) to a centroid
    of this level. Each level's ``k`` is clamped to its number of items. Level ``i`` uses seed
    ``seed + i``. The plain variant: no resampling steps between levels (Vo et al. add those to
    make upper-level centroids even more uniform). ``max_train_points`` only bites at level 1.
    """
    if not levels or any(k < 1 for k in levels):
        raise ValueError(f"levels must be a non-empty list of positive ints, got {levels}")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    items = x
    for i, k in enumerate(levels):
        centroids = train_kmeans(
            items,
            k,
            spherical=spherical,
            seed=seed + i,
            niter=niter,
            max_train_points=max_train_points,
            init=init,
        )
        labels, _ = assign(items, centroids, spherical=spherical)
        out.append((centroids, labels))
        items = centroids
    return out


def water_fill(capacities: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` across bins as evenly as possible without exceeding any capacity
    (max-min fair): bins that hold less than an even share are filled, the rest share what is
    left equally; the remainder of the integer division goes one each to the largest bins.
    Returns int64 quotas summing to ``min(total, capacities.sum())``."""
    caps = np.asarray(capacities, dtype=np.int64)
    if caps.size and caps.min() < 0:
        raise ValueError("capacities must be >= 0")
    total = int(min(max(total, 0), int(caps.sum())))
    quota = np.zeros(len(caps), dtype=np.int64)
    if total == 0:
        return quota
    order = np.argsort(caps, kind="stable")
    c = caps[order]
    prefix = np.concatenate(([0], np.cumsum(c)[:-1]))
    bins_left = len(c) - np.arange(len(c))
    # Filling the smallest bins whole is a prefix of the sorted order: once a bin exceeds the
    # even share of what is left, every larger bin does too.
    fits = c <= (total - prefix) // bins_left
    p = len(c) if fits.all() else int(np.argmin(fits))
    quota[order[:p]] = c[:p]
    rest = order[p:]
    if len(rest):
        remaining = total - int(c[:p].sum())
        share, extra = divmod(remaining, len(rest))
        quota[rest] = share
        if extra:
            quota[rest[len(rest) - extra :]] += 1  # each of these has capacity >= share + 1
    return quota


def hierarchical_balanced_select(
    x: np.ndarray,
    levels: list[int],
    target_size: int,
    *,
    seed: int = 0,
    spherical: bool = True,
    niter: int = 20,
    max_train_points: int | None = None,
    init: str = "random",
) -> np.ndarray:
    """Vo et al. style balanced sampling: ``target_size`` rows (sorted indices) spread as evenly
    as possible over the top-level clusters of :func:`hierarchical_kmeans`, then down the tree.

    1. Cluster hierarchically with ``levels`` (finest first). Every cluster's capacity is the
       number of rows of ``x`` under it.
    2. Split ``target_size`` across the top-level clusters with :func:`water_fill`: clusters
       smaller than an even share are kept whole, the others get equal shares.
    3. Recursively, split each cluster's quota across its child clusters the same way, down to
       the level-1 clusters.
    4. Inside each level-1 cluster draw its quota uniformly at random (seeded).

    Returns exactly ``target_size`` rows when ``target_size <= len(x)`` (quotas never exceed a
    capacity and always sum to the parent's quota), all rows otherwise.
    """
    if target_size < 0:
        raise ValueError(f"target_size must be >= 0, got {target_size}")
    x = np.asarray(x)
    n = x.shape[0]
    if target_size >= n:
        return np.arange(n, dtype=np.int64)
    if target_size == 0:
        return np.empty(0, dtype=np.int64)
    tree = hierarchical_kmeans(
        x,
        levels,
        spherical=spherical,
        seed=seed,
        niter=niter,
        max_train_points=max_train_points,
        init=init,
    )
    return select_from_tree(tree, target_size, seed=seed)


def upper_levels(
    centroids: np.ndarray,
    levels: list[int],
    *,
    spherical: bool = True,
    seed: int = 0,
    niter: int = 20,
    init: str = "random",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels 2.. of :func:`hierarchical_kmeans` from level-1 ``centroids`` alone (level ``i``
    seeded ``seed + i - 1``, as there). What the pool-scale path needs: level 1 is trained on a
    sample and assigned by a Ray Data pass, so no row embedding has to reach the driver; the
    upper levels cluster only centroids (``levels[0] x dim``)."""
    if not levels:
        return []
    return hierarchical_kmeans(
        centroids, levels, spherical=spherical, seed=seed + 1, niter=niter, init=init
    )


def select_from_tree(
    tree: list[tuple[np.ndarray, np.ndarray]], target_size: int, *, seed: int = 0
) -> np.ndarray:
    """Steps 2-4 of :func:`hierarchical_balanced_select` on a built tree: ``tree[0]`` is the
    level-1 ``(centroids, labels of every row)``, each later entry maps the previous level's
    centroids to its own. Returns sorted row indices (all rows when ``target_size`` >= rows)."""
    labels1 = np.asarray(tree[0][1], dtype=np.int64)
    n = len(labels1)
    if target_size >= n:
        return np.arange(n, dtype=np.int64)
    if target_size <= 0:
        return np.empty(0, dtype=np.int64)
    # Bottom-up capacities: rows under every cluster of every level.
    caps = [cluster_sizes(labels1, len(tree[0][0]))]
    for centroids, labels in tree[1:]:
        caps.append(
            np.bincount(labels, weights=caps[-1], minlength=len(centroids)).astype(np.int64)
        )
    # Top-down quotas.
    quota = water_fill(caps[-1], target_size)
    for level in range(len(tree) - 1, 0, -1):
        child_of = tree[level][1]  # parent (this level) of each cluster one level down
        child_quota = np.zeros(len(child_of), dtype=np.int64)
        for parent in np.flatnonzero(quota):
            children = np.flatnonzero(child_of == parent)
            child_quota[children] = water_fill(caps[level - 1][children], int(quota[parent]))
        quota = child_quota
    # Random rows inside each level-1 cluster.
    perm = np.random.default_rng(seed).permutation(n)
    order = perm[np.argsort(labels1[perm], kind="stable")]
    return _take_ranked(order, labels1, quota)
