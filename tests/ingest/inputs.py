"""Inputs of the import tests, made here: a LLaVA-style JSONL with its image folder (good
records and one of each kind of bad one), VideoLLaMA3 annotations with real videos, text chat,
and a hub-style Parquet table."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image


def jpeg(photo, side: int = 96, quality: int = 85) -> bytes:
    im = Image.fromarray(photo)
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def turns(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


#: source line (1-based) -> what happens to it in a LLaVA import with modalities image + text
LLAVA_EXPECTED = {
    1: ("image", "kept", None),
    2: ("image", "kept", None),  # two images, two tags
    3: ("image", "kept", None),  # no tag: one prepended (fixes: media_tag_added)
    4: ("image", "error", "tag_mismatch"),
    5: ("image", "error", "missing_media"),
    6: ("image", "error", "outside_root"),  # ../
    7: ("image", "error", "outside_root"),  # a symlink out
    8: ("image", "error", "truncated"),
    9: ("image", "error", "not_an_image"),
    10: ("image", "error", "empty_turn"),
    11: ("image", "error", "malformed_turn"),
    12: (None, "error", "bad_json"),
    13: (None, "error", "not_utf8"),
    14: ("image", "dropped", "duplicate"),  # line 1 again
    15: ("text", "kept", None),
    16: (None, "error", "not_an_object"),
    # line 17 is blank: no record
    18: ("video", "dropped", "video_not_imported"),
    19: ("text", "kept", None),  # a leading answer removed
}


def llava_inputs(root: Path, photos: dict) -> tuple[Path, Path]:
    """``root/images`` and ``root/llava.jsonl`` whose lines are :data:`LLAVA_EXPECTED`."""
    media = root / "images"
    (media / "coco").mkdir(parents=True)
    names = sorted(photos)
    for i, name in enumerate(names[:4]):
        (media / "coco" / f"{i}.jpg").write_bytes(jpeg(photos[name]))
    good = (media / "coco" / "0.jpg").read_bytes()
    (media / "coco" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (media / "coco" / "notes.jpg").write_text("not a picture")
    (root / "secret.jpg").write_bytes(good)
    os.symlink(root / "secret.jpg", media / "coco" / "link.jpg")
    lines: list[bytes] = [
        json.dumps(
            {"id": "a", "image": "coco/0.jpg", "conversations": turns("<image>\nWhat?", "A")}
        ),
        json.dumps(
            {
                "image": ["coco/1.jpg", "coco/2.jpg"],
                "conversations": turns("<image>\n<image>\nCompare.", "Alike."),
            }
        ),
        json.dumps({"image": "coco/3.jpg", "conversations": turns("Describe.", "A photo.")}),
        json.dumps({"image": "coco/1.jpg", "conversations": turns("<image><image>Q", "A")}),
        json.dumps({"image": "coco/nope.jpg", "conversations": turns("<image>Q", "A")}),
        json.dumps({"image": "../secret.jpg", "conversations": turns("<image>Q", "A")}),
        json.dumps({"image": "coco/link.jpg", "conversations": turns("<image>Q", "A")}),
        json.dumps({"image": "coco/broken.jpg", "conversations": turns("<image>Q", "A")}),
        json.dumps({"image": "coco/notes.jpg", "conversations": turns("<image>Q", "A")}),
        json.dumps({"image": "coco/0.jpg", "conversations": turns("<image>Q", " ")}),
        json.dumps({"image": "coco/0.jpg", "conversations": [{"value": "Q"}]}),
        '{"image": "coco/0.jpg", "conversations": [',
        b'{"conversations": [{"from": "human", "value": "caf\xe9"}]}',
        None,  # line 1 again
        json.dumps({"conversations": turns("What is 2+2?", "4.")}),
        "[1, 2]",
        "",
        json.dumps({"video": "v.mp4", "conversations": turns("<video>Q", "A")}),
        json.dumps({"conversations": [{"from": "gpt", "value": "Hi!"}, *turns("Hi?", "Hello.")]}),
    ]
    lines[13] = lines[0]
    ann = root / "llava.jsonl"
    ann.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return ann, media


def text_inputs(root: Path, n: int = 6) -> Path:
    """A JSON list of text chats (``messages`` and ``conversations`` alike)."""
    recs = [{"id": i, "conversations": turns(f"Question {i}?", f"Answer {i}.")} for i in range(n)]
    recs.append(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
    )
    path = root / "chat.json"
    path.write_text(json.dumps(recs))
    return path


def parquet_inputs(root: Path, photos: dict) -> Path:
    """A hub-style table: ``image`` as ``{bytes, path}`` (null for a text row), conversations."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(photos)
    images = [{"bytes": jpeg(photos[n]), "path": f"{n}.jpg"} for n in names[:3]]
    images += [None, {"bytes": b"junk", "path": "junk.jpg"}]
    conv = [turns("<image>\nWhat is it?", f"Photo {i}.") for i in range(3)]
    conv += [turns("Hello?", "Hi."), turns("<image>\nAnd this?", "Junk.")]
    table = pa.table({"id": [f"r{i}" for i in range(5)], "image": images, "conversations": conv})
    path = root / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=2)
    return path


def videollama3_inputs(root: Path, photos: dict) -> tuple[Path, Path]:
    """VideoLLaMA3's own layout: ``root/data`` (its --data_folder) with images and videos, and
    an annotations JSONL of image lists, a video, a streaming record, text and bad records."""
    from video_prep.sample_videos import pattern_video

    data = root / "data"
    (data / "videos").mkdir(parents=True)
    (data / "images").mkdir()
    (data / "images" / "a.jpg").write_bytes(jpeg(photos[sorted(photos)[0]]))
    pattern_video(data / "videos" / "clock.mp4", 4, size="96x72")
    recs = [
        {"image": ["images/a.jpg"], "conversations": turns("<image>\nWhat is it?", "A photo.")},
        {"video": ["videos/clock.mp4"], "conversations": turns("<video>\nWhat runs?", "A clock.")},
        {
            "stream": True,
            "video": ["videos/clock.mp4"],
            "start_time": 1.0,
            "end_time": 3.0,
            "conversation": [
                {"role": "user", "content": "Narrate the video.", "time": 1.0},
                {"role": "assistant", "content": "The clock ticks.", "time": 2.5},
            ],
        },
        {"video": ["videos/clock.mp4", "videos/clock.mp4"], "conversations": turns("Q", "A")},
        {"video": ["videos/gone.mp4"], "conversations": turns("<video>Q", "A")},
        {"conversations": turns("Tell a joke.", "Two cats walk into a bar.")},
    ]
    ann = data / "annotations.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return ann, data


#: annotation line -> (modality, status, reason) of the VideoLLaMA3 import
VL3_EXPECTED = {
    1: ("image", "kept", None),
    2: ("video", "kept", None),
    3: ("video", "kept", None),
    4: (None, "error", "multiple_videos"),
    5: ("video", "error", "missing_media"),
    6: ("text", "kept", None),
}
