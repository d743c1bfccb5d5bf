"""How the trainer renders a record: :mod:`manifests.chat`'s messages with VideoLLaMA3's own
training template for streaming frames.

VideoLLaMA3's ``DEFAULT_CHAT_TEMPLATE`` (``videollama3/model/processor.py``) writes a timed
streaming frame as ``Time 3.0s: <image>`` (a space after the colon) and a video frame as
``Time 3.0s:<image>`` (none; transformers' processor writes video labels that way too).
:data:`TRAIN_CHAT_TEMPLATE` is :data:`manifests.chat.CHAT_TEMPLATE` with that space in the
streaming label, and :func:`processor_inputs` is :func:`manifests.chat.processor_inputs`
rendering with it. The processor saved with every checkpoint carries the same template, so a
prompt at inference time renders as the model was trained.

Streaming frames. VideoLLaMA3's ``train.py`` (``_convert_stream``) hands a streaming clip to its
processor as one *video* (modal ``video``, ``video_merge_size``): its frames are merged like
video frames and its model's DiffFP (``_get_compression_mask``) runs across them, while its
template still writes each frame as its own stream turn. :func:`processor_inputs` does the same
with transformers' port (``stream_frames="video"``, the default): the frames go through the
video processor as one clip (``pixel_values_videos``, ``video_grid_thw`` ``[T, h, w]``,
``video_merge_sizes``, ``video_compression_mask``), and each frame's ``<|image_pad|>`` in the
rendered text becomes that frame's ``<|video_pad|>`` placeholders, so the model scatters the
clip's features, frame by frame, into the stream turns (the port's video path, which is the
one that takes a DiffFP mask). ``stream_frames="image"`` keeps every frame a separate image.
"""

from __future__ import annotations

from manifests.chat import CHAT_TEMPLATE, IMAGE_PAD, frames_of, record_to_messages
from manifests.chat import processor_inputs as shared_processor_inputs

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


def _stream_as_video(text: str, frames, processor, videos_kwargs: dict):
    """A streaming clip through the video processor as one video, and ``text`` with each
    frame's ``<|image_pad|>`` replaced by its ``<|video_pad|>`` placeholders (module docs)."""
    from transformers import BatchFeature

    if text.count(IMAGE_PAD) != len(frames):
        raise ValueError(f"{text.count(IMAGE_PAD)} frame placeholders for {len(frames)} frames")
    video = processor.video_processor(
        videos=[frames], do_sample_frames=False, return_tensors="pt", **videos_kwargs
    )
    _, h, w = video["video_grid_thw"][0].tolist()
    merge = int(video["video_merge_sizes"][0])
    text = text.replace(IMAGE_PAD, processor.video_token * (h * w // merge**2))
    data = dict(processor.tokenizer([text], return_tensors="pt"))
    for k in ("pixel_values_videos", "video_grid_thw", "video_merge_sizes"):
        data[k] = video[k]
    data["video_compression_mask"] = video["video_compression_mask"].to(bool)
    return BatchFeature(data)


def processor_inputs(
    rec: dict, members: dict[str, bytes], processor, stream_frames="video", **kwargs
):
    """:func:`manifests.chat.processor_inputs` rendered with :data:`TRAIN_CHAT_TEMPLATE`:
    ``rec`` through ``processor`` (a transformers ``VideoLlama3Processor``) with the sample's
    pixels; ``members`` maps a shard member's file name (``{key}.f0000.jpg``) or extension
    (``f0000.jpg``) to its bytes. Video frames go in with their own timestamps (the processor
    labels each ``Time t s:``); streaming frames go in as one video clip (``stream_frames=
    "video"``, VideoLLaMA3's way, with ``videos_kwargs``) or as images (``"image"``, with
    ``images_kwargs``), labelled by the template either way."""
    _, vis = record_to_messages(rec)
    if vis.kind == "stream" and stream_frames == "video":
        frames = frames_of(vis, members)
        text = render(rec, processor)
        return _stream_as_video(text, frames, processor, kwargs["videos_kwargs"])
    return shared_processor_inputs(
        rec, members, processor, chat_template=TRAIN_CHAT_TEMPLATE, **kwargs
    )


__all__ = ["TRAIN_CHAT_TEMPLATE", "processor_inputs", "render"]
