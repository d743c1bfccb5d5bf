"""Every shipped config loads; every bad value fails before any work, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.config import CurateConfig
from ingest.config import ImportConfig
from manifests.configs import ConfigError, load_config
from model.config import TrainConfig
from recaption.config import RecaptionConfig
from video_prep.config import VideoConfig
from video_prep.raw_config import RawVideoConfig
from vl3data.builder.config import BuildConfig
from vl3data.builder.plan import GpuRates

ROOT = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(ROOT.rglob("*.yaml"))
JOBS = {
    "curate": CurateConfig,
    "syn7m": CurateConfig,
    "video": VideoConfig,
    "import": ImportConfig,
    "recaption": RecaptionConfig,
    "train": TrainConfig,
    "build": BuildConfig,
    "gpu": GpuRates,  # configs/gpu_rates.yaml, what `vl3data build --plan --target-gpus` reads
}
# overlays (configs/models/) are loaded on top of the job config they are made for
OVERLAY_BASE = {"recaption": ROOT / "recaption_internvl2.yaml"}
DEFAULT_BASE = ROOT / "syn7m_filters.yaml"
CURATE = ROOT / "curate_coyo_cluster.yaml"


def base_of(path: Path) -> Path | None:
    if path.parent.name != "models":
        return None
    return OVERLAY_BASE.get(path.stem.split("_", 1)[0], DEFAULT_BASE)


def job_of(path: Path) -> type:
    base = base_of(path)
    if not base and path.stem.startswith("video_raw_"):  # the raw-video job, not "video"
        return RawVideoConfig
    return job_of(base) if base else JOBS[path.stem.split("_", 1)[0]]


def files_for(path: Path) -> list[Path]:
    base = base_of(path)
    return [base, path] if base else [path]


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(job_of(path), files_for(path))
    assert cfg.name
    if isinstance(cfg, BuildConfig):  # and every job config inside it
        from vl3data.builder.graph import make_graph

        assert make_graph(cfg)


@pytest.mark.parametrize(
    "override,field",
    [
        ("input.kind=ftp", "input.kind"),
        ("input.partition_size=0", "input.partition_size"),
        ("input.max_partitions=0", "input.max_partitions"),
        ("input.nope=1", "input.nope"),
        ("filters.max_aspect=0.1", "filters.max_aspect"),
        ("filters.min_side=big", "filters.min_side"),
        ("download.concurrency=0", "download.concurrency"),
        ("decode.jpeg_quality=101", "decode.jpeg_quality"),
        ("shards.subset=a/b", "shards.subset"),
        ("log_level=LOUD", "log_level"),
        ("verify=true", "verify"),
        ("aesthetic.enabled=true", "aesthetic.enabled"),
        ("cluster.strategy=best", "cluster.strategy"),
        ("similarity.keep_top_fraction=1.5", "similarity.keep_top_fraction"),
        ("clip.backend=lavis", "clip.backend"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, CURATE, [override])
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)


def test_cli_fails_before_work_with_the_field(tmp_path, capsys):
    from vl3data.cli import main

    out = tmp_path / "out"
    code = main(["curate", str(CURATE), "--set", "filters.min_aspect=-1", "--set", f"output={out}"])
    assert code == 2
    assert "filters.min_aspect" in capsys.readouterr().err
    assert not out.exists()
    code = main(["curate", str(CURATE), "--set", "output="])
    assert code == 2 and "output" in capsys.readouterr().err


def test_overlay_overrides_the_job_config():
    cfg = load_config(CurateConfig, [ROOT / "syn7m_filters.yaml", ROOT / "models" / "tiny.yaml"])
    assert cfg.clip.model.startswith("local-dir:") and cfg.clip.batch_size == 16
    assert cfg.clip.embeddings_dtype == "float16"  # kept from the job config
    assert cfg.aesthetic.min_score is None and cfg.aesthetic.keep_top_fraction == 0.8


def test_similarity_needs_captions():
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, ROOT / "syn7m_filters.yaml", ["caption.enabled=false"])
    assert err.value.field == "similarity.enabled"


@pytest.mark.parametrize(
    "override,field",
    [
        ("input.format=csv", "input.format"),
        ("frames.fps=0", "frames.fps"),
        ("frames.max_frames=0", "frames.max_frames"),
        ("frames.decode_threads=-1", "frames.decode_threads"),
        ("input.max_partitions=0", "input.max_partitions"),
        ("clips.max_len_s=0", "clips.max_len_s"),
        ("tasks=[caption,caption]", "tasks"),
        ("grounding.questions=[when]", "grounding.questions[0]"),
        ("streaming.max_frames=0", "streaming.max_frames"),
    ],
)
def test_bad_video_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(VideoConfig, ROOT / "video_demo.yaml", [override])
    assert err.value.field == field
