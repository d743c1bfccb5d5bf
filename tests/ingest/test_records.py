"""The per-record rules of an import (``ingest.records``): every reason, every repair."""

from __future__ import annotations

import pytest

from ingest.records import check_record, meta_of


def conv(*values: str, first: str = "human") -> list[dict]:
    roles = [first, "gpt" if first == "human" else "human"]
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(values)]


def test_a_llava_image_record_is_kept_as_it_is():
    got = check_record(
        {"image": "a.jpg", "conversations": conv("<image>\nWhat?", "A cat.")}, "llava"
    )
    assert (got.reason, got.modality, got.media, got.fixes) == (None, "image", ["a.jpg"], [])
    assert got.fields["conversations"][0]["value"] == "<image>\nWhat?"


def test_a_missing_tag_is_prepended_one_per_image():
    rec = {"image": ["a.jpg", "b.jpg"], "conversations": conv("Compare them.", "Same.")}
    got = check_record(rec, "llava")
    assert got.reason is None and got.fixes == ["media_tag_added"]
    assert got.fields["conversations"][0]["value"] == "<image><image>\nCompare them."


@pytest.mark.parametrize(
    "rec, reason",
    [
        ({"image": "a.jpg", "conversations": conv("<image><image>\nQ", "A")}, "tag_mismatch"),
        ({"image": ["a", "b", "c"], "conversations": conv("<image>Q<image>", "A")}, "tag_mismatch"),
        ({"image": "a.jpg", "conversations": conv("<image>Q", "A <image>")}, "tag_mismatch"),
        ({"image": "a.jpg", "conversations": conv("<video>Q", "A")}, "tag_mismatch"),
        ({"conversations": conv("<image>\nQ", "A")}, "tag_mismatch"),
        ({"image": "a.jpg", "conversations": conv("Q", "  ")}, "empty_turn"),
        (
            {"image": "a.jpg", "conversations": [{"value": "Q"}, {"from": "gpt", "value": "A"}]},
            "malformed_turn",
        ),
        ({"image": "a.jpg", "conversations": [{"from": "human", "value": 3}]}, "malformed_turn"),
        ({"image": "a.jpg", "conversations": []}, "no_conversations"),
        ({"image": "a.jpg"}, "no_conversations"),
        ({"image": "a.jpg", "conversations": conv("Q")}, "no_answer"),
        ({"image": 7, "conversations": conv("Q", "A")}, "bad_media_field"),
        ({"image": [], "conversations": conv("Q", "A")}, "bad_media_field"),
        ({"image": "a", "video": ["v.mp4"], "conversations": conv("Q", "A")}, "image_and_video"),
        ({"video": ["a.mp4", "b.mp4"], "conversations": conv("Q", "A")}, "multiple_videos"),
        ([1, 2], "not_an_object"),
    ],
)
def test_bad_records_get_their_reason(rec, reason):
    assert check_record(rec, "videollama3").reason == reason


def test_leading_answers_are_removed_as_videollama3_does():
    rec = {"conversations": conv("Hello!", "Hi, what is 2+2?", "4", first="gpt")}
    got = check_record(rec, "text")
    assert got.reason is None and got.fixes == ["leading_turns_removed"]
    assert [t["from"] for t in got.fields["conversations"]] == ["human", "gpt"]


def test_text_chat_messages_read_as_conversations():
    rec = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ho"}]}
    got = check_record(rec, "text")
    assert got.modality == "text"
    assert got.fields["conversations"] == [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Ho"},
    ]
    assert check_record({"image": "a.jpg", **rec}, "text").reason == "unexpected_media"


def test_a_video_record_and_a_streaming_record():
    got = check_record({"video": ["v.mp4"], "conversations": conv("Q", "A")}, "videollama3")
    assert got.modality == "video" and got.fields["conversations"][0]["value"] == "<video>\nQ"
    stream = {
        "stream": True,
        "video": ["v.mp4"],
        "start_time": 1.0,
        "end_time": 4.0,
        "conversation": [
            {"role": "user", "content": "Narrate.", "time": 1.0},
            {"role": "assistant", "content": "A clock.", "time": 3.0},
        ],
    }
    got = check_record(stream, "videollama3")
    assert got.reason is None and got.fields["stream"] and got.fields["end_time"] == 4.0
    assert check_record(stream, "llava").reason == "unexpected_media"
    assert check_record({**stream, "end_time": 0.5}, "videollama3").reason == "malformed_stream"
    bad_time = {**stream, "conversation": [{"role": "user", "content": "x", "time": "soon"}]}
    assert check_record(bad_time, "videollama3").reason == "malformed_stream"


def test_other_fields_are_kept_as_meta():
    rec = {"id": "000001", "image": "a.jpg", "conversations": conv("<image>Q", "A")}
    assert meta_of(rec) == {"id": "000001"}


def test_llava_video_image_tags_read_as_video_when_asked():
    rec = {"video": "v.mp4", "conversations": conv("<image>\nWhat happens?", "A clock.")}
    assert check_record(rec, "llava").reason == "tag_mismatch"
    got = check_record(rec, "llava", image_tag_for_video=True)
    assert got.reason is None and got.fixes == ["video_tag_from_image"]
    assert got.fields["conversations"][0]["value"] == "<video>\nWhat happens?"
