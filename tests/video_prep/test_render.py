"""Video records render through transformers' VideoLlama3Processor with our chat template:
``Time t s:`` labels, ``,`` between frames, streaming frames in stream turns."""

from __future__ import annotations

import json
import re

import pytest

from manifests.chat import IMAGE_PAD, VIDEO_PAD, processor_inputs, record_to_messages
from manifests.dataset import shard_paths
from manifests.shards import iter_samples


@pytest.fixture(scope="module")
def processor(vl3_processor):
    return vl3_processor


@pytest.fixture(scope="module")
def samples(demo_videos, tmp_path_factory, ray_local):
    from manifests.configs import load_config
    from video_prep.config import VideoConfig
    from video_prep.job import run_video_job

    out = tmp_path_factory.mktemp("render_out")
    sets = [
        f"output={out}",
        f"input.videos={demo_videos['videos']}",
        f"input.annotations={demo_videos['annotations']}",
        "frames.max_side=112",
    ]
    run_video_job(load_config(VideoConfig, "configs/video_demo.yaml", sets), progress=False)
    return {
        t: list(iter_samples(shard_paths(out / t))) for t in ("caption", "streaming", "grounding")
    }


def _decoded(processor, sample) -> tuple[dict, str, object]:
    rec = json.loads(sample["json"])
    batch = processor_inputs(rec, sample, processor)
    return rec, processor.tokenizer.decode(batch["input_ids"][0]), batch


@pytest.mark.parametrize("task", ["caption", "grounding"])
def test_video_records_render_with_time_labels(processor, samples, task):
    for sample in samples[task]:
        rec, text, batch = _decoded(processor, sample)
        labels = re.findall(r"Time (\d+\.\d)s:", text)
        assert labels == [f"{t:.1f}" for t in rec["timestamps"]]
        groups = re.findall(r"Time \d+\.\ds:((?:<\|video_pad\|>)+)", text)
        assert len(groups) == len(rec["frames"]) and all(groups)
        # frames separated by ",", the video followed by "\n", then the instruction
        assert text.count("," + "Time ") == len(rec["frames"]) - 1
        human = rec["conversations"][0]["value"].removeprefix("<video>\n")
        assert f"{VIDEO_PAD}\n{human}<|im_end|>" in text
        assert text.startswith("<|im_start|>user\nTime 0.0s:")
        assert f"<|im_start|>assistant\n{rec['conversations'][1]['value']}<|im_end|>" in text
        n_pad = int((batch["input_ids"][0] == processor.video_token_id).sum())
        assert n_pad == sum(len(g) // len(VIDEO_PAD) for g in groups) > 0


def test_streaming_records_interleave_frames_and_answers(processor, samples):
    assert samples["streaming"]
    for sample in samples["streaming"]:
        rec, text, batch = _decoded(processor, sample)
        messages, vis = record_to_messages(rec)
        stream_turns = text.count("<|stream_start|>stream\n")
        assert stream_turns == len(vis.members) == text.count("<|stream_end|>") >= 1
        # each frame a stream turn labelled from the clip start, before the answer at its time
        start = rec["start_time"]
        for t in vis.timestamps:
            assert f"<|stream_start|>stream\nTime {t - start:.1f}s:{IMAGE_PAD}" in text
        order = [m["role"] for m in messages]
        answers = [m for m in rec["conversation"] if m["role"] == "assistant"]
        for a in answers:  # every frame up to an answer's time precedes it
            i = order.index("assistant", sum(1 for t in vis.timestamps if t <= a["time"]))
            assert sum(1 for r in order[:i] if r == "stream") >= sum(
                1 for t in vis.timestamps if t <= a["time"]
            )
        assert int((batch["input_ids"][0] == processor.image_token_id).sum()) > 0
        assert batch["pixel_values"].shape[0] > 0


def test_image_record_renders_with_image_pad(processor, photos):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photos["astronaut"]).save(buf, "JPEG")
    rec = {
        "image": ["k.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": "A photo."},
        ],
    }
    batch = processor_inputs(rec, {"k.jpg": buf.getvalue()}, processor)
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith(f"<|im_start|>user\n{IMAGE_PAD}")
    tail = "\nDescribe the image briefly.<|im_end|>\n<|im_start|>assistant\nA photo.<|im_end|>"
    assert tail in text
