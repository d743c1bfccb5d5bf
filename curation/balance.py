"""The global clustering step: k-means on the surviving CLIP embeddings, then a fixed number of
images per cluster (VL3-Syn7M's balanced, diverse selection).

Centroids are trained on a seeded sample of at most ``cluster.max_train_points`` embeddings (a
sample that fits one node); every live row is then assigned in a Ray Data pass over the
partitions, and the driver holds only an int and a float per row. Selection runs on those
assignments (``curation.clustering``); with ``cluster.levels`` the levels above the first cluster
the level-1 centroids only, so hierarchical selection too holds no embedding on the driver.
Results: ``OUT/clusters/centroids.npy`` (the artifact),
``cluster`` and ``cluster_dist`` columns for the ledger, and a drop list (``cluster_quota``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.config_models import ClusterConfig
from curation.passes import Drops, LoadPrevious, iter_live
from curation.stages.clip_embed import embedding_matrix
from engine.partitions import Partition
from engine.runner import run_partitions
from engine.workdir import WorkDir
from manifests.atomic import write_bytes, write_parquet
from manifests.marks import alive, set_column
from manifests.schema import EMBEDDING

CLUSTER_TABLE = "clusters.parquet"
#: faiss's own floor of training points per centroid (its k-means warns below it)
MIN_POINTS_PER_CENTROID = 39

log = logging.getLogger(__name__)


def check_training_size(n_train: int, n: int, k: int, cap: int | None) -> str | None:
    """A warning when k-means would fit ``k`` centroids on too few points to place them well,
    with the fix: a larger ``max_train_points`` when the sample was capped, else a smaller k."""
    if k < 1 or n_train >= MIN_POINTS_PER_CENTROID * k:
        return None
    need = MIN_POINTS_PER_CENTROID * k
    if cap is not None and n > n_train:
        fix = f"raise cluster.max_train_points to {min(need, n):,} (of {n:,} survivors)"
    else:
        fix = f"lower k to {max(1, n_train // MIN_POINTS_PER_CENTROID):,} or below"
    return (
        f"k-means fits {k:,} centroids on {n_train:,} points ({n_train / k:.1f} per centroid; "
        f"faiss asks for at least {MIN_POINTS_PER_CENTROID}): {fix}"
    )


@dataclass
class AssignClusters:
    """CPU stage: nearest centroid and its distance for every live row with an embedding."""

    centroids: np.ndarray
    spherical: bool = True
    name: str = "assign"

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curation import clustering

        labels = np.full(batch.num_rows, -1, np.int64)
        dists = np.full(batch.num_rows, np.nan, np.float32)
        ok = alive(batch) & pc.is_valid(batch[EMBEDDING]).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(ok)
        if rows.size:
            lab, dist = clustering.assign(
                embedding_matrix(batch, rows), self.centroids, spherical=self.spherical
            )
            labels[rows], dists[rows] = lab, dist
        batch = set_column(batch, "cluster", pa.array(labels, pa.int32(), mask=labels < 0))
        return set_column(
            batch, "cluster_dist", pa.array(dists, pa.float32(), mask=np.isnan(dists))
        )


def cluster_and_balance(
    last: WorkDir,
    base: WorkDir,
    drops: Drops,
    parts: Sequence[Partition],
    cfg: ClusterConfig,
    out_dir: Path,
    work_root: Path,
    progress: bool = True,
) -> dict:
    """Run the step (or reuse its results after a crash) and return stats for the report."""
    from curation import clustering

    table_path = work_root / CLUSTER_TABLE
    if table_path.is_file() and drops.exists("cluster"):
        return _stats(pq.read_table(table_path), cfg)

    def live(columns: list[str]):
        return iter_live(last, base, drops, parts, columns)

    ids, partitions = [], []
    for rows in live(["partition"]):
        ids += rows["id"].to_pylist()
        partitions += rows["partition"].to_pylist()
    n = len(ids)
    if n == 0:
        drops.write("cluster", [], "cluster", [])
        write_parquet(
            table_path,
            _table([], [], np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)),
        )
        return _stats(pq.read_table(table_path), cfg)
    rng = np.random.default_rng(cfg.seed)
    cap = cfg.max_train_points or n
    take = np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)
    sample, offset = [], 0
    for rows in live([EMBEDDING]):
        x = embedding_matrix(rows)
        local = take[(take >= offset) & (take < offset + len(x))] - offset
        sample.append(x[local])
        offset += len(x)
    train = np.concatenate(sample)
    k1 = cfg.levels[0] if cfg.levels else cfg.k
    warning = check_training_size(len(train), n, k1, cfg.max_train_points)
    if warning:
        log.warning(warning)

    if cfg.levels:  # hierarchical: the level-1 clusters are the ledger's clusters
        centroids = clustering.train_kmeans(
            train,
            min(cfg.levels[0], len(train)),
            spherical=cfg.spherical,
            seed=cfg.seed,
            niter=cfg.niter,
        )
    else:
        centroids = clustering.train_kmeans(
            train, min(cfg.k, len(train)), spherical=cfg.spherical, seed=cfg.seed, niter=cfg.niter
        )
    # assignment is a Ray Data pass over the partitions (it scales with the pool, training
    # does not); only 'spread' selection needs the vectors back on the driver
    assigned = WorkDir(work_root / "assign")
    run_partitions(
        assigned,
        parts,
        LoadPrevious(last, base, drops),
        [AssignClusters(centroids, cfg.spherical)],
        progress=progress,
        unit="images",
        drop_columns=("image", EMBEDDING, "thumb"),
    )
    labels, dists, full = [], [], []
    for p in parts:
        rows = assigned.read_partition(p.index, ["id", "status", "cluster", "cluster_dist"])
        if rows is None:
            continue
        rows = rows.filter(pa.array(alive(rows)))
        labels.append(rows["cluster"].to_numpy(zero_copy_only=False).astype(np.int64))
        dists.append(rows["cluster_dist"].to_numpy(zero_copy_only=False).astype(np.float32))
    if cfg.strategy == "spread" and not cfg.levels:
        full = [embedding_matrix(rows) for rows in live([EMBEDDING])]
    labels_all, dists_all = np.concatenate(labels), np.concatenate(dists)
    if len(labels_all) != n:  # both walks see the same live rows in the same order
        raise RuntimeError(f"cluster assignment covered {len(labels_all)} rows, expected {n}")
    if cfg.levels:
        # level 1 is what was just trained and assigned (the ledger's clusters); the levels
        # above cluster its centroids only, so no row embedding comes back to the driver
        upper = clustering.upper_levels(
            centroids, cfg.levels[1:], spherical=cfg.spherical, seed=cfg.seed, niter=cfg.niter
        )
        tree = [(centroids, labels_all), *upper]
        chosen = clustering.select_from_tree(tree, cfg.target_size, seed=cfg.seed)
    else:
        chosen = clustering.balanced_select(
            labels_all,
            dists_all,
            cfg.per_cluster,
            strategy=cfg.strategy,
            seed=cfg.seed,
            x=np.concatenate(full) if full else None,
        )
    selected = np.zeros(n, bool)
    selected[chosen] = True

    (out_dir / "clusters").mkdir(parents=True, exist_ok=True)
    buf = _npy_bytes(centroids.astype(np.float32))
    write_bytes(out_dir / "clusters" / "centroids.npy", buf)
    dropped = [i for i, keep in zip(ids, selected, strict=True) if not keep]
    drops.write("cluster", dropped, "cluster", ["cluster_quota"] * len(dropped))
    table = _table(ids, partitions, labels_all, dists_all, selected)
    write_parquet(table_path, table)  # last: its presence means the step is complete
    return _stats(table, cfg)


def _table(ids, partitions, labels, dists, selected) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "partition": pa.array(partitions, pa.int32()),
            "cluster": pa.array(labels, pa.int32()),
            "cluster_dist": pa.array(dists, pa.float32()),
            "selected": pa.array(selected, pa.bool_()),
        }
    )


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _stats(table: pa.Table, cfg: ClusterConfig) -> dict:
    labels = table["cluster"].to_numpy()
    sel = table["selected"].to_numpy(zero_copy_only=False)
    k = int(labels.max()) + 1 if len(labels) else 0
    return {
        "k": k,
        "per_cluster": cfg.per_cluster,
        "strategy": cfg.strategy if not cfg.levels else "hierarchical",
        "levels": cfg.levels,
        "sizes_before": np.bincount(labels, minlength=k).tolist(),
        "sizes_after": np.bincount(labels[sel], minlength=k).tolist(),
    }
