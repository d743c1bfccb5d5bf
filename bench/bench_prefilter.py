"""Pre-download filtering and URL / phash dedup of a COYO-shaped parquet: ours vs pandas.

A COYO-700M-shaped parquet (``url``, ``text``, ``width``, ``height``, ``image_phash``, the CLIP
similarities, ``aesthetic_score_laion_v2``, ``watermark_score``, the NSFW scores; about 12% of
the URLs repeated, a few percent of phashes shared by different URLs) is written at each size,
then judged by each side in a process of its own (so peak RSS is its own):

* ours: ``curation.prefilter.prefilter_pool`` over the real partition plan: three rules, exact
  URL dedup, phash dedup; spill buckets of ``--bucket-rows``.
* baseline: what a user writes: ``pandas.read_parquet`` of the same columns, a boolean mask,
  ``drop_duplicates`` on the URL, then on the phash (whole table in memory).

Both must drop the same number of rows (checked). Reported per side and size: rows/s, rows per
CPU-second (what "per core" means on a shared machine), peak RSS, and the RSS ratio between the
two sizes (flat memory: ours stays near 1, the whole-table baseline grows with the rows).
Target (issue 17): ours >= 1M rows/s per core at 10M rows, memory flat in the row count.

    .venv/bin/python bench/bench_prefilter.py [--sizes 1000000 10000000] [--bucket-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RULES = [
    {"column": "aesthetic_score_laion_v2", "op": ">=", "value": 4.5},
    {"column": "watermark_score", "op": "<=", "value": 0.5},
    {"column": "nsfw_score_opennsfw2", "op": "<=", "value": 0.3},
]


def write_coyo(path: Path, n: int, seed: int = 0, row_group: int = 1_000_000) -> None:
    """``n`` COYO-shaped rows: ~12% repeated URLs, ~3% of phashes shared across URLs."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, row_group):
        m = min(row_group, n - start)
        image = rng.integers(0, 4 * n, m)  # ~12% of the rows repeat an earlier URL
        host = pa.array(image % 211).cast(pa.string())
        ident = pa.array(image).cast(pa.string())
        url = pc.binary_join_element_wise(
            "https://cdn", host, ".example.com/photos/", ident, "/original.jpg?w=800", ""
        )
        same_look = rng.random(m) < 0.03  # another URL, the same picture (a re-upload)
        phash_of = np.where(same_look, image // 7, image * 7919 + 13).astype(np.uint64)
        phash = pc.utf8_lpad(pa.array(phash_of).cast(pa.string()), 16, "0")
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + m)),
                "url": url,
                "text": pc.binary_join_element_wise("a photo of thing ", ident, ""),
                "width": rng.integers(64, 2048, m),
                "height": rng.integers(64, 2048, m),
                "image_phash": phash,
                "clip_similarity_vitb32": rng.random(m, np.float32) * 0.4,
                "clip_similarity_vitl14": rng.random(m, np.float32) * 0.4,
                "nsfw_score_opennsfw2": rng.random(m, np.float32) ** 6,
                "nsfw_score_gantman": rng.random(m, np.float32) ** 6,
                "watermark_score": rng.random(m, np.float32) ** 4,
                "aesthetic_score_laion_v2": rng.normal(5.5, 0.8, m).astype(np.float32),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group)
    writer.close()


def run_ours(path: Path, work: Path, bucket_rows: int) -> int:
    from curation.config import InputConfig
    from curation.prefilter import prefilter_pool
    from curation.prefilter_config import PrefilterConfig
    from curation.sources.url_parquet import list_parquet_partitions

    parts = list_parquet_partitions(
        InputConfig(kind="url_parquet", path=str(path), partition_size=2000)
    )
    cfg = PrefilterConfig(
        rules=[dict(r) for r in RULES],
        dedup_url=True,
        phash_column="image_phash",
        bucket_rows=bucket_rows,
    )
    result = prefilter_pool(parts, "url", cfg, work)
    return sum(result["counts"].values())


def run_baseline(path: Path) -> int:
    import pandas as pd

    cols = ["url", "image_phash", *[r["column"] for r in RULES]]
    df = pd.read_parquet(path, columns=cols)
    n = len(df)
    df = df[
        (df.aesthetic_score_laion_v2 >= 4.5)
        & (df.watermark_score <= 0.5)
        & (df.nsfw_score_opennsfw2 <= 0.3)
    ]
    df = df.drop_duplicates("url").drop_duplicates("image_phash")
    return n - len(df)


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM). Not ``getrusage``'s ru_maxrss: Linux carries
    that one over ``exec`` from the parent, so a child would report the bench's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def side(name: str, path: Path, bucket_rows: int) -> dict:
    """One side, in this process: its wall and CPU time, its own peak RSS."""
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        if name == "ours":
            dropped = run_ours(path, Path(work) / "prefilter", bucket_rows)
        else:
            dropped = run_baseline(path)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_mb = peak_rss_kb() / 1024
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_mb, "dropped": dropped}


def in_child(name: str, path: Path, bucket_rows: int) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, {bench!r}); import bench_prefilter as b; "
        "from pathlib import Path; "
        "print(json.dumps(b.side({name!r}, Path({path!r}), {rows})))"
    ).format(bench=str(ROOT / "bench"), name=name, path=str(path), rows=bucket_rows)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs=2, default=[1_000_000, 10_000_000])
    ap.add_argument("--bucket-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=None, help="where the parquets go (default: a temp dir)")
    args = ap.parse_args(argv)
    results: dict = {"sizes": args.sizes, "bucket_rows": args.bucket_rows}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"coyo_{n}.parquet"
            write_coyo(path, n, args.seed)
            row: dict = {}
            for name in ("baseline", "ours"):
                r = in_child(name, path, args.bucket_rows)
                r["rows_per_s"] = n / r["wall_s"]
                r["rows_per_cpu_s"] = n / max(r["cpu_s"], 1e-9)
                row[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
            if row["ours"]["dropped"] != row["baseline"]["dropped"]:
                raise AssertionError(f"{n} rows: ours and the baseline disagree: {row}")
            path.unlink()
            results[str(n)] = row
    small, big = (results[str(n)] for n in args.sizes)
    for name in ("ours", "baseline"):
        results[f"{name}_rss_ratio"] = round(
            big[name]["peak_rss_mb"] / small[name]["peak_rss_mb"], 3
        )
    results["speed_ratio"] = round(big["ours"]["rows_per_s"] / big["baseline"]["rows_per_s"], 3)
    b, o = big["baseline"], big["ours"]
    print(
        f"{args.sizes[1]:,} rows: ours {o['rows_per_s'] / 1e6:.2f}M rows/s "
        f"({o['rows_per_cpu_s'] / 1e6:.2f}M per CPU-s), peak {o['peak_rss_mb']:.0f} MB "
        f"(x{results['ours_rss_ratio']} of {args.sizes[0]:,} rows) | pandas "
        f"{b['rows_per_s'] / 1e6:.2f}M rows/s ({b['rows_per_cpu_s'] / 1e6:.2f}M per CPU-s), "
        f"peak {b['peak_rss_mb']:.0f} MB (x{results['baseline_rss_ratio']}) | "
        f"speed {results['speed_ratio']}x; {o['dropped']:,} dropped by each"
    )
    print(json.dumps({"bench": "prefilter", "machine": platform.machine(), "results": results}))
    return results


if __name__ == "__main__":
    main()
