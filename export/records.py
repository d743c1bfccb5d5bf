"""A shard set's training record (DESIGN §5) read into what an export needs: its kind, the
members holding its pixels, its frame times and its dialogue, checked.

Pure functions over the parsed ``json`` member and the set of the sample's member names, so
each rule is tested without a shard. A record that no trainer could read raises :class:`Skip`
with the reason the export's ``skipped.jsonl`` records; nothing is dropped silently.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"
#: a turn's speaker as the trainers spell it: VideoLLaMA3 takes every turn not from "human"
#: as the assistant's, so "user" must become "human" before it reaches that loader
SPEAKERS = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}
#: what a still image member may be (the original bytes are copied as they are)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class Skip(Exception):
    """A record the export leaves out, with the reason written to ``skipped.jsonl``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Sample:
    """One record, ready for a layout: ``kind`` is image | video | stream | text."""

    kind: str
    members: list[str] = field(default_factory=list)  # member extensions, in record order
    timestamps: list[float] = field(default_factory=list)  # a video's frame times, seconds
    conversations: list[dict] = field(default_factory=list)  # {from, value}, speakers mapped
    stream: dict | None = None  # start_time, end_time, conversation (streaming records)


def member_of(name: object, members: set[str]) -> str:
    """The member extension a record's media name refers to: ``k.f0000.jpg`` -> ``f0000.jpg``.

    A mixture renames its samples but keeps their records, so the name's own key part may be
    another sample's; the extension is what identifies the member within this sample."""
    if not isinstance(name, str) or not name:
        raise Skip("bad_media_name")
    ext = name.rsplit("/", 1)[-1].split(".", 1)[-1].lower()
    if ext not in members:
        raise Skip("missing_member")
    return ext


def _names(value: object) -> list:
    return value if isinstance(value, list) else [value]


def conversations_of(rec: dict) -> list[dict]:
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Skip("no_conversations")
    out = []
    for t in turns:
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise Skip("bad_turn")
        speaker = SPEAKERS.get(t.get("from"))
        if speaker is None:
            raise Skip("bad_turn")
        out.append({"from": speaker, "value": t["value"]})
    if not any(t["from"] == "human" for t in out) or not any(t["from"] == "gpt" for t in out):
        raise Skip("no_answer" if any(t["from"] == "human" for t in out) else "no_question")
    return out


def _time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Skip("bad_timestamps")
    return round(float(value), 3)


def _frames(rec: dict, members: set[str]) -> tuple[list[str], list[float]]:
    frames = rec.get("frames")
    times = rec.get("timestamps")
    if not isinstance(frames, list) or not frames:
        raise Skip("no_frames")
    if not isinstance(times, list) or len(times) != len(frames):
        raise Skip("bad_timestamps")
    names = [member_of(f, members) for f in frames]
    if any(n.rsplit(".", 1)[-1] not in ("jpg", "jpeg") for n in names):
        raise Skip("frame_not_jpeg")
    ts = [_time(t) for t in times]
    if ts[0] < 0 or any(b <= a for a, b in itertools.pairwise(ts)):
        raise Skip("bad_timestamps")
    return names, ts


def _stream(rec: dict) -> dict:
    turns = rec.get("conversation")
    if not isinstance(turns, list) or not turns:
        raise Skip("no_conversations")
    conv = []
    for t in turns:
        if (
            not isinstance(t, dict)
            or t.get("role") not in ("user", "assistant")
            or not isinstance(t.get("content"), str)
        ):
            raise Skip("bad_turn")
        conv.append({"role": t["role"], "content": t["content"], "time": _time(t.get("time"))})
    if not any(t["role"] == "assistant" for t in conv):
        raise Skip("no_answer")
    start, end = _time(rec.get("start_time")), _time(rec.get("end_time"))
    if end <= start:
        raise Skip("bad_timestamps")
    return {"start_time": start, "end_time": end, "conversation": conv}


def read_record(rec: object, members: set[str]) -> Sample:
    """The :class:`Sample` of one record whose sample holds ``members`` (extensions)."""
    if not isinstance(rec, dict):
        raise Skip("bad_json")
    if rec.get("stream"):
        names, ts = _frames(rec, members)
        return Sample("stream", names, ts, stream=_stream(rec))
    if rec.get("image"):  # an image wins over a video, as in VideoLLaMA3's loader
        names = [member_of(n, members) for n in _names(rec["image"])]
        if any(n.rsplit(".", 1)[-1] not in IMAGE_EXTS for n in names):
            raise Skip("not_an_image")
        return Sample("image", names, conversations=conversations_of(rec))
    if rec.get("video"):
        if len(_names(rec["video"])) != 1:
            raise Skip("several_videos")
        names, ts = _frames(rec, members)
        return Sample("video", names, ts, conversations=conversations_of(rec))
    return Sample("text", conversations=conversations_of(rec))


def count_tag(turns: list[dict], tag: str) -> int:
    return sum(t["value"].count(tag) for t in turns)


def with_tags(turns: list[dict], tag: str, n: int) -> list[dict]:
    """``turns`` with ``n`` ``tag`` s: as they are when they hold exactly ``n``; with ``n`` tags
    put before the first question when they hold none (what VideoLLaMA3's and LLaVA-NeXT's
    loaders do for one, written out so every trainer sees it); :class:`Skip` otherwise."""
    have = count_tag(turns, tag)
    if have == n:
        return turns
    if have:
        raise Skip(f"{tag.strip('<>')}_tag_mismatch")
    out = [dict(t) for t in turns]
    first = next(i for i, t in enumerate(out) if t["from"] == "human")
    out[first]["value"] = f"{tag}\n" * n + out[first]["value"]
    return out
