"""URL pool -> verified images in WebDataset shards: ``vl3data curate`` vs img2dataset.

``--inputs`` JPEGs of exactly 640x480, cut from the real sample photos (``pools.crops``), are
served by a plain ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (a thread of this process,
HTTP/1.0: one connection per request for both sides). A parquet of ``url, text, width, height``
lists them. Then, as whole processes, on the same cores, in the same run (the order alternates
between repeats):

- ours: ``vl3data curate configs/curate_local.yaml --set input.kind=url_parquet ...`` on an
  embedded Ray with ``--processes`` CPUs, partitions of ``--partition-size`` URLs, each
  partition task downloading with ``download.concurrency = --threads``; the first stage checks
  the declared shape, downloads, probes the header and decodes the pixels (verify, draft mode)
  and keeps the original bytes;
- img2dataset 1.47 (``.venv-img2dataset``, ``make setup-img2dataset``): ``--processes_count``
  ``--processes``, ``--thread_count --threads``, ``--number_sample_per_shard
  --partition-size`` (its shard is its unit of work, as a partition is ours), ``--resize_mode
  no --skip_reencode True`` (it decodes each image with OpenCV and keeps the original bytes),
  its other options at their defaults, wandb off.

Images/s = images found in the output tars (every tar opened and counted) / whole-process wall
seconds, start-up included; our stats.json ``ray_start_s``, ``wall_s`` and per-stage
``timings_s`` are reported too. Without ``.venv-img2dataset`` only ours runs (said in the output).

    .venv/bin/python bench/bench_download.py [--inputs 3000] [--repeat 3] [--partition-size 500]
        [--processes 2] [--threads 32] [--no-img2dataset]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, count_tar_images, curate_cmd, loadavg, median, run_timed
from pools import crops

IMG2DATASET = ROOT / ".venv-img2dataset" / "bin" / "img2dataset"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SIZE = (640, 480)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs when 64 clients connect at once; a dropped
    # SYN costs the client a 1-s retransmit, which would measure the server, not the clients
    request_queue_size = 1024


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@contextmanager
def serve(folder: Path):
    """``folder`` over HTTP on 127.0.0.1 (an ephemeral port); yields the base URL."""

    def handler(*a, **kw):
        return _Quiet(*a, directory=str(folder), **kw)

    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


NGINX_CONF = """daemon off;
{user_line}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@contextmanager
def serve_nginx(folder: Path):
    """``folder`` served by Debian's nginx (one worker process, loopback only): a server that
    is not the bottleneck, so the clients are what is measured. Yields the base URL."""
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = folder.parent / "nginx"
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    # as root, nginx's worker would drop to "nobody", which cannot read a private temp folder
    user_line = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=folder, user_line=user_line))
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not start: {(tmp / 'nginx-error.log').read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def write_url_pool(tmp: Path, n: int) -> tuple[Path, Path]:
    """``n`` 640x480 JPEGs under ``tmp/www/img`` and ``tmp/pool.parquet`` (the URLs' paths;
    the host is filled in by :func:`with_host` once the server has a port)."""
    www = tmp / "www" / "img"
    www.mkdir(parents=True)
    names = []
    for i, data in enumerate(crops(n, SIZE)):
        name = f"{i:07d}.jpg"
        (www / name).write_bytes(data)
        names.append(name)
    table = pa.table(
        {
            "url": [f"/img/{x}" for x in names],
            "text": [f"photo number {i}" for i in range(n)],
            "width": pa.array([SIZE[0]] * n, pa.int32()),
            "height": pa.array([SIZE[1]] * n, pa.int32()),
        }
    )
    path = tmp / "paths.parquet"
    pq.write_table(table, path)
    return tmp / "www", path


def with_host(paths: Path, base: str, out: Path) -> Path:
    t = pq.read_table(paths)
    urls = pa.array([base + p for p in t["url"].to_pylist()], pa.string())
    pq.write_table(t.set_column(0, "url", urls), out)
    return out


def run_ours(pool: Path, out: Path, args) -> dict:
    cmd = curate_cmd(
        [
            "input.kind=url_parquet",
            f"input.path={pool}",
            f"output={out}",
            f"input.partition_size={args.partition_size}",
            f"download.concurrency={args.threads}",
            "download.allow_addresses=[127.0.0.1/32]",
            f"ray.num_cpus={args.processes}",
        ]
    )
    r = run_timed(cmd)
    stats = json.loads((out / "stats.json").read_text())
    images = count_tar_images(out / "shards")
    return {
        "wall_s": round(r["wall_s"], 2),
        "images": images,
        "img_per_s": round(images / r["wall_s"], 1),
        "kept": stats["kept"],
        "errors": stats["error"],
        "stats_wall_s": stats["wall_s"],
        "ray_start_s": stats["ray_start_s"],
        "timings_s": {k: round(v, 2) for k, v in stats["timings_s"].items()},
    }


def run_img2dataset(pool: Path, out: Path, args) -> dict:
    cmd = [
        str(IMG2DATASET),
        "--url_list",
        str(pool),
        "--input_format",
        "parquet",
        "--url_col",
        "url",
        "--caption_col",
        "text",
        "--output_format",
        "webdataset",
        "--processes_count",
        str(args.processes),
        "--thread_count",
        str(args.threads),
        "--number_sample_per_shard",
        str(args.partition_size),
        "--resize_mode",
        "no",
        "--skip_reencode",
        "True",
        "--enable_wandb",
        "False",
        "--output_folder",
        str(out),
    ]
    r = run_timed(cmd)
    images = count_tar_images(out)
    successes = 0
    for f in out.glob("*_stats.json"):
        successes += json.loads(f.read_text()).get("successes", 0)
    return {
        "wall_s": round(r["wall_s"], 2),
        "images": images,
        "img_per_s": round(images / r["wall_s"], 1),
        "successes": successes,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; median reported")
    ap.add_argument("--partition-size", type=int, default=500, help="= img2dataset's shard size")
    ap.add_argument("--processes", type=int, default=2, help="Ray CPUs = img2dataset processes")
    ap.add_argument("--threads", type=int, default=32, help="download threads per worker")
    ap.add_argument("--no-img2dataset", action="store_true", help="run ours only")
    ap.add_argument(
        "--server",
        choices=("python", "nginx"),
        default="python",
        help="python: http.server in this process (shares the 2 cores); nginx: Debian's nginx",
    )
    args = ap.parse_args(argv)

    peer = IMG2DATASET.is_file() and not args.no_img2dataset
    note = None
    if not peer:
        note = (
            "img2dataset not run: "
            + ("--no-img2dataset" if args.no_img2dataset else f"{IMG2DATASET} is missing")
            + " (make setup-img2dataset); ours only"
        )
        print(note)
    load0 = loadavg()
    runs: dict[str, list[dict]] = {"ours": [], "img2dataset": []}
    with tempfile.TemporaryDirectory(prefix="bench_download_") as tmp_s:
        tmp = Path(tmp_s)
        www, paths = write_url_pool(tmp, args.inputs)
        with (serve_nginx if args.server == "nginx" else serve)(www) as base:
            pool = with_host(paths, base, tmp / "pool.parquet")
            sides = ["ours", "img2dataset"] if peer else ["ours"]
            for r in range(args.repeat):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    out = tmp / f"{side}{r}"
                    fn = run_ours if side == "ours" else run_img2dataset
                    res = fn(pool, out, args)
                    runs[side].append(res)
                    shutil.rmtree(out, ignore_errors=True)
                    print(
                        f"  run {r + 1} {side}: {res['images']} images in {res['wall_s']} s "
                        f"-> {res['img_per_s']} img/s"
                    )
    load1 = loadavg()

    def summary(side: str) -> dict | None:
        rs = runs[side]
        if not rs:
            return None
        return {
            "img_per_s": median([r["img_per_s"] for r in rs]),
            "wall_s": median([r["wall_s"] for r in rs]),
            "all_img_per_s": [r["img_per_s"] for r in rs],
            "all_complete": all(r["images"] == args.inputs for r in rs),
        }

    ours, peer_sum = summary("ours"), summary("img2dataset")
    res = {
        "bench": "download",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "inputs": args.inputs,
        "image_size": f"{SIZE[0]}x{SIZE[1]}",
        "repeat": args.repeat,
        "partition_size": args.partition_size,
        "processes": args.processes,
        "threads": args.threads,
        "server": args.server,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "ours": ours,
        "img2dataset": peer_sum,
        "ratio": (
            round(ours["img_per_s"] / peer_sum["img_per_s"], 3)
            if peer_sum and peer_sum["img_per_s"]
            else None  # the peer fetched nothing (its "all_complete" says so)
        ),
        "ours_ray_start_s": [r["ray_start_s"] for r in runs["ours"]],
        "ours_timings_s": runs["ours"][len(runs["ours"]) // 2]["timings_s"],
        "runs": runs,
        "note": note,
    }
    for side in ("ours", "img2dataset"):
        for r in runs[side]:
            if r["images"] != args.inputs:
                raise SystemExit(f"{side} wrote {r['images']} of {args.inputs} images: {r}")
    line = (
        f"{args.inputs} 640x480 JPEGs from 127.0.0.1, {args.processes} workers x {args.threads} "
        f"threads, median of {args.repeat}: ours {ours['img_per_s']} img/s "
        f"(waited {median(res['ours_ray_start_s']):.1f} s for its workers to start, included)"
    )
    if peer_sum:
        line += f", img2dataset {peer_sum['img_per_s']} img/s -> ours/img2dataset {res['ratio']}x"
    else:
        line += "; img2dataset not run"
    print(line)
    print(f"load {load0} -> {load1}; our stage seconds, summed over tasks: {res['ours_timings_s']}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
