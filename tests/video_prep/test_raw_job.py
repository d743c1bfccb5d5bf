"""The raw-video job's stages without a model: every file a ledger row (broken, audio-only, a
link out of the folder), clips with their own frames, and the three tasks' records from clip
captions, rendered through the VideoLLaMA3 processor with our chat template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.partitions import Partition
from manifests.chat import processor_inputs
from manifests.configs import load_config
from video_prep.raw_config import RawVideoConfig
from video_prep.raw_job import ROW_STRIDE, CutScenes, list_raw_partitions, load_raw_partition
from video_prep.raw_samples import CaptionedClip, raw_samples, windows
from video_prep.sample_videos import broken_videos, cuts_video
from video_prep.samples import ClipFrames

CAPTIONS = [
    "Colour bars fill the screen.",
    "A clock counts over a test pattern.",
    "Coloured stripes scroll by.",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict[str, str], list[float]]:
    root = tmp_path_factory.mktemp("raw_videos")
    videos = root / "videos"
    expected = broken_videos(videos)
    cuts = cuts_video(videos / "shots.mp4", [3.0, 2.48, 4.0])
    cuts_video(root / "outside.mp4", [1.0])
    (videos / "escape.mp4").symlink_to(root / "outside.mp4")  # a link out of the input folder
    expected["escape.mp4"] = "outside_root"
    return videos, expected, cuts


def config(videos: Path, *sets: str) -> RawVideoConfig:
    return load_config(
        RawVideoConfig,
        "configs/video_raw_demo.yaml",
        [f"input.videos={videos}", "output=/tmp/unused", "frames.max_side=64", *sets],
    )


@pytest.fixture(scope="module")
def scenes(folder) -> list[dict]:
    videos, _, _ = folder
    cfg = config(videos, "input.partition_size=10")
    (part,) = list_raw_partitions(cfg)
    rows = load_raw_partition(part, str(videos), "video-raw:test")
    return CutScenes(cfg)(rows).to_pylist()


def test_every_file_is_a_row_and_bad_ones_say_why(folder, scenes):
    _, expected, _ = folder
    by_file: dict[str, list[dict]] = {}
    for r in scenes:
        by_file.setdefault(r["source_key"], []).append(r)
    assert set(by_file) == {*expected, "shots.mp4"}
    for name, reason in expected.items():
        (row,) = by_file[name]
        assert (row["status"], row["video_reason"], row["frames"]) == ("error", reason, [])
        assert row["clip_index"] is None
    assert by_file["audio_only.mp4"][0]["video_stage"] == "probe"


def test_a_video_becomes_one_row_per_clip_with_its_own_frames(folder, scenes):
    _, _, cuts = folder
    rows = [r for r in scenes if r["source_key"] == "shots.mp4"]
    assert [r["clip_start"] for r in rows] == [0.0, *cuts]
    assert json.loads(rows[0]["cuts"]) == cuts
    assert len({r["row"] for r in scenes}) == len(scenes)  # unique: pieces are named by rows
    assert all(r["row"] // ROW_STRIDE == rows[0]["video_row"] for r in rows)
    for r in rows:
        assert r["status"] == "kept" and r["frames"]
        assert all(r["clip_start"] <= t < r["clip_end"] for t in r["timestamps"])
        assert r["indices"] == [round(t) for t in r["timestamps"]]  # the 1-fps grid
    assert sum(len(r["frames"]) for r in rows) == rows[0]["grid_frames"] == 9


def captioned(scenes) -> list[CaptionedClip]:
    rows = [r for r in scenes if r["source_key"] == "shots.mp4"]
    return [
        CaptionedClip(
            r["clip_index"],
            r["clip_start"],
            r["clip_end"],
            ClipFrames(r["indices"], r["frames"], r["timestamps"], (64, 48)),
            text,
            f"In detail: {text}",
        )
        for r, text in zip(rows, CAPTIONS, strict=True)
    ]


def test_records_of_the_three_tasks_from_clip_captions(folder, scenes):
    videos, _, cuts = folder
    clips = captioned(scenes)
    samples = raw_samples("vid", "shots.mp4", clips, config(videos), "tiny")
    by_task: dict[str, list[dict]] = {}
    for s in samples:
        by_task.setdefault(s["task"], []).append(json.loads(s["record"]))
    caption = by_task["caption"]
    assert len(caption) == 2 * len(clips)  # a short and a detailed sample per clip
    assert {r["caption_kind"] for r in caption} == {"short", "detailed"}
    for rec in caption:
        assert 0.0 <= rec["timestamps"][0] < 1.0  # from the clip's start, on the 1-fps grid
        assert rec["conversations"][1]["value"].removeprefix("In detail: ") in CAPTIONS
    # one window of the three clips: a question per clip (turns_per_sample 1), its span
    spans = [(0.0, cuts[0]), (cuts[0], cuts[1]), (cuts[1], 9.48)]
    ground = by_task["grounding"]
    assert [g["conversations"][1]["value"] for g in ground] == [
        f"{s:.1f}-{e:.1f} s" for s, e in spans
    ]
    for g, text in zip(ground, CAPTIONS, strict=True):
        assert f"'{text.rstrip('.')}'" in g["conversations"][0]["value"]
        assert g["timestamps"] == [float(t) for t in range(9)] and g["clip"]["end"] == 9.48
    (stream,) = by_task["streaming"]
    said = [(m["time"], m["content"]) for m in stream["conversation"] if m["role"] == "assistant"]
    assert said == [(round(e, 3), c) for (_, e), c in zip(spans, CAPTIONS, strict=True)]
    assert stream["start_time"] == 0.0 and len(stream["frames"]) == 9


def test_windows_break_at_dropped_clips_and_skip_ambiguous_questions(folder, scenes):
    videos, _, _ = folder
    clips = captioned(scenes)
    assert [[c.index for c in w] for w in windows(clips, 120, 2)] == [[0, 1, 2]]
    assert [[c.index for c in w] for w in windows([clips[0], clips[2]], 120, 2)] == []
    assert [[c.index for c in w] for w in windows(clips, 6, 2)] == [[0, 1]]
    clips[2].short = clips[0].short.upper()  # the same sentence twice: which clip is it?
    samples = raw_samples(
        "vid", "shots.mp4", clips, config(videos, "grounding.turns_per_sample=5"), "m"
    )
    (ground,) = [json.loads(s["record"]) for s in samples if s["task"] == "grounding"]
    asked = [m["value"] for m in ground["conversations"] if m["from"] == "human"]
    assert len(asked) == 1 and "clock" in asked[0]


def test_caption_samples_render_through_the_processor_template(folder, scenes, vl3_processor):
    processor = vl3_processor
    videos, _, _ = folder
    samples = raw_samples("vid", "shots.mp4", captioned(scenes), config(videos), "tiny")
    rendered = 0
    for s in samples:
        if s["task"] not in ("caption", "grounding"):
            continue
        rec = json.loads(s["record"])
        members = {f"f{j:04d}.jpg": fr for j, fr in enumerate(s["frames"])}
        batch = processor_inputs(rec, members, processor)
        text = processor.tokenizer.decode(batch["input_ids"][0])
        assert re.findall(r"Time (\d+\.\d)s:", text) == [f"{t:.1f}" for t in rec["timestamps"]]
        assert f"<|im_start|>assistant\n{rec['conversations'][1]['value']}<|im_end|>" in text
        assert int((batch["input_ids"][0] == processor.video_token_id).sum()) > 0
        rendered += 1
    assert rendered == 9  # 3 clips x short and detailed captions, 3 grounding questions


def test_listing_walks_subfolders_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.mp4", "a.MKV", "notes.txt", "c.webm"):
        (tmp_path / name).write_bytes(b"x")
    cfg = config(tmp_path, "input.partition_size=2")
    parts = list_raw_partitions(cfg)
    assert [p.spec["files"] for p in parts] == [["a.MKV", "b/z.mp4"], ["c.webm"]]
    assert isinstance(parts[0], Partition)


@pytest.mark.parametrize(
    "override,field",
    [
        ("clips.min_len_s=0.5", "clips.min_len_s"),  # no 1-fps grid frame guaranteed
        ("clips.max_len_s=3", "clips.max_len_s"),  # under twice min_len_s
        ("scenes.threshold=1.5", "scenes.threshold"),
        ("captions.short.enabled=false", "captions.short.enabled"),
        ("captions.max_frames=0", "captions.max_frames"),
        ("captions.run_in=gpu", "captions.run_in"),
        ("captions.short.accept=[nope]", "captions.short.accept"),
        ("grounding.min_clips=1", "grounding.min_clips"),
        ("caption.short_instructions=[]", "caption.short_instructions"),
        ("tasks=[captions]", "tasks"),
    ],
)
def test_bad_config_fails_before_any_work_naming_the_field(tmp_path, override, field):
    from manifests.configs import ConfigError

    with pytest.raises(ConfigError) as err:
        config(tmp_path, override)
    assert err.value.field == field
    with pytest.raises(ConfigError, match=r"input\.videos"):
        config(tmp_path / "missing").check_runnable()


@pytest.mark.parametrize(
    "sets,in_tasks",
    [
        ((), True),  # the demo: transformers on CPU
        (("captions.short.engine.num_gpus=1",), False),
        (("captions.short.engine.device=cuda",), False),
        (("captions.short.engine.kind=vllm",), False),
        (("captions.short.engine.kind=openai",), True),  # a server: nothing loaded here
        (("captions.detailed.enabled=true", "captions.detailed.engine.kind=openai"), True),
        (
            (
                "captions.short.engine.kind=openai",
                "captions.detailed.enabled=true",
                "captions.detailed.engine.kind=vllm",
            ),
            False,
        ),
        (("captions.short.engine.kind=openai", "captions.run_in=pool"), False),
        (("captions.run_in=pool",), False),
    ],
)
def test_captions_run_in_the_tasks_for_cpu_transformers_or_a_server_else_in_a_pool(
    tmp_path, sets, in_tasks
):
    from video_prep.raw_captions import in_task

    assert in_task(config(tmp_path, *sets).captions) is in_tasks


def test_spilled_frames_are_the_decoded_frames_and_failed_videos_leave_no_file(
    folder, scenes, tmp_path
):
    """The one-pass job keeps a video's grid on disk (a FrameStore per video) and its clip rows
    name it: the frames read back are the in-memory decode's, byte for byte."""
    from video_prep.raw_frames import FrameStore

    videos, _, _ = folder
    cfg = config(videos, "input.partition_size=10")
    (part,) = list_raw_partitions(cfg)
    rows = load_raw_partition(part, str(videos), "video-raw:test")
    spilled = CutScenes(cfg, tmp_path / "spill")(rows).to_pylist()
    assert [r["row"] for r in spilled] == [r["row"] for r in scenes]
    stores = {r["frames_at"] for r in spilled if r["frames_at"]}
    assert len(stores) == 1  # shots.mp4's; the broken files' are removed
    assert sorted(p.name for p in (tmp_path / "spill" / "p0").iterdir()) == sorted(
        n for s in stores for n in (Path(s).name, Path(s).name + ".idx")
    )
    for mem, disk in zip(scenes, spilled, strict=True):
        assert disk["frames"] == [] and disk["indices"] == mem["indices"]
        if disk["frames_at"]:
            store = FrameStore.open(disk["frames_at"])
            assert store.frames(disk["indices"]) == mem["frames"]
            store.close()
        else:
            assert mem["frames"] == []
