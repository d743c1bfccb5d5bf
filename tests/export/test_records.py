"""The per-record rules of an export, on parsed records (no shard needed): what is fixed, what
is skipped and why, how file names come from keys, and how a streaming record's times move to
its exported file's clock."""

from __future__ import annotations

import pytest

from export.layouts import llava_record, stream_in_file, videollama3_record
from export.names import image_path, media_stem, video_path
from export.records import Skip, read_record

TURNS = [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "That."}]


def video(**kw) -> dict:
    rec = {"video": ["k"], "frames": ["k.f0000.jpg", "k.f0001.jpg"], "timestamps": [0.6, 1.6]}
    return {**rec, "conversations": TURNS, **kw}


MEMBERS = {"f0000.jpg", "f0001.jpg", "jpg", "png"}


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (video(timestamps=[1.0, 1.0]), "bad_timestamps"),
        (video(timestamps=[0.0]), "bad_timestamps"),
        (video(timestamps=[0.0, float("nan")]), "bad_timestamps"),
        (video(timestamps=[-1.0, 0.0]), "bad_timestamps"),
        (video(frames=[]), "no_frames"),
        (video(frames=["k.f0000.jpg", "k.f0009.jpg"]), "missing_member"),
        (video(frames=["k.jpg", "k.png"]), "frame_not_jpeg"),
        (video(video=["a", "b"]), "several_videos"),
        (video(conversations=[{"from": "human", "value": "Q?"}]), "no_answer"),
        (video(conversations=[{"from": "gpt", "value": "A."}]), "no_question"),
        (video(conversations=[{"from": "bot", "value": "A."}]), "bad_turn"),
        (video(conversations=[{"from": "human", "value": 3}]), "bad_turn"),
        ({"image": "k.txt", "conversations": TURNS}, "missing_member"),
        ({"image": [None], "conversations": TURNS}, "bad_media_name"),
        (["not", "a", "record"], "bad_json"),
        ({"stream": True, **video(), "conversation": [], "start_time": 0, "end_time": 2},
         "no_conversations"),
        ({"stream": True, **video(), "start_time": 2.0, "end_time": 1.0,
          "conversation": [{"role": "assistant", "content": "A.", "time": 1.0}]},
         "bad_timestamps"),
    ],
)  # fmt: skip
def test_records_no_trainer_can_read_are_skipped_with_their_reason(rec, reason):
    with pytest.raises(Skip) as exc:
        read_record(rec, MEMBERS)
    assert exc.value.reason == reason


def test_tags_are_written_out_or_the_record_skipped():
    s = read_record(video(conversations=[TURNS[0] | {"value": "What?"}, TURNS[1]]), MEMBERS)
    vl3 = videollama3_record("k", s, ["videos/x/k.mp4"])
    assert vl3["conversations"][0]["value"] == "<video>\nWhat?"
    llava = llava_record("k", s, ["videos/x/k.mp4"])
    assert llava["conversations"][0]["value"] == "<image>\nWhat?" and llava["video"].endswith(
        ".mp4"
    )
    two = read_record(
        video(conversations=[TURNS[0] | {"value": "<video><video>"}, TURNS[1]]), MEMBERS
    )
    with pytest.raises(Skip, match="video_tag_mismatch"):
        videollama3_record("k", two, ["v.mp4"])
    chat = [{"from": "user", "value": "Which?"}, {"from": "assistant", "value": "Both."}]
    several = read_record({"image": ["a.jpg", "a.png"], "conversations": chat}, MEMBERS)
    rec = videollama3_record("k", several, ["i0.jpg", "i1.png"])
    assert rec["conversations"][0] == {"from": "human", "value": "<image>\n<image>\nWhich?"}
    assert llava_record("k", several, ["i0.jpg", "i1.png"])["image"] == ["i0.jpg", "i1.png"]


def test_llava_wants_alternating_turns():
    turns = [*TURNS, {"from": "gpt", "value": "More."}]
    with pytest.raises(Skip, match="turns_not_alternating"):
        llava_record("k", read_record(video(conversations=turns), MEMBERS), ["v.mp4"])


def test_a_streaming_record_moves_to_its_file_clock():
    conv = [
        {"role": "user", "content": "Go.", "time": 62.5},
        {"role": "assistant", "content": "Bars.", "time": 65.0},
    ]
    rec = video(stream=True, timestamps=[63.0, 64.0], start_time=62.5, end_time=70.0)
    s = read_record({**rec, "conversation": conv}, MEMBERS)
    moved = stream_in_file(s)
    assert moved["start_time"] == 0.0 and moved["end_time"] == 7.0
    assert [m["time"] for m in moved["conversation"]] == [-0.5, 2.0]  # the question still first
    with pytest.raises(Skip, match="stream_not_in_llava"):
        llava_record("k", s, ["v.mp4"])


def test_file_names_are_safe_and_tell_keys_apart():
    assert media_stem("abc_12-3") == "abc_12-3"
    odd = [media_stem(k) for k in ("a/b", "a_b", "a b", "../a", "é", "")]
    assert len(set(odd)) == len(odd) and all(s.isascii() and "/" not in s for s in odd)
    assert media_stem("a_b") == "a_b" and media_stem("a/b").startswith("a_b-")
    assert media_stem("x" * 500) != media_stem("x" * 499) and len(media_stem("x" * 500)) < 100
    assert image_path("k", 0, 1, "png").endswith("/k.png")
    assert image_path("k", 1, 2, "jpg").endswith("/k_1.jpg")
    assert video_path("k").startswith("videos/") and video_path("k") == video_path("k")
