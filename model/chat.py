"""How the trainer renders a record: :mod:`manifests.chat`'s messages with VideoLLaMA3's own
training template for streaming frames.

VideoLLaMA3's ``DEFAULT_CHAT_TEMPLATE`` (``videollama3/model/processor.py``) writes a timed
streaming frame as ``Time 3.0s: <image>`` (a space after the colon) and a video frame as
``Time 3.0s:<image>`` (none; transformers' processor writes video labels that way too).
:data:`TRAIN_CHAT_TEMPLATE` is :data:`manifests.chat.CHAT_TEMPLATE` with that space in the
streaming label, and :func:`processor_inputs` is :func:`manifests.chat.processor_inputs`
rendering with it. The processor saved with every checkpoint carries the same template, so a
prompt at inference time renders as the model was trained.
"""

from __future__ import annotations

from manifests.chat import CHAT_TEMPLATE, record_to_messages

_STREAM_LABEL = "{{- 'Time ' + '%.1f' % c['time'] + 's:' -}}"
if CHAT_TEMPLATE.count(_STREAM_LABEL) != 1:  # fail loudly if manifests.chat changes its label
    raise RuntimeError("manifests.chat.CHAT_TEMPLATE no longer has the streaming frame label")
#: the chat template the trainer renders with (module docs)
TRAIN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(_STREAM_LABEL, _STREAM_LABEL.replace("s:'", "s: '"))


def render(rec: dict, processor) -> str:
    """The chat text of ``rec`` (one ``<|image_pad|>``/``<|video_pad|>`` per image or video)."""
    messages, _ = record_to_messages(rec)
    return processor.apply_chat_template(
        messages, tokenize=False, chat_template=TRAIN_CHAT_TEMPLATE
    )


def _image(data: bytes):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def processor_inputs(rec: dict, members: dict[str, bytes], processor, **kwargs):
    """:func:`manifests.chat.processor_inputs` rendered with :data:`TRAIN_CHAT_TEMPLATE`:
    ``rec`` through ``processor`` (a transformers ``VideoLlama3Processor``) with the sample's
    pixels; ``members`` maps a shard member's file name (``{key}.f0000.jpg``) or extension
    (``f0000.jpg``) to its bytes. Video frames go in with their own timestamps (the processor
    labels each ``Time t s:``); streaming frames go in as images, labelled by the template."""
    import numpy as np

    _, vis = record_to_messages(rec)
    text = render(rec, processor)

    def member(name: str) -> bytes:
        return members[name] if name in members else members[name.split(".", 1)[1]]

    if vis.kind == "video":
        from transformers.video_utils import VideoMetadata

        frames = np.stack([np.asarray(_image(member(n))) for n in vis.members])
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


__all__ = ["TRAIN_CHAT_TEMPLATE", "processor_inputs", "render"]
