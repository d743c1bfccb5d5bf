"""One annotation record checked and normalised: its modality, media paths and conversation.

Pure functions over a parsed JSON object, so every rule is tested without a run. A record is
LLaVA / VideoLLaMA3 style (DESIGN §5): ``image`` a path or a list of paths, ``video`` a path or a
one-element list, ``conversations`` of ``{from, value}`` turns (``messages`` of ``{role,
content}``, as text chat sets ship them, is read the same way), or a VideoLLaMA3 streaming
record (``stream``, ``video``, ``start_time``, ``end_time``, ``conversation`` of ``{role,
content, time}``).

Rules (the ledger reason in brackets): an object [``not_an_object``]; image and video fields of
the right shape [``bad_media_field``], not both [``image_and_video``], one video at most
[``multiple_videos``]; no media where the format has none [``unexpected_media``]; a list of
well-formed turns [``no_conversations``, ``malformed_turn``], none empty [``empty_turn``], a
question and an answer [``no_answer``]; leading answers removed as VideoLLaMA3's ``train.py``
does (fix ``leading_turns_removed``); ``<image>``/``<video>`` tags in the human turns matching
the media: none at all gets them prepended to the first human turn, as the original trainers do
(fix ``media_tag_added``), any other count, a tag in an answer, a tag of the other kind or a tag
without media is [``tag_mismatch``].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

IMAGE_TAG, VIDEO_TAG = "<image>", "<video>"
ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}
STREAM_ROLES = ("user", "assistant", "system")
#: fields the import reads; every other field of a record is carried in its ``meta``
CONSUMED = (
    "image",
    "video",
    "conversations",
    "messages",
    "stream",
    "start_time",
    "end_time",
    "conversation",
)


@dataclass
class Checked:
    """A record's verdict: its modality and normalised fields, or the reason it is refused."""

    reason: str | None = None
    modality: str | None = None  # image | video | text
    media: list[str] = field(default_factory=list)
    fields: dict = field(default_factory=dict)  # conversations, or the stream's fields
    fixes: list[str] = field(default_factory=list)


class Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _paths(value, multiple: str | None = None) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Refused("bad_media_field")
    if not all(isinstance(p, str) and p.strip() for p in items):
        raise Refused("bad_media_field")
    if multiple and len(items) > 1:
        raise Refused(multiple)
    return list(items)


def _turns(rec: dict) -> list[dict]:
    """``conversations`` (or ``messages``) as ``{from, value}`` turns with LLaVA's role names."""
    raw = rec.get("conversations")
    key_from, key_value = "from", "value"
    if raw is None and "messages" in rec:
        raw, key_from, key_value = rec["messages"], "role", "content"
    if isinstance(raw, str):  # a table's conversation column may hold JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise Refused("bad_json") from None
    if not isinstance(raw, list) or not raw:
        raise Refused("no_conversations")
    turns = []
    for t in raw:
        if not isinstance(t, dict):
            raise Refused("malformed_turn")
        role = t.get(key_from, t.get("role") if key_from == "from" else None)
        value = t.get(key_value, t.get("content") if key_value == "value" else None)
        if role not in ROLES or not isinstance(value, str):
            raise Refused("malformed_turn")
        if not value.strip():
            raise Refused("empty_turn")
        turns.append({"from": ROLES[role], "value": value})
    return turns


def _strip_leading(turns: list[dict], fixes: list[str]) -> list[dict]:
    """Answers before the first question go, as VideoLLaMA3's ``train.py`` removes them."""
    start = 0
    while start < len(turns) and turns[start]["from"] == "gpt":
        start += 1
    if start:
        fixes.append("leading_turns_removed")
    turns = turns[start:]
    if not any(t["from"] == "human" for t in turns) or not any(t["from"] == "gpt" for t in turns):
        raise Refused("no_answer")
    return turns


def _match_tags(turns: list[dict], modality: str, n_media: int, fixes: list[str]) -> list[dict]:
    """Tags in the human turns equal to the media; none at all are prepended (see module)."""
    tags = {"image": IMAGE_TAG, "video": VIDEO_TAG}
    own = tags.get(modality)
    for t in turns:
        for kind, tag in tags.items():
            if tag in t["value"] and (kind != modality or t["from"] != "human"):
                raise Refused("tag_mismatch")
    if own is None:
        return turns
    count = sum(t["value"].count(own) for t in turns)
    if count == n_media:
        return turns
    if count:
        raise Refused("tag_mismatch")
    first = next(i for i, t in enumerate(turns) if t["from"] == "human")
    fixed = list(turns)
    fixed[first] = {**turns[first], "value": own * n_media + "\n" + turns[first]["value"]}
    fixes.append("media_tag_added")
    return fixed


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused("malformed_stream")
    return float(value)


def _stream(rec: dict, videos: list[str]) -> Checked:
    if len(videos) != 1:
        raise Refused("malformed_stream")
    start, end = _number(rec.get("start_time")), _number(rec.get("end_time"))
    if start < 0 or end <= start:
        raise Refused("malformed_stream")
    conv = rec.get("conversation")
    if not isinstance(conv, list) or not conv:
        raise Refused("no_conversations")
    out = []
    for m in conv:
        if not isinstance(m, dict) or m.get("role") not in STREAM_ROLES:
            raise Refused("malformed_turn")
        if not isinstance(m.get("content"), str):
            raise Refused("malformed_turn")
        if not m["content"].strip():
            raise Refused("empty_turn")
        out.append({"role": m["role"], "content": m["content"], "time": _number(m.get("time"))})
    if not any(m["role"] == "assistant" for m in out):
        raise Refused("no_answer")
    if any(tag in m["content"] for m in out for tag in (IMAGE_TAG, VIDEO_TAG)):
        raise Refused("tag_mismatch")
    return Checked(
        modality="video",
        media=videos,
        fields={"stream": True, "start_time": start, "end_time": end, "conversation": out},
    )


def check_record(rec, fmt: str, image_tag_for_video: bool = False) -> Checked:
    """The verdict on one parsed record of format ``fmt`` (``ingest.config.FORMATS``).

    ``image_tag_for_video``: an ``<image>`` tag of a video record is read as ``<video>`` (fix
    ``video_tag_from_image``): LLaVA-NeXT's video data (LLaVA-Video-178K) writes ``<image>``."""
    try:
        return _check(rec, fmt, image_tag_for_video)
    except Refused as r:
        return Checked(reason=r.reason)


def _retag(turns: list[dict], fixes: list[str]) -> list[dict]:
    if not any(IMAGE_TAG in t["value"] for t in turns):
        return turns
    fixes.append("video_tag_from_image")
    return [{**t, "value": t["value"].replace(IMAGE_TAG, VIDEO_TAG)} for t in turns]


def _check(rec, fmt: str, image_tag_for_video: bool = False) -> Checked:
    if not isinstance(rec, dict):
        raise Refused("not_an_object")
    images = _paths(rec.get("image"))
    videos = _paths(rec.get("video"), multiple="multiple_videos")
    if images and videos:
        raise Refused("image_and_video")
    if fmt == "text" and (images or videos):
        raise Refused("unexpected_media")
    if fmt == "parquet" and videos:
        raise Refused("unexpected_media")
    if rec.get("stream"):
        if fmt != "videollama3":
            raise Refused("unexpected_media")
        return _stream(rec, videos)
    modality = "video" if videos else "image" if images else "text"
    fixes: list[str] = []
    turns = _strip_leading(_turns(rec), fixes)
    if modality == "video" and image_tag_for_video:
        turns = _retag(turns, fixes)
    turns = _match_tags(turns, modality, len(images or videos), fixes)
    return Checked(
        modality=modality, media=images or videos, fields={"conversations": turns}, fixes=fixes
    )


def meta_of(rec) -> dict:
    """A record's other fields (its original ``id``, ``source`` ...), kept in ``meta``."""
    if not isinstance(rec, dict):
        return {}
    return {k: v for k, v in rec.items() if k not in CONSUMED}
