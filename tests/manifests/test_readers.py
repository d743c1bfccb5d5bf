"""Every kind of shard set we write (image, video, text, mixed) loads in webdataset, in Ray Data
and in Hugging Face ``datasets``, and each gives what our own reader gives: the same samples,
keys, JSON records and media bytes (DESIGN §4). The sets are made by the real jobs: ``curate``
(JPEG and PNG members), ``video`` (clips of different frame counts) and ``mix`` (a text-only
mixture, and one of images, videos and text)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image

from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config
from manifests.dataset import read_dataset_json, shard_paths
from manifests.readers import hf_dataset, member_names, ray_dataset
from manifests.shards import iter_samples
from mixtures.materialise import materialise
from mixtures.recipe import load_recipe
from video_prep.config import VideoConfig
from video_prep.job import run_video_job
from video_prep.sample_videos import pattern_video

KINDS = ("image", "video", "text", "mixed")
TEXTS = [f"Question {i}?" for i in range(5)]


def _image_set(root: Path, photos: dict) -> Path:
    pool = root / "pool"
    pool.mkdir()
    for i, name in enumerate(sorted(photos)[:5]):
        im = Image.fromarray(photos[name])
        im.thumbnail((128, 128))
        if i % 2:  # a PNG stays a PNG: its sample has `png`, not `jpg`
            im.save(pool / f"{name}.png")
        else:
            im.save(pool / f"{name}.jpg", quality=85)
        if i == 0:
            (pool / f"{name}.txt").write_text("An alt-text.")
    out = root / "image"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={out}", "input.partition_size=3"],
    )
    curate(cfg, progress=False)
    return out


def _video_set(root: Path) -> Path:
    videos = root / "videos"
    videos.mkdir()
    pattern_video(videos / "a.mp4", 3, size="96x72")
    pattern_video(videos / "b.mp4", 7, size="96x72")
    ann = root / "ann.jsonl"
    lines = [
        {"video": "a.mp4", "segments": [{"start": 0.0, "end": 3.0, "text": "A clock."}]},
        {
            "video": "b.mp4",
            "segments": [
                {"start": 0.0, "end": 2.0, "text": "Colour bars."},
                {"start": 2.0, "end": 7.0, "text": "The clock counts on."},
            ],
        },
    ]
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = root / "video"
    sets = [
        f"output={out}",
        f"input.videos={videos}",
        f"input.annotations={ann}",
        "input.partition_size=1",
        "frames.max_side=64",
    ]
    run_video_job(load_config(VideoConfig, "configs/video_demo.yaml", sets), progress=False)
    return out / "caption"


def _mixture(root: Path, name: str, sources: list[dict], max_count: int) -> Path:
    path = root / f"{name}.yaml"
    group = {"name": "all", "sources": sources}
    path.write_text(yaml.safe_dump({"stage": name, "seed": 5, "groups": [group]}))
    out = root / name
    materialise(load_recipe(path), out, shuffle_buffer=100, max_count=max_count)
    return out


def build_sets(root: Path, photos: dict) -> dict[str, Path]:
    """One set of each kind the real jobs write, under ``root``: image (curate), video (the
    video job's caption set; its ``streaming`` and ``grounding`` sets as well), text and mixed
    (mix: images, caption and streaming videos, text). Made once per session (the
    ``job_sets`` fixture of tests/conftest.py), for these tests and tests/export."""
    text = root / "text.jsonl"
    text.write_text(
        "".join(
            json.dumps(
                {"conversations": [{"from": "human", "value": t}, {"from": "gpt", "value": "Yes."}]}
            )
            + "\n"
            for t in TEXTS
        )
    )
    image, video = _image_set(root, photos), _video_set(root)
    text_src = {"name": "chat", "path": str(text), "modality": "text", "strategy": "all"}
    stream = video.parent / "streaming"
    return {
        "image": image,
        "video": video,
        "streaming": stream,
        "grounding": video.parent / "grounding",
        "text": _mixture(root, "text", [text_src], max_count=2),
        "mixed": _mixture(
            root,
            "mixed",
            [
                {"name": "img", "path": str(image), "modality": "image", "strategy": "all"},
                {"name": "vid", "path": str(video), "modality": "video", "strategy": "all"},
                {"name": "stream", "path": str(stream), "modality": "video", "strategy": "all"},
                text_src,
            ],
            max_count=4,
        ),
    }


@pytest.fixture(scope="module")
def sets(job_sets) -> dict[str, Path]:
    return {kind: job_sets[kind] for kind in KINDS}


def ours(out: Path) -> dict[str, dict]:
    """Our own reader's samples by key: members only (``__url__`` left out)."""
    samples = {}
    for s in iter_samples(shard_paths(out)):
        samples[s["__key__"]] = {k: v for k, v in s.items() if not k.startswith("__")}
    assert samples and len(samples) == read_dataset_json(out)["samples"]
    return samples


def kind_of(sample: dict) -> str:
    if "f0000.jpg" in sample:
        return "video"
    return "image" if set(sample) - {"json"} else "text"


def test_the_sets_hold_every_kind_of_sample(sets):
    """What makes the table readers stumble is really there: members that vary per sample."""
    image = ours(sets["image"]).values()
    assert {"jpg" in s for s in image} == {True, False} and any("png" in s for s in image)
    frames = [sum(k.startswith("f") for k in s) for s in ours(sets["video"]).values()]
    assert len(set(frames)) > 1 and min(frames) >= 1
    assert all(set(s) == {"json"} for s in ours(sets["text"]).values())
    mixed = ours(sets["mixed"]).values()
    assert {kind_of(s) for s in mixed} == {"image", "video", "text"}
    assert read_dataset_json(sets["mixed"])["modality"] == "mixed"
    assert len(shard_paths(sets["mixed"])) > 1
    names = member_names(shard_paths(sets["mixed"]))
    assert {"json", "jpg", "png", "f0000.jpg"} <= set(names) and max(frames) == sum(
        n.startswith("f") for n in names
    )


@pytest.mark.parametrize("kind", KINDS)
def test_webdataset(sets, kind):
    import webdataset as wds

    expected = ours(sets[kind])
    paths = [str(p) for p in shard_paths(sets[kind])]
    got = list(wds.WebDataset(paths, shardshuffle=False))
    assert [s["__key__"] for s in got] == list(expected)
    for s in got:
        assert {k: v for k, v in s.items() if not k.startswith("__")} == expected[s["__key__"]]
    for s in wds.WebDataset(paths, shardshuffle=False).decode("pil"):  # decoded, every kind
        for k, v in s.items():
            if k.endswith((".jpg", "jpg", "png")):
                assert isinstance(v, Image.Image)
        assert isinstance(s["json"], dict)


@pytest.mark.parametrize("kind", KINDS)
def test_ray_data(sets, kind):
    expected = ours(sets[kind])
    ds = ray_dataset(sets[kind])
    rows = ds.take_all()
    assert len(rows) == len(expected) == ds.count()
    names = set(member_names(shard_paths(sets[kind])))
    for row in rows:
        assert set(row) == names | {"__key__", "__url__"}  # one schema for every row
        got = {k: v for k, v in row.items() if not k.startswith("__") and v is not None}
        assert got == expected[row["__key__"]]
    # the blocks convert to Arrow as they are: binary columns, null where a member is missing
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for name in names:
            assert str(table.schema.field(name).type) in ("binary", "null"), name
        assert str(table.schema.field("json").type) == "binary"


def same_record(got, want) -> bool:
    """Equal, floats to 10 decimal places: ``datasets``' ``Json`` type stores a record with
    pandas' ujson, which writes 10 decimals (``1.5058823823928833`` -> ``1.5058823824``)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same_record(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same_record(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-10)
    return type(got) is type(want) and got == want


@pytest.mark.parametrize("kind", KINDS)
def test_hugging_face_datasets(sets, kind, tmp_path):
    expected = ours(sets[kind])
    ds = hf_dataset(sets[kind], decode=False, cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(expected)
    for row in ds:
        want = expected[row["__key__"]]
        assert same_record(row["json"], json.loads(want["json"]))  # whatever its task
        media = {
            k: v["bytes"]
            for k, v in row.items()
            if not k.startswith("__") and k != "json" and v is not None
        }
        assert media == {k: v for k, v in want.items() if k != "json"}
    if kind != "text":  # decoded, the images are PIL images
        row = next(r for r in hf_dataset(sets[kind], cache_dir=str(tmp_path / "hf2"))
                   if r.get("jpg") is not None or r.get("f0000.jpg") is not None)  # fmt: skip
        image = row.get("jpg") or row.get("f0000.jpg")
        assert isinstance(image, Image.Image) and image.size[0] > 0
    streamed = list(hf_dataset(sets[kind], decode=False, streaming=True))
    assert [r["__key__"] for r in streamed] == list(expected)
