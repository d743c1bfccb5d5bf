"""How a training record (DESIGN §5) becomes the chat VideoLLaMA3 is trained on.

transformers ships ``VideoLlama3Processor`` without a chat template, so this module owns it:
:data:`CHAT_TEMPLATE` renders messages with ``<|im_start|>role ... <|im_end|>`` turns, a video
as one ``<|video_pad|>`` (which the processor expands to ``Time 0.0s:<pads>,Time 1.0s:<pads>``
from the frame timestamps), an image as ``<|image_pad|>`` followed by ``\\n``, and a streaming
frame as its own ``<|stream_start|>stream`` turn labelled ``Time {t:.1f}s:``.
:func:`record_to_messages` turns a record into those messages, interleaving streaming frames
with the answers by time as VideoLLaMA3's own loader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
STREAM_START = "<|stream_start|>"
STREAM_END = "<|stream_end|>"
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", IMAGE_PAD, VIDEO_PAD, STREAM_START, STREAM_END]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set ident = 'stream' if message['role'] == 'stream' else 'im' -%}"
    "{{- '<|' + ident + '_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}"
    "{%- if c['time'] is defined -%}{{- 'Time ' + '%.1f' % c['time'] + 's:' -}}{%- endif -%}"
    "{{- '<|image_pad|>\\n' -}}"
    "{%- elif c['type'] == 'video' -%}{{- '<|video_pad|>\\n' -}}"
    "{%- elif c['type'] == 'text' -%}{{- c['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|' + ident + '_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass
class Visual:
    """The pixels a rendered record needs, as shard member names (frames) and timestamps."""

    kind: str | None = None  # image | video | stream | None (text only)
    members: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)


def _human_content(text: str, tag: str, kind: str) -> list[dict]:
    chunks = text.split(tag)
    content: list[dict] = []
    for i, chunk in enumerate(chunks):
        if i:
            content.append({"type": kind})
        if chunk.strip():
            content.append({"type": "text", "text": chunk.strip()})
    return content


def _plain(rec: dict) -> tuple[list[dict], Visual]:
    if rec.get("video"):
        tag, kind = "<video>", "video"
        vis = Visual("video", list(rec.get("frames") or []), list(rec.get("timestamps") or []))
    elif rec.get("image"):
        tag, kind = "<image>", "image"
        vis = Visual("image", list(rec["image"]))
    else:
        tag, kind, vis = None, None, Visual()
    messages = []
    for turn in rec["conversations"]:
        if turn["from"] in ("human", "user"):
            content = _human_content(turn["value"], tag, kind) if tag else turn["value"]
            messages.append({"role": "user", "content": content})
        elif turn["from"] == "system":
            messages.append({"role": "system", "content": turn["value"]})
        else:
            messages.append({"role": "assistant", "content": turn["value"]})
    return messages, vis


def _stream(rec: dict) -> tuple[list[dict], Visual]:
    """Frames interleaved with the dialogue: every frame up to a message's time comes first."""
    ts = list(rec.get("timestamps") or [])
    names = list(rec.get("frames") or [])
    start = float(rec.get("start_time") or 0.0)
    messages: list[dict] = []
    shown = 0
    for m in rec["conversation"]:
        while shown < len(ts) and ts[shown] <= m["time"]:
            frame = {"type": "image", "time": ts[shown] - start}
            messages.append({"role": "stream", "content": [frame]})
            shown += 1
        messages.append({"role": m["role"], "content": m["content"]})
    return messages, Visual("stream", names[:shown], ts[:shown])


def record_to_messages(rec: dict) -> tuple[list[dict], Visual]:
    """Chat messages for :data:`CHAT_TEMPLATE` and the frames or images they refer to."""
    return _stream(rec) if rec.get("stream") else _plain(rec)


def _image(data: bytes):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def member_reader(members: dict[str, bytes]):
    """A lookup of a shard member's bytes by its file name (``{key}.f0000.jpg``) or by its
    extension (``f0000.jpg``), whichever ``members`` is keyed by."""

    def member(name: str) -> bytes:
        return members[name] if name in members else members[name.split(".", 1)[1]]

    return member


def frames_of(vis: Visual, members: dict[str, bytes]):
    """The frames ``vis`` names, decoded to RGB and stacked ``[T, H, W, 3]``."""
    import numpy as np

    member = member_reader(members)
    return np.stack([np.asarray(_image(member(n))) for n in vis.members])


def processor_inputs(
    rec: dict, members: dict[str, bytes], processor, chat_template: str = CHAT_TEMPLATE, **kwargs
):
    """Render ``rec`` with ``chat_template`` (default :data:`CHAT_TEMPLATE`) and run
    ``processor`` (a transformers ``VideoLlama3Processor``) on it with the sample's pixels.
    ``members`` maps a shard member's file name (``{key}.f0000.jpg``) or extension
    (``f0000.jpg``) to its bytes.

    Video frames go in with their own timestamps (the processor labels each ``Time t s:``);
    streaming frames go in as images, labelled by the template."""
    messages, vis = record_to_messages(rec)
    text = processor.apply_chat_template(messages, tokenize=False, chat_template=chat_template)
    member = member_reader(members)

    if vis.kind == "video":
        from transformers.video_utils import VideoMetadata

        frames = frames_of(vis, members)
        # the processor reads timestamps as frames_indices / fps: milliseconds keep them exact
        meta = VideoMetadata(
            total_num_frames=len(frames),
            fps=1000.0,
            frames_indices=[round(t * 1000) for t in vis.timestamps],
        )
        return processor(
            text=[text],
            videos=[frames],
            video_metadata=[meta],
            do_sample_frames=False,
            return_tensors="pt",
            **kwargs,
        )
    if vis.kind in ("image", "stream"):
        images = [_image(member(n)) for n in vis.members]
        return processor(text=[text], images=images, return_tensors="pt", **kwargs)
    return processor(text=[text], return_tensors="pt", **kwargs)
