"""k-means + balanced selection: ours (curation.clustering) vs raw faiss, and selection at 1M rows.

(a) Raw ``faiss.Kmeans(d, k, niter=niter, seed=seed).train(x)`` on seeded clustered data:
``n`` rows, ``--centres`` random unit centres plus Gaussian noise, L2-normalised (CLIP-like).
(b) Ours on the same array, same k and niter: ``train_kmeans`` + ``assign`` + ``balanced_select``
(the whole curation step, not just the training), so the ratio is everything we add on top of
faiss: the normalised copy, the assignment pass, the selection. Target <= 1.1x.
(c) ``balanced_select`` alone on 1M assignments (random labels over 10,000 clusters, random
distances), ``closest`` and ``random``. Target < 10 s each.

Raw faiss here is plain (L2) k-means, ours is spherical (the module default); on unit-norm rows
they do the same work per iteration. n <= 256 * k keeps faiss's own subsampling off in (a).

    .venv/bin/python bench/bench_kmeans.py [--n 200000] [--k 1000] [--niter 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import faiss
import numpy as np

from curation.clustering import assign, balanced_select, train_kmeans


def clustered_data(n: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    """``n`` unit rows around ``centres`` random unit centres (float32, generated in place)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d), dtype=np.float32)
    faiss.normalize_L2(c)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= noise
    x += c[rng.integers(0, centres, n)]
    faiss.normalize_L2(x)
    return x


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--centres", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension noise std")
    ap.add_argument("--per-cluster", type=int, default=100)
    ap.add_argument("--select-n", type=int, default=1_000_000)
    ap.add_argument("--select-k", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (a) and (b), ABBA order")
    args = ap.parse_args(argv)

    threads = faiss.omp_get_max_threads()
    print(
        f"faiss {faiss.__version__}, {threads} OpenMP threads; n={args.n} d={args.d} "
        f"k={args.k} niter={args.niter} (faiss subsamples above {256 * args.k} rows)"
    )
    t0 = time.perf_counter()
    x = clustered_data(args.n, args.d, args.centres, args.noise, args.seed)
    t_data = time.perf_counter() - t0

    def raw() -> float:
        t0 = time.perf_counter()
        faiss.Kmeans(args.d, args.k, niter=args.niter, seed=args.seed).train(x)
        return time.perf_counter() - t0

    def ours() -> tuple[float, float, float, int]:
        t0 = time.perf_counter()
        centroids = train_kmeans(x, args.k, seed=args.seed, niter=args.niter)
        t1 = time.perf_counter()
        labels, distances = assign(x, centroids)
        t2 = time.perf_counter()
        picked = balanced_select(labels, distances, args.per_cluster)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, len(picked)

    # Rounds alternate raw/ours and ours/raw (ABBA), so warm-up and drift hit both alike.
    t_raw = t_train = t_assign = t_select = 0.0
    for r in range(args.rounds):
        for side in ("raw", "ours") if r % 2 == 0 else ("ours", "raw"):
            if side == "raw":
                t_raw += raw()
            else:
                tr, ta, ts, kept = ours()
                t_train, t_assign, t_select = t_train + tr, t_assign + ta, t_select + ts
    t_raw, t_train, t_assign, t_select = (
        t / args.rounds for t in (t_raw, t_train, t_assign, t_select)
    )
    t_ours = t_train + t_assign + t_select
    ratio = t_ours / t_raw
    print(
        f"(a) raw faiss.Kmeans.train: {t_raw:.1f} s | (b) ours train+assign+select: "
        f"{t_ours:.1f} s (train {t_train:.1f}, assign {t_assign:.1f}, select {t_select:.2f}; "
        f"kept {kept} of {args.n}; mean of {args.rounds} rounds) -> {ratio:.3f}x (target <= 1.1x)"
    )

    rng = np.random.default_rng(args.seed)
    sel_labels = rng.integers(0, args.select_k, args.select_n)
    sel_dist = rng.random(args.select_n, dtype=np.float32)
    select = {}
    for strategy in ("closest", "random"):
        t0 = time.perf_counter()
        kept = balanced_select(sel_labels, sel_dist, args.per_cluster // 2, strategy=strategy)
        select[strategy] = {"s": round(time.perf_counter() - t0, 3), "kept": len(kept)}
    print(
        f"(c) balanced_select on {args.select_n:,} rows / {args.select_k:,} clusters, "
        f"per_cluster={args.per_cluster // 2}: closest {select['closest']['s']:.2f} s, "
        f"random {select['random']['s']:.2f} s (target < 10 s)"
    )
    results = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "niter": args.niter,
        "rounds": args.rounds,
        "omp_threads": threads,
        "data_s": round(t_data, 1),
        "raw_faiss_train_s": round(t_raw, 2),
        "ours_s": round(t_ours, 2),
        "ours_train_s": round(t_train, 2),
        "ours_assign_s": round(t_assign, 2),
        "ours_select_s": round(t_select, 3),
        "ratio": round(ratio, 3),
        "select_1m": select,
    }
    print(
        json.dumps(
            {
                "bench": "kmeans",
                "machine": platform.processor() or platform.machine(),
                "faiss": faiss.__version__,
                "results": results,
            }
        )
    )
    return results


if __name__ == "__main__":
    main()
