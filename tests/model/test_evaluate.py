"""Held-out evaluation on the tiny preset: the key-hash split, loss per task that equals the
model's own loss, and temporal grounding on real frames scored by VideoLLaMA3's rules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from manifests.chat import processor_inputs, record_to_messages
from model.collate import Collator
from model.evaluate import (
    eval_collate_config,
    evaluate_grounding,
    evaluate_loss,
    grounding_questions,
    main,
    prompt_inputs,
    score_grounding,
)
from model.heldout import heldout_samples, is_heldout

GROUNDING = [  # (key, conversation): three questions over two records
    (
        "bikes_g000",
        [
            {"from": "human", "value": "<video>\nWhen does 'a rider jumps' happen?"},
            {"from": "gpt", "value": "2.0-4.5 s"},
            {"from": "human", "value": "When does 'the camera cuts' happen?"},
            {"from": "gpt", "value": "6.0-7.0 s"},
        ],
    ),
    (
        "bikes_g001",
        [
            {"from": "human", "value": "<video>\nWhen does 'the road appears' happen?"},
            {"from": "gpt", "value": "7.0-9.5 s"},
        ],
    ),
]


@pytest.fixture(scope="module")
def tiny(tiny_vl3_checkpoint):
    """The tiny preset's model and processor, as a trainer's checkpoint holds them."""
    from model.build import load_checkpoint

    model, processor = load_checkpoint(tiny_vl3_checkpoint)
    return model.eval(), processor


def grounding_set(video_sample, frames: list[bytes], timestamps: list[float]) -> list[dict]:
    """Two grounding records (three questions) and one caption record over ``frames``."""
    out = []
    for key, conv in GROUNDING:
        rec = {"timestamps": timestamps, "conversations": conv}
        out.append({**video_sample(key, frames, rec), "__source__": "grounding"})
    caption = {
        "timestamps": timestamps,
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": "Riders race down a dirt track."},
        ],
    }
    out.append({**video_sample("bikes_c000", frames, caption), "__source__": "clips"})
    return out


@pytest.fixture(scope="module")
def bikes():
    """``bikes.mp4`` (scene cuts) sampled at 1 fps by ``video_prep``, 6 small frames."""
    from video_prep.frames import sample_video
    from video_prep.probe import probe_video
    from video_prep.sample_videos import real_videos

    found = real_videos()
    if "bikes" not in found:
        pytest.skip("sample video bikes.mp4 not installed")
    return sample_video(found["bikes"], probe_video(found["bikes"]), max_frames=6, max_side=96)


@pytest.fixture(scope="module")
def grounding_samples(bikes, vl3_video_sample) -> list[dict]:
    """:func:`grounding_set` on the real frames of ``bikes.mp4``."""
    return grounding_set(vl3_video_sample, bikes.frames, bikes.timestamps)


def own_loss(model, collator: Collator, samples: list[dict]) -> float:
    """The model's loss on one micro-batch of ``samples`` (mean over its answer tokens)."""
    mb = collator.collate([collator.encode(s) for s in samples])
    with torch.no_grad():
        return float(model(**mb, use_cache=False).loss)


# --- the held-out split -----------------------------------------------------------------------


def test_heldout_split_is_a_stable_nested_share_of_keys():
    keys = [f"clip{i:05d}" for i in range(4000)]
    five = {k for k in keys if is_heldout(k)}
    twenty = {k for k in keys if is_heldout(k, 0.2)}
    assert 140 < len(five) < 260  # ~5% of 4000
    assert 700 < len(twenty) < 900
    assert five < twenty  # a larger fraction holds out a superset
    assert all(is_heldout(k, 1.0) for k in keys[:50])
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            is_heldout("x", bad)


def test_heldout_samples_reads_every_source_of_the_recipe(train_recipe):
    everything = heldout_samples(train_recipe, fraction=1.0)
    by_source: dict[str, list[dict]] = {}
    for s in everything:
        by_source.setdefault(s["__source__"], []).append(s)
    assert {k: len(v) for k, v in by_source.items()} == {"images": 6, "video": 1, "text": 2}
    assert {s["__task__"] for s in by_source["images"]} == {"caption"}
    assert by_source["text"][0]["__task__"] == "text"
    assert by_source["text"][0]["__key__"] == "text-000000000"  # as mixtures.sampler keys it
    assert isinstance(by_source["images"][0]["jpg"], bytes)
    clip = by_source["video"][0]
    assert {"f0000.jpg", "f0001.jpg", "f0002.jpg", "json"} <= set(clip)

    some = heldout_samples(train_recipe, fraction=0.5)
    assert [s["__key__"] for s in some] == [
        s["__key__"] for s in everything if is_heldout(s["__key__"], 0.5)
    ]
    assert 0 < len(some) < len(everything)  # this recipe's keys fall on both sides
    limited = heldout_samples(train_recipe, fraction=1.0, limit=2)
    assert [s["__source__"] for s in limited].count("images") == 2
    assert len(limited) == 5


# --- loss --------------------------------------------------------------------------------------


def test_loss_per_task_kind_and_source(tiny, train_recipe, grounding_samples):
    model, processor = tiny
    collator = Collator(processor, eval_collate_config("tiny", False))
    samples = heldout_samples(train_recipe, fraction=1.0) + grounding_samples
    got = evaluate_loss(model, collator, samples)

    assert got["samples"] == len(samples) == 12 and got["skipped"] == {}
    assert set(got["by_task"]) == {"caption", "text", "grounding", "video"}
    assert got["by_task"]["grounding"]["samples"] == 2
    assert got["by_task"]["video"]["samples"] == 1  # a caption clip with no task: its kind
    assert set(got["by_kind"]) == {"image", "video", "text"}
    assert set(got["by_source"]) == {"images", "video", "text", "grounding", "clips"}
    for grouping in ("by_task", "by_kind", "by_source"):
        groups = got[grouping].values()
        assert all(math.isfinite(g["loss"]) and g["loss"] > 0 for g in groups)
        assert sum(g["samples"] for g in groups) == got["samples"]
        # the overall loss is the token mean of every grouping's losses
        tokens = sum(g["answer_tokens"] for g in groups)
        assert tokens == got["answer_tokens"]
        mean = sum(g["loss"] * g["answer_tokens"] for g in groups) / tokens
        assert mean == pytest.approx(got["loss"], rel=1e-5)
    assert not model.training  # the mode it came in


def test_loss_equals_the_models_own_loss(tiny, train_recipe, grounding_samples):
    model, processor = tiny
    collator = Collator(processor, eval_collate_config("tiny", False))
    samples = heldout_samples(train_recipe, fraction=1.0)
    one = grounding_samples[0]
    assert evaluate_loss(model, collator, [one])["loss"] == pytest.approx(
        own_loss(model, collator, [one]), rel=1e-5
    )
    # batched and padded with the others, each group is still the model's own loss on it
    got = evaluate_loss(model, collator, samples + grounding_samples)
    for source in ("images", "video", "text"):
        mine = [s for s in samples if s["__source__"] == source]
        assert got["by_source"][source]["loss"] == pytest.approx(
            own_loss(model, collator, mine), rel=1e-5
        ), source
    assert got["by_task"]["grounding"]["loss"] == pytest.approx(
        own_loss(model, collator, grounding_samples[:2]), rel=1e-5
    )


# --- grounding ---------------------------------------------------------------------------------


def test_score_grounding_on_known_answers():
    got = score_grounding(
        ["2.0-4.5 s", "from 6 to 8 seconds", "I cannot tell.", "0.5-1.0 s"],
        [(2.0, 4.5), (6.0, 7.0), (1.0, 2.0), (3.0, 4.0)],
    )
    # IoUs 1, 0.5, 0 (unparsed), 0
    assert got["n"] == 4 and got["unparsed"] == 1
    assert got["mIoU"] == pytest.approx(37.5)
    assert got["R@0.3"] == pytest.approx(50.0) and got["R@0.5"] == pytest.approx(50.0)
    assert got["R@0.7"] == pytest.approx(25.0)


def test_prompt_is_the_conversation_up_to_each_question(tiny, grounding_samples):
    _, processor = tiny
    collator = Collator(processor, eval_collate_config("tiny", False))
    sample = grounding_samples[0]
    questions = grounding_questions(sample)
    assert [q.target for q in questions] == [(2.0, 4.5), (6.0, 7.0)]
    assert grounding_questions(grounding_samples[2]) == []  # a caption record
    tok = processor.tokenizer
    for q in questions:
        ids = prompt_inputs(collator, sample, q)["input_ids"][0].tolist()
        # the same frames and text through manifests.chat, then the generation prompt
        rec = {**q.record, "conversations": q.record["conversations"][:-1]}
        _, vis = record_to_messages(rec)
        members = {k: v for k, v in sample.items() if k != "json"}
        base = processor_inputs(rec, members, processor, **collator._vision_kwargs(vis))
        head = base["input_ids"][0].tolist()
        assert ids == head + tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        text = tok.decode(ids)
        assert text.endswith(q.question + "<|im_end|>\n<|im_start|>assistant\n")
        assert "Time 0.0s:" in text
    second = tok.decode(prompt_inputs(collator, sample, questions[1])["input_ids"][0])
    assert "2.0-4.5 s" in second  # earlier answers stay in the conversation


def check_grounding(got: dict) -> None:
    assert got["n"] == 3 and got["records"] == 2 and got["skipped"] == {}
    assert 0.0 <= got["mIoU"] <= 100.0 * 3  # unmerged repeats may exceed 100 (the original)
    assert 0 <= got["unparsed"] <= 3  # a random model rarely answers with an interval
    targets = [(2.0, 4.5), (6.0, 7.0), (7.0, 9.5)]
    assert [tuple(p["target"]) for p in got["predictions"]] == targets
    assert all(isinstance(p["answer"], str) for p in got["predictions"])
    # the scores are those of the answers it reports
    redo = score_grounding([p["answer"] for p in got["predictions"]], targets)
    assert {k: got[k] for k in redo} == redo


def test_grounding_eval_on_real_frames(tiny, grounding_samples):
    model, processor = tiny
    got = evaluate_grounding(model, processor, grounding_samples, 8)  # the default collator
    check_grounding(got)
    collator = Collator(processor, eval_collate_config("tiny", False))
    assert evaluate_grounding(model, processor, grounding_samples, 8, collator=collator) == got
    assert not model.training


def test_grounding_eval_with_diffp(tiny, bikes, vl3_video_sample):
    """A static camera (one real frame, repeated): DiffFP prunes the repeats' placeholders and
    generation scatters only the kept video tokens."""
    from transformers import VideoLlama3Processor, VideoLlama3VideoProcessor

    from manifests.chat import CHAT_TEMPLATE
    from model.collate import MAX_FRAMES

    model, tiny_processor = tiny
    # frames of at least 4 merged tokens (the tiny preset gives 1, which DiffFP always keeps)
    processor = VideoLlama3Processor(
        image_processor=tiny_processor.image_processor,
        video_processor=VideoLlama3VideoProcessor(
            # longest_edge is sized for MAX_FRAMES frames (model/build.py): 56x56 a frame
            size={"shortest_edge": 56 * 56, "longest_edge": 56 * 56 * MAX_FRAMES},
            merge_size=2,
        ),
        tokenizer=tiny_processor.tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    frames = [bikes.frames[0]] * len(bikes.frames)
    samples = grounding_set(vl3_video_sample, frames, bikes.timestamps)
    pruned = Collator(processor, eval_collate_config("tiny", True))
    plain = Collator(processor, eval_collate_config("tiny", False))
    q = grounding_questions(samples[0])[0]
    kept = prompt_inputs(pruned, samples[0], q)
    full = prompt_inputs(plain, samples[0], q)
    mask = kept["video_compression_mask"]
    per_frame = mask.numel() // len(frames)
    assert per_frame > 1
    assert int(mask.sum()) == per_frame + len(frames) - 1  # frame 0, then one token per repeat
    video = processor.video_token_id
    assert int((kept["input_ids"] == video).sum()) == int(mask.sum())
    assert int((full["input_ids"] == video).sum()) == mask.numel()
    check_grounding(evaluate_grounding(model, processor, samples, 8, collator=pruned))


def test_cli_prints_the_metrics(tiny_vl3_checkpoint, train_recipe, capsys):
    args = ["--recipe", str(train_recipe), "--fraction", "1", "--limit", "1", "--preset", "tiny"]
    got = main([str(tiny_vl3_checkpoint), *args, "--max-new-tokens", "4"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == got
    assert got["heldout_samples"] == 3 and got["loss"]["samples"] == 3
    assert set(got["loss"]["by_kind"]) == {"image", "video", "text"}
    assert got["grounding"]["n"] == 0 and got["grounding"]["mIoU"] is None


def test_the_tokenizer_corpus_leaves_out_the_held_out_samples(tmp_path):
    """Held-out answers are evaluated, so the BPE must not have seen them."""
    from model.tokenizer import corpus_from_recipes

    lines = [
        {
            "conversations": [
                {"from": "human", "value": f"Q{i}?"},
                {"from": "gpt", "value": f"W{i}x"},
            ]
        }
        for i in range(40)
    ]
    (tmp_path / "talk.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "stage: t\nseed: 0\ngroups:\n  - name: text\n    sources:\n"
        "      - {name: talk, path: talk.jsonl, modality: text, strategy: all}\n"
    )
    everything = corpus_from_recipes([recipe])
    kept = corpus_from_recipes([recipe], holdout=0.25)
    held = {f"W{i}x" for i in range(40) if is_heldout(f"talk-{i:09d}", 0.25)}
    assert held and len(held) < 40  # some, not all
    assert held <= set(everything)
    assert not held & set(kept)
    assert {f"W{i}x" for i in range(40)} - held <= set(kept)
