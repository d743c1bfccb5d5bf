"""The two trainers' record formats, from a checked :class:`~export.records.Sample`.

**videollama3** (``annotations_{kind}.jsonl``, one object a line, what ``videollama3/train.py``'s
``LazySupervisedDataset`` reads through ``datasets.load_dataset("json")``, one file per kind,
every line with the same keys, ``null`` where a record has none of it):

- image: ``{"id", "image": ["images/ab/k.jpg", ...], "conversations": [{from, value}]}``, one
  ``<image>`` per image;
- video: ``{"id", "video": ["videos/ab/k.mp4"], "conversations"}``, one ``<video>``;
- stream: ``{"id", "video": [...], "stream": true, "start_time", "end_time",
  "conversation": [{role, content, time}]}``, times in seconds of the exported file
  (:func:`stream_in_file`);
- text: ``{"id", "conversations"}``, ``image`` and ``video`` null.

Why one file per kind with every key: ``datasets``' JSON loader takes a file's columns and
their types from its first block (about 10 MB) and fails on a later block that differs
(``column names don't match``, ``Couldn't cast array of type list<string> to null``), and
VideoLLaMA3 then falls back to parsing every line into Python objects on every rank (after
printing the traceback). A file of one kind has one schema; ``concatenate_datasets`` over the
files (what ``train.py`` does with several ``--data_path``) aligns a ``null`` column with a
typed one; the loader takes ``null`` as absent (``data_dict['image'] is not None``).

**llava** (``llava.json``, one JSON list, what LLaVA's and LLaVA-NeXT's ``train.py`` read with
``json.load``; keys absent where a record has none, as LLaVA tests ``'image' in sample``):
``{"id", "image": "images/ab/k.jpg", "conversations"}`` with one ``<image>``; several images as
a list (LLaVA-NeXT only); a video as LLaVA-Video does in LLaVA-NeXT's ``train.py``:
``"video": "videos/ab/k.mp4"`` with ``<image>`` standing for the whole video in the first
question; turns strictly human, gpt, human, ... (LLaVA's ``preprocess`` asserts it).
Streaming records and system turns have no LLaVA form: skipped with their reason.
"""

from __future__ import annotations

from export.records import IMAGE_TAG, VIDEO_TAG, Sample, Skip, with_tags

VIDEOLLAMA3 = "videollama3"
LLAVA = "llava"
LAYOUTS = (VIDEOLLAMA3, LLAVA)
#: the annotation file LLaVA's layout writes beside the media folder
LLAVA_FILE = "llava.json"
#: every line of a VideoLLaMA3 annotation file has these keys (null where absent)
VIDEOLLAMA3_KEYS = (
    "id", "image", "video", "conversations", "stream", "start_time", "end_time", "conversation",
)  # fmt: skip


def videollama3_file(kind: str) -> str:
    """``annotations_{image,video,stream,text}.jsonl``: one file per kind of record."""
    return f"annotations_{kind}.jsonl"


def videollama3_record(key: str, s: Sample, media: list[str]) -> dict:
    rec: dict = dict.fromkeys(VIDEOLLAMA3_KEYS)
    rec.update({"id": key, "stream": False})
    if s.kind == "stream":
        rec.update({"video": media, "stream": True, **stream_in_file(s)})
    elif s.kind == "image":
        rec["image"] = media
        rec["conversations"] = with_tags(s.conversations, IMAGE_TAG, len(media))
    elif s.kind == "video":
        rec["video"] = media
        rec["conversations"] = with_tags(s.conversations, VIDEO_TAG, 1)
    else:
        rec["conversations"] = s.conversations
    return rec


def stream_in_file(s: Sample) -> dict:
    """A streaming record's span and message times in seconds of its exported file, which
    starts with the first frame (``export.mux``): VideoLLaMA3 trims the file with ``-ss
    start_time -t (end_time - start_time)`` and puts each frame before the messages at or after
    its time. Times move by the first frame's time; ``start_time`` is 0 (the file's start),
    and a message from before the first frame keeps its place (a negative time)."""
    assert s.stream is not None
    t0 = s.timestamps[0]
    conv = [{**m, "time": round(m["time"] - t0, 3)} for m in s.stream["conversation"]]
    return {
        "start_time": 0.0,
        "end_time": round(s.stream["end_time"] - t0, 3),
        "conversation": conv,
    }


def _alternating(turns: list[dict]) -> None:
    if any(t["from"] == "system" for t in turns):
        raise Skip("system_turn_not_in_llava")
    if len(turns) % 2 or any(
        t["from"] != ("human" if i % 2 == 0 else "gpt") for i, t in enumerate(turns)
    ):
        raise Skip("turns_not_alternating")


def llava_record(key: str, s: Sample, media: list[str]) -> dict:
    if s.kind == "stream":
        raise Skip("stream_not_in_llava")
    _alternating(s.conversations)
    rec: dict = {"id": key}
    if s.kind == "image":
        rec["image"] = media[0] if len(media) == 1 else media
        rec["conversations"] = with_tags(s.conversations, IMAGE_TAG, len(media))
    elif s.kind == "video":
        if any(IMAGE_TAG in t["value"] for t in s.conversations):
            raise Skip("image_tag_in_video_record")
        turns = [{**t, "value": t["value"].replace(VIDEO_TAG, IMAGE_TAG)} for t in s.conversations]
        rec["video"] = media[0]
        rec["conversations"] = with_tags(turns, IMAGE_TAG, 1)
    else:
        rec["conversations"] = s.conversations
    return rec


RECORD_OF = {VIDEOLLAMA3: videollama3_record, LLAVA: llava_record}
