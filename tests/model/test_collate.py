"""The collator: records of every kind through transformers' VideoLlama3Processor into inputs
that a tiny VideoLlama3ForConditionalGeneration trains on."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from model.collate import IGNORE_INDEX, CollateConfig, Collator
from vl3data.sample_media import jpeg_bytes

OFFSET = 0.5  # the records' timestamps are not the frames' grid: the labels must follow them


def image_sample(key: str, photo, answer: str = "An astronaut in a white suit.") -> dict:
    rec = {
        "image": [f"{key}.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": answer},
        ],
    }
    return {"__key__": key, "jpg": jpeg_bytes(photo), "json": json.dumps(rec).encode()}


@pytest.fixture(scope="module")
def samples(photos, video_samples, vl3_video_sample) -> dict:
    video_sample = vl3_video_sample
    bikes = video_samples["bikes"]
    ts = [round(t + OFFSET, 3) for t in bikes.timestamps]
    caption = {
        "timestamps": ts,
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": "Riders race down a dirt track, then the scene cuts."},
        ],
    }
    grounding = {
        "timestamps": ts,
        "conversations": [
            {"from": "human", "value": "<video>\nWhen does 'a rider jumps' happen?"},
            {"from": "gpt", "value": "2.0-4.5 s"},
            {"from": "human", "value": "When does 'the camera cuts' happen?"},
            {"from": "gpt", "value": "6.0-7.0 s"},
        ],
    }
    stream = {
        "stream": True,
        "timestamps": list(bikes.timestamps),
        "start_time": 2.0,
        "end_time": 9.0,
        "conversation": [
            {"role": "user", "content": "Narrate the video as it plays.", "time": 2.0},
            {"role": "assistant", "content": "A rider jumps.", "time": 4.5},
            {"role": "assistant", "content": "The camera cuts to a road.", "time": 8.0},
        ],
    }
    text = {
        "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "What is 2 and 3?"},
            {"from": "gpt", "value": "5"},
            {"from": "human", "value": "And 3 apples and 2 bananas?"},
            {"from": "gpt", "value": "There are 5 fruits on the kitchen table."},
        ]
    }
    frames = bikes.frames
    stream_frames = frames[2:]  # the clip starts at 2.0 s
    stream["timestamps"] = stream["timestamps"][2:]
    return {
        "image": image_sample("img0", photos["astronaut"]),
        "image_wide": image_sample("img1", photos["chelsea"], "A ginger cat."),
        "video": video_sample("vid0", frames, caption),
        "grounding": video_sample("grd0", frames, grounding),
        "stream": video_sample("str0", stream_frames, stream),
        "multi": multi_image_sample("mul0", photos["coffee"], photos["rocket"]),
        "text": {"__key__": "txt0", "json": json.dumps(text).encode()},
    }


def multi_image_sample(key: str, first, second) -> dict:
    rec = {
        "image": [f"{key}.a.jpg", f"{key}.b.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhat do the two photos show?"},
            {"from": "gpt", "value": "A cup of coffee, then a rocket on the launch pad."},
        ],
    }
    return {
        "__key__": key,
        "a.jpg": jpeg_bytes(first),
        "b.jpg": jpeg_bytes(second),
        "json": json.dumps(rec).encode(),
    }


def answers(sample: dict) -> list[str]:
    rec = json.loads(sample["json"])
    if rec.get("stream"):
        return [m["content"] for m in rec["conversation"] if m["role"] == "assistant"]
    return [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]


def label_spans(labels: torch.Tensor) -> list[list[int]]:
    spans, cur = [], []
    for v in labels.tolist():
        if v == IGNORE_INDEX:
            if cur:
                spans.append(cur)
            cur = []
        else:
            cur.append(v)
    return spans + ([cur] if cur else [])


def test_labels_are_exactly_the_assistant_answers(vl3_processor, samples):
    """With ``stream_labels: answers``; the default adds streaming turns' markers (below)."""
    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=256, stream_labels="answers"))
    tok = vl3_processor.tokenizer
    for name, sample in samples.items():
        enc = c.encode(sample)
        assert enc is not None, (name, c.skipped)
        spans = [tok.decode(s) for s in label_spans(enc["labels"])]
        assert spans == [a + "<|im_end|>" for a in answers(sample)], name
        labelled = enc["labels"] != IGNORE_INDEX
        assert torch.equal(enc["input_ids"][labelled], enc["labels"][labelled])
        for pad in (vl3_processor.image_token_id, vl3_processor.video_token_id):
            assert not labelled[enc["input_ids"] == pad].any()
    assert not c.skipped


def test_visual_placeholders_match_the_grids_and_record_timestamps(vl3_processor, samples):
    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=256))
    tok = vl3_processor.tokenizer
    for name in ("image", "image_wide", "multi"):
        enc = c.encode(samples[name])
        grid = enc["image_grid_thw"]
        n_pad = int((enc["input_ids"] == vl3_processor.image_token_id).sum())
        assert n_pad == int(grid.prod(-1).sum()) == enc["meta"]["vision_tokens"]
        assert enc["pixel_values"].shape[0] == int(grid.prod(-1).sum())  # merge 1: a patch each
    stream = c.encode(samples["stream"])  # one clip, merged 2x2 (tests/model/test_stream_frames)
    t, h, w = stream["video_grid_thw"][0].tolist()
    assert t == 7  # frames 2..8 s: up to the last answer
    n_pad = int((stream["input_ids"] == vl3_processor.video_token_id).sum())
    assert n_pad == t * h * w // 4 == stream["meta"]["vision_tokens"]
    text = tok.decode(stream["input_ids"])
    # VideoLLaMA3's template: "Time 3.0s: <image>" for a streaming frame (a space), and
    # "Time 3.0s:<image>" for a video frame (none)
    assert re.findall(r"<\|stream_start\|>stream\nTime (\d+\.\d)s: <\|video_pad\|>", text) == [
        f"{t:.1f}"
        for t in range(7)  # from the clip's start_time
    ]
    for name in ("video", "grounding"):
        sample = samples[name]
        enc = c.encode(sample)
        t, h, w = enc["video_grid_thw"][0].tolist()
        n_pad = int((enc["input_ids"] == vl3_processor.video_token_id).sum())
        assert n_pad == t * h * w // 4 == int(enc["video_compression_mask"].sum())
        assert enc["pixel_values_videos"].shape[0] == t * h * w
        rec = json.loads(sample["json"])
        assert t == len(rec["frames"])
        labels = re.findall(r"Time (\d+\.\d)s:", tok.decode(enc["input_ids"]))
        assert labels == [f"{x:.1f}" for x in rec["timestamps"]]
        assert labels[0] == f"{OFFSET:.1f}"


def image_tokens(enc) -> list[int]:
    return (enc["image_grid_thw"].prod(-1) // enc["image_merge_sizes"] ** 2).tolist()


def test_budget_resizes_images_and_frames_down(vl3_processor, vl3_tiny_processor, samples):
    big = Collator(vl3_processor, CollateConfig()).encode(samples["image"])
    assert image_tokens(big) == [round(512 / 14) ** 2]  # 512x512 at native resolution
    for budget in (64, 100):
        c = Collator(vl3_processor, CollateConfig(max_vision_tokens=budget))
        enc = c.encode(samples["image"])
        _, h, w = enc["image_grid_thw"][0].tolist()
        assert budget / 2 <= h * w <= budget and h == w
        wide = c.encode(samples["image_wide"])  # chelsea: 451 x 300
        _, h, w = wide["image_grid_thw"][0].tolist()
        assert h * w <= budget and math.isclose(w / h, 451 / 300, rel_tol=0.25)
        stream = c.encode(samples["stream"])  # a clip: the whole budget, as a video
        assert 7 <= stream["meta"]["vision_tokens"] <= budget
        multi = image_tokens(c.encode(samples["multi"]))
        assert len(multi) == 2 and max(multi) <= budget // 2
        video = c.encode(samples["video"])
        assert video["meta"]["vision_tokens"] <= budget
    # the processor's own cap (3136 pixels per image) binds below a larger budget
    tiny = Collator(vl3_tiny_processor, CollateConfig()).encode(samples["image"])
    assert image_tokens(tiny) == [16]
    # ten frames cannot fit five tokens, even at one token a frame
    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=5))
    assert c.encode(samples["video"]) is None and c.skipped == {"vision_budget": 1}


def test_long_and_bad_samples_are_dropped_with_a_reason(vl3_processor, samples):
    n = Collator(vl3_processor).encode(samples["text"])["meta"]["length"]
    c = Collator(vl3_processor, CollateConfig(max_length=n, max_vision_tokens=256))
    assert c.encode(samples["text"])["meta"]["length"] == n
    assert c.encode(samples["image"]) is None  # its ~250 image tokens alone are more
    assert c.skipped == {"too_long": 1}

    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=256))
    video = dict(samples["video"])
    del video["f0003.jpg"]
    no_answer = {"conversations": [{"from": "human", "value": "Hello?"}]}
    bad = [
        {"__key__": "b0", "json": b"{not json"},
        {"__key__": "b1"},
        {"__key__": "b2", "json": json.dumps({"image": ["b2.jpg"]}).encode()},
        video,
        {**samples["image"], "jpg": b"not a jpeg"},
        {"__key__": "b5", "json": json.dumps(no_answer).encode()},
    ]
    assert c(bad) == []
    assert c.skipped == {
        "bad_json": 1,
        "no_record": 1,
        "bad_record": 1,
        "missing_member": 1,
        "decode_error": 1,
        "no_answer": 1,
    }


def test_config_fails_fast_naming_the_field(vl3_processor):
    with pytest.raises(ValueError, match="max_length"):
        CollateConfig(max_length=0)
    with pytest.raises(ValueError, match="diff_threshold"):
        CollateConfig(diff_threshold=-1.0)
    with pytest.raises(ValueError, match="image_merge_size"):
        Collator(vl3_processor, CollateConfig(image_merge_size=2))


@pytest.mark.parametrize("diffp", [False, True])
def test_micro_batches_fit_and_train(vl3_processor, vl3_forward_model, samples, diffp):
    cfg = CollateConfig(max_vision_tokens=128, tokens_per_batch=600, use_token_compression=diffp)
    c = Collator(vl3_processor, cfg)
    raw = list(samples.values())
    encoded = [c.encode(s) for s in raw]
    lengths = sorted(e["meta"]["length"] for e in encoded)
    batches = c(raw)
    assert sum(len(mb["input_ids"]) for mb in batches) == len(raw) and not c.skipped
    assert any(len(mb["input_ids"]) > 1 for mb in batches)
    got = []
    for mb in batches:
        b, n = mb["input_ids"].shape
        assert b * n <= cfg.tokens_per_batch or b == 1
        got += mb["attention_mask"].sum(-1).tolist()
        with torch.no_grad():
            loss = vl3_forward_model(**mb).loss
        assert torch.isfinite(loss)
    assert sorted(got) == lengths


def test_padding_is_exact(vl3_processor, vl3_forward_model, samples):
    """A padded micro-batch gives every sample the logits it gets alone: the flat vision
    tensors line up with the placeholders row by row."""
    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=128))
    group = [c.encode(samples[k]) for k in ("text", "image", "video", "stream")]
    mb = c.collate(group)
    assert mb["input_ids"].shape[0] == 4 and "pixel_values_videos" in mb
    with torch.no_grad():
        together = vl3_forward_model(**mb).logits
        for row, enc in enumerate(group):
            alone = vl3_forward_model(**c.collate([enc])).logits[0]
            n = len(enc["input_ids"])
            torch.testing.assert_close(together[row, :n], alone, atol=1e-4, rtol=1e-4)


def test_a_short_video_keeps_the_presets_per_frame_cap(video_samples, vl3_video_sample):
    """The video processor's longest_edge is sized for 180 frames: a short video gets at most
    the per-frame share, not the whole budget spread over few frames."""
    from model.build import build_processor
    from model.collate import MAX_FRAMES, CollateConfig, Collator
    from model.presets import get_preset
    from model.tokenizer import train_tokenizer

    preset = get_preset("small")
    tok = train_tokenizer(["a video of bikes", "time 0.0s"], 300)
    processor = build_processor(preset, tok)
    bikes = video_samples["bikes"]
    frames = bikes.frames[:4]
    sample = vl3_video_sample(
        "bk",
        frames,
        {
            "timestamps": bikes.timestamps[:4],
            "conversations": [
                {"from": "human", "value": "<video>\nWhat happens?"},
                {"from": "gpt", "value": "Bikes."},
            ],
        },
    )
    enc = Collator(processor, CollateConfig(max_vision_tokens=4096)).encode(sample)
    assert enc is not None
    per_frame_tokens = int(enc["video_grid_thw"][0][1:].prod()) // 4  # 2x2 merge
    cap = processor.video_processor.size["longest_edge"] // MAX_FRAMES // (28 * 28)
    assert cap == preset.frame_pixels[1] // (28 * 28) == 16
    assert 1 < per_frame_tokens <= cap


def _untagged(sample: dict) -> dict:
    """The sample with every <image>/<video> tag taken out of its turns."""
    rec = json.loads(sample["json"])
    for turn in rec["conversations"]:
        turn["value"] = turn["value"].replace("<image>", "").replace("<video>", "").strip()
    return {**sample, "json": json.dumps(rec).encode()}


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_record_without_its_media_tag_gets_one(vl3_processor, samples, kind):
    """VideoLLaMA3's train.py prepends one <image>/<video> to the first human turn of a record
    whose pixels no turn refers to; the sample then encodes as the tagged one does (the tag
    opens the turn either way), and the repair is counted."""
    c = Collator(vl3_processor, CollateConfig(max_vision_tokens=256))
    tagged = c.encode(samples[kind])
    assert c.fixed == {}
    fixed = c.encode(_untagged(samples[kind]))
    assert fixed is not None, c.skipped
    assert c.skipped == {} and c.fixed == {"media_tag_added": 1}
    assert torch.equal(fixed["input_ids"], tagged["input_ids"])
    assert torch.equal(fixed["labels"], tagged["labels"])
    text = {**samples["text"], "__key__": "txt1"}  # no pixels: nothing to repair
    assert c.encode(text) is not None and c.fixed == {"media_tag_added": 1}


def test_the_repair_and_its_count_reach_the_report(tmp_path):
    from model.config import TrainConfig
    from model.train_report import REPORT_COLUMNS, write_report

    cfg = TrainConfig(output=str(tmp_path))
    result = {
        "recipe": "r.yaml",
        "steps": 1,
        "first_loss": 1.0,
        "last_loss": 0.5,
        "mean_step_time_s": None,
        "parameters": {g: {"total": 1, "trainable": 1} for g in ("vision", "projector", "llm")},
        "lr": {"vision": 1e-5, "projector": 1e-5, "llm": 1e-5},
        "token_compression": False,
        "skipped": {"too_long": 2},
        "fixed": {"media_tag_added": 3},
        "in_sync": True,
    }
    page = write_report(cfg, {1: result}).read_text()
    assert "fixed" in REPORT_COLUMNS and "media_tag_added&quot;: 3" in page


def test_stream_turns_are_labelled_as_videollama3_does(vl3_processor, samples):
    """VideoLLaMA3's processor (``_process_text_with_label``) labels, in every stream turn, the
    token after the frame's placeholders and the turn's ``<|stream_end|>``, besides the answers;
    ``stream_labels: answers`` labels the answers only."""
    tok = vl3_processor.tokenizer
    end = tok.convert_tokens_to_ids("<|stream_end|>")
    enc = Collator(vl3_processor, CollateConfig(max_vision_tokens=256)).encode(samples["stream"])
    ids, labels = enc["input_ids"], enc["labels"]
    labelled = labels != IGNORE_INDEX
    assert torch.equal(ids[labelled], labels[labelled])
    frames = int(enc["video_grid_thw"][0, 0])
    assert int((labels == end).sum()) == int((ids == end).sum()) == frames
    pad = (ids == vl3_processor.video_token_id).int()
    after_frame = torch.nonzero(pad[:-1] - pad[1:] == 1)[:, 0] + 1  # first token past a frame
    assert len(after_frame) == frames and labelled[after_frame].all()
    assert {tok.decode(int(i)) for i in ids[after_frame]} == {"\n"}
    only = Collator(vl3_processor, CollateConfig(max_vision_tokens=256, stream_labels="answers"))
    plain = only.encode(samples["stream"])["labels"]
    extra = labelled & (plain == IGNORE_INDEX)  # what the default labels beyond the answers
    assert sorted(torch.nonzero(extra)[:, 0].tolist()) == sorted(
        [*after_frame.tolist(), *torch.nonzero(ids == end)[:, 0].tolist()]
    )
    for name in ("image", "video", "text"):  # nothing changes outside streaming samples
        a = Collator(vl3_processor, CollateConfig(max_vision_tokens=256)).encode(samples[name])
        assert torch.equal(a["labels"], only.encode(samples[name])["labels"])


def test_stream_labels_setting_is_checked():
    from manifests.configs import ConfigError, load_config
    from model.config import TrainConfig
    from model.stream import collate_config

    cfg = load_config(TrainConfig, None, ["model.preset=tiny"])
    assert cfg.data.stream_labels == "videollama3"
    assert collate_config(cfg, 3).stream_labels == "videollama3"
    cfg = load_config(TrainConfig, None, ["model.preset=tiny", "data.stream_labels=answers"])
    assert collate_config(cfg, 3).stream_labels == "answers"
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, ["data.stream_labels=all"])
    assert exc.value.field == "data.stream_labels" and "videollama3" in str(exc.value)
