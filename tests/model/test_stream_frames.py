"""Streaming frames as VideoLLaMA3 treats them: one video clip (its ``train.py``,
``_convert_stream``, returns the frames as modal ``video`` with ``video_merge_size``), merged 2x2
in every stage and pruned by DiffFP across consecutive frames when the stage compresses tokens;
each frame still renders as its own ``Time t s: <pad>`` stream turn."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from manifests.configs import ConfigError, load_config
from model.collate import IGNORE_INDEX, CollateConfig, Collator
from model.config import TrainConfig
from model.stream import collate_config
from vl3data.sample_media import jpeg_bytes

FRAMES = 5
SIDE = 112  # 8x8 patches of 14 px: 16 tokens merged 2x2, 64 unmerged


def stream_sample(key: str, frames: list[bytes]) -> dict:
    """A streaming record over ``frames`` (one a second), with two answers."""
    names = [f"{key}.f{i:04d}.jpg" for i in range(len(frames))]
    rec = {
        "stream": True,
        "video": [key],
        "frames": names,
        "timestamps": [float(i) for i in range(len(frames))],
        "start_time": 0.0,
        "end_time": float(len(frames)),
        "conversation": [
            {"role": "user", "content": "Narrate the video as it plays.", "time": 0.0},
            {"role": "assistant", "content": "Nothing moves yet.", "time": 2.0},
            {"role": "assistant", "content": "Still nothing moves.", "time": float(FRAMES - 1)},
        ],
    }
    sample = {"__key__": key, "json": json.dumps(rec).encode()}
    for name, data in zip(names, frames, strict=True):
        sample[name.split(".", 1)[1]] = data
    return sample


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return np.asarray(Image.fromarray(photos["astronaut"]).resize((SIDE, SIDE)))


@pytest.fixture(scope="module")
def static_stream(photo) -> dict:
    """A fixed camera: every frame the same JPEG."""
    return stream_sample("static", [jpeg_bytes(photo)] * FRAMES)


@pytest.fixture(scope="module")
def moving_stream(photo) -> dict:
    """Every frame shifted by 14 px from the one before: every token changes."""
    return stream_sample(
        "moving", [jpeg_bytes(np.roll(photo, 14 * i, axis=1)) for i in range(FRAMES)]
    )


def stage_collator(processor, stage: int, **data) -> Collator:
    sets = ["model.preset=tiny", *(f"data.{k}={v}" for k, v in data.items())]
    cc = collate_config(load_config(TrainConfig, None, sets), stage)
    return Collator(processor, dataclasses.replace(cc, max_vision_tokens=1024))


def frame_pads(enc: dict, processor) -> list[int]:
    """The placeholders of each stream turn (image or video pads), in order."""
    ids = enc["input_ids"].tolist()
    start = processor.tokenizer.convert_tokens_to_ids("<|stream_start|>")
    end = processor.tokenizer.convert_tokens_to_ids("<|stream_end|>")
    pads = {processor.image_token_id, processor.video_token_id}
    out, cur = [], None
    for t in ids:
        if t == start:
            cur = 0
        elif t == end:
            out.append(cur)
            cur = None
        elif cur is not None and t in pads:
            cur += 1
    return out


def test_stream_frames_are_merged_2x2_in_stage_1(vl3_processor, moving_stream):
    """Stage 1 merges images 1x1, but a streaming clip is a video: 2x2, as every video."""
    c = stage_collator(vl3_processor, 1)
    assert c.cfg.image_merge_size == 1 and c.cfg.stream_frames == "video"
    enc = c.encode(moving_stream)
    assert enc is not None, c.skipped
    (t, h, w), merge = enc["video_grid_thw"][0].tolist(), enc["video_merge_sizes"].tolist()
    assert (t, merge) == (FRAMES, [2]) and (h, w) == (SIDE // 14, SIDE // 14)
    assert frame_pads(enc, vl3_processor) == [(h // 2) * (w // 2)] * FRAMES
    assert "pixel_values" not in enc and enc["pixel_values_videos"].shape[0] == t * h * w
    assert int(enc["video_compression_mask"].sum()) == FRAMES * (h // 2) * (w // 2)
    # the chat rendering is unchanged: one "Time t s: <pads>" stream turn per frame
    text = vl3_processor.tokenizer.decode(enc["input_ids"])
    times = re.findall(r"<\|stream_start\|>stream\nTime (\d+\.\d)s: <\|video_pad\|>", text)
    assert times == [f"{i:.1f}" for i in range(FRAMES)]
    assert enc["meta"]["vision_tokens"] == FRAMES * (h // 2) * (w // 2)


def test_a_static_stream_loses_tokens_to_difffp_in_stage_3_not_stage_1(
    vl3_processor, static_stream, moving_stream
):
    per_frame = (SIDE // 28) ** 2
    one = stage_collator(vl3_processor, 1).encode(static_stream)
    assert frame_pads(one, vl3_processor) == [per_frame] * FRAMES  # DiffFP off in stage 1
    assert bool(one["video_compression_mask"].all())
    three = stage_collator(vl3_processor, 3)
    assert three.cfg.use_token_compression
    enc = three.encode(static_stream)
    # the first frame whole, then the least DiffFP keeps of a frame that did not change: 1 token
    assert frame_pads(enc, vl3_processor) == [per_frame] + [1] * (FRAMES - 1)
    assert int(enc["video_compression_mask"].sum()) == per_frame + FRAMES - 1
    assert enc["meta"]["video_tokens"] == per_frame + FRAMES - 1
    assert enc["meta"]["vision_tokens"] == FRAMES * per_frame  # before DiffFP
    moving = three.encode(moving_stream)  # every token changes: nothing pruned
    assert frame_pads(moving, vl3_processor) == [per_frame] * FRAMES
    # labels as before: the answers, each frame's end and <|stream_end|> (stream_labels default)
    ids, labels = enc["input_ids"], enc["labels"]
    labelled = labels != IGNORE_INDEX
    assert torch.equal(ids[labelled], labels[labelled])
    pad = (ids == vl3_processor.video_token_id).int()
    after_frame = torch.nonzero(pad[:-1] - pad[1:] == 1)[:, 0] + 1
    assert len(after_frame) == FRAMES and labelled[after_frame].all()
    end = vl3_processor.tokenizer.convert_tokens_to_ids("<|stream_end|>")
    assert int((labels == end).sum()) == FRAMES


def test_the_model_runs_on_a_batch_of_streams_and_other_samples(
    vl3_processor, vl3_forward_model, static_stream, moving_stream, photo
):
    """Stage 3 (DiffFP on): pruned and unpruned streams, an image and a real video in one
    micro-batch; each row gets the logits it gets alone."""
    from tests.model.test_collate import image_sample

    c = stage_collator(vl3_processor, 3)
    group = [c.encode(s) for s in (static_stream, moving_stream, image_sample("img", photo))]
    assert all(e is not None for e in group), c.skipped
    mb = c.collate(group)
    assert mb["video_grid_thw"].shape[0] == 2 and mb["image_grid_thw"].shape[0] == 1
    with torch.no_grad():
        out = vl3_forward_model(**mb)
        assert torch.isfinite(out.loss)
        for row, enc in enumerate(group):
            alone = vl3_forward_model(**c.collate([enc])).logits[0]
            n = len(enc["input_ids"])
            torch.testing.assert_close(out.logits[row, :n], alone, atol=1e-4, rtol=1e-4)


def test_a_non_stream_image_sample_is_unchanged(vl3_processor, photo):
    from tests.model.test_collate import image_sample

    sample = image_sample("img", photo)
    for stage in (1, 3):
        video = stage_collator(vl3_processor, stage).encode(sample)
        image = stage_collator(vl3_processor, stage, stream_frames="image").encode(sample)
        assert set(video) == set(image) and "pixel_values_videos" not in video
        for k in ("input_ids", "labels", "pixel_values", "image_grid_thw", "image_merge_sizes"):
            assert torch.equal(video[k], image[k]), k
        assert video["image_grid_thw"].tolist() == [[1, SIDE // 14, SIDE // 14]]
        pads = int((video["input_ids"] == vl3_processor.image_token_id).sum())
        assert pads == (SIDE // 14) ** 2  # images: the stage's merge (1x1 in stages 1-3)


def test_stream_frames_image_keeps_the_old_behaviour(vl3_processor, static_stream):
    """``data.stream_frames: image``: every frame a separate image at the stage's image merge,
    never pruned (this project's rule before)."""
    c = stage_collator(vl3_processor, 3, stream_frames="image")
    enc = c.encode(static_stream)
    assert "pixel_values_videos" not in enc
    assert enc["image_grid_thw"].tolist() == [[1, SIDE // 14, SIDE // 14]] * FRAMES
    assert frame_pads(enc, vl3_processor) == [(SIDE // 14) ** 2] * FRAMES


def test_a_clip_of_frames_of_two_sizes_is_dropped(vl3_processor, photo):
    """A clip is one video: its frames must share a size (``image`` takes any)."""
    frames = [jpeg_bytes(photo)] * 2 + [jpeg_bytes(photo[:56])] * (FRAMES - 2)
    c = stage_collator(vl3_processor, 1)
    assert c.encode(stream_sample("mixed", frames)) is None
    assert c.skipped == {"processor_error": 1}
    assert stage_collator(vl3_processor, 1, stream_frames="image").encode(
        stream_sample("mixed", frames)
    )


def test_stream_frames_setting_is_checked():
    cfg = load_config(TrainConfig, None, ["model.preset=tiny"])
    assert cfg.data.stream_frames == "video" and collate_config(cfg, 1).stream_frames == "video"
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, ["data.stream_frames=frames"])
    assert exc.value.field == "data.stream_frames" and "video" in str(exc.value)
    with pytest.raises(ValueError, match="stream_frames"):
        CollateConfig(stream_frames="frames")
