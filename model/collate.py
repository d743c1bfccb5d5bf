"""Mixture samples -> inputs of transformers' ``VideoLlama3ForConditionalGeneration``.

:meth:`Collator.encode` turns one raw mixture sample (``__key__``, ``json`` record, image or
``fNNNN.jpg`` frame members) into one sample's model inputs through ``VideoLlama3Processor``
and our chat template (:mod:`manifests.chat`): frame timestamps come from the record, images
and frames are resized down (aspect kept, sides multiples of patch × merge) so the sample's
visual tokens fit ``max_vision_tokens``, DiffFP prunes static video tokens when asked
(:mod:`model.diffp`), and labels cover only the assistant answers and their ``<|im_end|>``.
A streaming sample's frames are, as in VideoLLaMA3's ``train.py``, one video clip
(``stream_frames: video``, :mod:`model.chat`): merged with ``video_merge_size`` in every stage
and pruned by DiffFP across consecutive frames, each frame still its own stream turn.
A sample that cannot be used returns None and is counted in :attr:`Collator.skipped` by reason;
a record whose image or video no turn refers to gets VideoLLaMA3's repair (a tag at the start
of its first human turn, :func:`add_media_tag`), counted in :attr:`Collator.fixed`.

Batching. :meth:`Collator.__call__` groups the encoded samples by length (sorted, greedy) into
micro-batches whose padded size ``batch × longest`` stays within ``tokens_per_batch`` and pads
the text on the right. Padding is exact for this model: it takes every vision input as one
flat tensor over the batch (patches, ``*_grid_thw``, ``*_merge_sizes``, the compression mask)
and scatters the features into the placeholder positions of ``input_ids`` in row-major order,
so concatenating each sample's vision tensors in batch order lines them up; Qwen2's default
position ids (0..n-1 per row) are unchanged by right padding, and the attention mask and
``-100`` labels hide the pads. Packing several samples into one row would save the pads but
needs per-sample position resets and variable-length attention (flash-attention only), so it
would not run on the CPU path every test and the demo use.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

import torch
from PIL.Image import DecompressionBombError

from manifests.chat import STREAM_END, STREAM_START, record_to_messages
from model import diffp
from model.chat import processor_inputs
from model.stages import STREAM_FRAMES, STREAM_LABELS

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_merge_sizes")
VIDEO_KEYS = (
    "pixel_values_videos",
    "video_grid_thw",
    "video_merge_sizes",
    "video_compression_mask",
)


@dataclass
class CollateConfig:
    """What one training sample may hold and how samples are batched (paper values)."""

    max_length: int = 16384  # total tokens per sample; longer samples are dropped (too_long)
    max_vision_tokens: int = 10240  # visual tokens per sample before DiffFP; pixels resized to fit
    video_merge_size: int = 2  # 2x2 bilinear merge of video tokens
    image_merge_size: int = 1  # must equal the image processor's merge_size (placeholder count)
    use_token_compression: bool = False  # DiffFP; on in stages 3-4
    # mean |Δ| of normalised pixels (model.diffp explains the unit); default: VideoLLaMA3's code
    diff_threshold: float = diffp.THRESHOLDS[diffp.DEFAULT_THRESHOLD]
    tokens_per_batch: int = 16384  # padded tokens per micro-batch (batch × longest)
    # streaming turns: "videollama3" also labels, in each stream turn, the token after the
    # frame and <|stream_end|> (VideoLLaMA3's processor); "answers": the answers only
    stream_labels: str = "videollama3"
    # streaming frames: "video" (VideoLLaMA3's train.py: one clip, video merge, DiffFP across
    # frames); "image": separate images at the image merge, never pruned
    stream_frames: str = "video"

    def __post_init__(self) -> None:
        for name in (
            "max_length",
            "max_vision_tokens",
            "video_merge_size",
            "image_merge_size",
            "tokens_per_batch",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CollateConfig.{name} must be a positive int, got {value!r}")
        if not self.diff_threshold >= 0:
            raise ValueError(f"CollateConfig.diff_threshold must be >= 0: {self.diff_threshold}")
        if self.stream_labels not in STREAM_LABELS:
            raise ValueError(
                f"CollateConfig.stream_labels must be one of {STREAM_LABELS}: "
                f"{self.stream_labels!r}"
            )
        if self.stream_frames not in STREAM_FRAMES:
            raise ValueError(
                f"CollateConfig.stream_frames must be one of {STREAM_FRAMES}: "
                f"{self.stream_frames!r}"
            )


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


MEDIA_TAGS = {"image": "<image>", "video": "<video>"}


def add_media_tag(rec: dict) -> dict | None:
    """VideoLLaMA3's repair of a record whose pixels no turn refers to (its ``train.py``,
    ``_convert_normal``): a record with ``image`` (or ``video``) and no ``<image>`` (``<video>``)
    tag in any turn gets one at the start of its first human turn. Returns the repaired copy,
    or None when the record needs no repair (a streaming record never does)."""
    if rec.get("stream"):
        return None
    kind = "image" if rec.get("image") else "video" if rec.get("video") else None
    turns = rec.get("conversations")
    if kind is None or not isinstance(turns, list):
        return None
    tag = MEDIA_TAGS[kind]
    if any(isinstance(t, dict) and tag in str(t.get("value", "")) for t in turns):
        return None
    for i, turn in enumerate(turns):
        if isinstance(turn, dict) and turn.get("from") in ("human", "user"):
            fixed = [*turns]
            fixed[i] = {**turn, "value": tag + str(turn.get("value", ""))}
            return {**rec, "conversations": fixed}
    return None


def _record(sample: dict) -> dict:
    raw = sample.get("json")
    if raw is None:
        raise _Skip("no_record")
    if isinstance(raw, dict):
        return raw
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Skip("bad_json", str(e)) from e
    if not isinstance(rec, dict):
        raise _Skip("bad_record", "record is not an object")
    return rec


#: frames per video the processor's ``longest_edge`` is sized for (VideoLLaMA3's cap)
MAX_FRAMES = 180


def _floor_px(min_pixels: int, max_pixels: int) -> int:
    """The processor's minimum pixels, lowered when the budget is tight: smart_resize scales
    up to ``min_pixels`` with ceil, which could overshoot a ``max_pixels`` close to it."""
    return min(min_pixels, max_pixels // 4)


def _has_member(sample: dict, name: str) -> bool:
    return name in sample or name.split(".", 1)[-1] in sample


class Collator:
    """Encodes mixture samples for ``VideoLlama3ForConditionalGeneration`` and batches them.

    ``processor`` is a transformers ``VideoLlama3Processor`` whose tokenizer has the chat
    markers (``<|im_start|>``, ``<|im_end|>``) and placeholders of :mod:`manifests.chat`."""

    def __init__(self, processor, cfg: CollateConfig | None = None):
        self.processor = processor
        self.cfg = cfg or CollateConfig()
        ip, vp, tok = processor.image_processor, processor.video_processor, processor.tokenizer
        if ip.merge_size != self.cfg.image_merge_size:
            # VideoLlama3Processor counts image placeholders with the image processor's own
            # merge_size, whatever merge_size the call passes
            raise ValueError(
                f"CollateConfig.image_merge_size={self.cfg.image_merge_size} differs from the "
                f"image processor's merge_size={ip.merge_size}"
            )
        self.image_factor = ip.patch_size * self.cfg.image_merge_size
        self.video_factor = vp.patch_size * self.cfg.video_merge_size
        self.image_min_pixels = int(ip.size["shortest_edge"])
        self.image_max_pixels = int(ip.size["longest_edge"])
        self.video_min_pixels = int(vp.size["shortest_edge"])
        self.video_max_pixels = int(vp.size["longest_edge"])
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.assistant = tok.encode("assistant", add_special_tokens=False)
        probe = tok.encode("<|im_start|>assistant\nok<|im_end|>", add_special_tokens=False)
        n = len(self.assistant)
        if probe[: n + 1] != [self.im_start, *self.assistant] or tok.decode(probe[n + 1]) != "\n":
            raise ValueError(
                "the tokenizer does not encode '<|im_start|>assistant\\n' as <|im_start|>, "
                "'assistant', newline: the assistant turns cannot be found to label them"
            )
        self.image_token_id = processor.image_token_id
        self.stream_start = tok.convert_tokens_to_ids(STREAM_START)
        self.stream_end = tok.convert_tokens_to_ids(STREAM_END)
        self.video_token_id = processor.video_token_id
        self.skipped: Counter = Counter()
        #: samples used after a repair, by kind: ``media_tag_added`` (:func:`add_media_tag`)
        self.fixed: Counter = Counter()

    # -- one sample --------------------------------------------------------------------------

    def encode(self, sample: dict) -> dict | None:
        """One raw mixture sample -> 1-D ``input_ids``, ``attention_mask``, ``labels`` and its
        vision tensors (``pixel_values``/``image_grid_thw``/``image_merge_sizes`` for images (and
        streaming frames with ``stream_frames: image``), ``pixel_values_videos``/
        ``video_grid_thw``/``video_merge_sizes``/``video_compression_mask`` for a video or a
        streaming clip), plus ``meta`` (key, source, kind, length,
        vision_tokens before DiffFP, video_tokens kept). None, counted in :attr:`skipped`, for a
        sample that cannot be used."""
        try:
            return self._encode(sample)
        except _Skip as s:
            self.skipped[s.reason] += 1
            log.debug("skipped %s: %s", sample.get("__key__"), s)
            return None

    def _encode(self, sample: dict) -> dict:
        rec = _record(sample)
        fixes = []
        repaired = add_media_tag(rec)
        if repaired is not None:
            rec = repaired
            fixes.append("media_tag_added")
        try:
            _, vis = record_to_messages(rec)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise _Skip("bad_record", repr(e)) from e
        if vis.kind == "video" and len(vis.members) != len(vis.timestamps):
            raise _Skip("bad_record", "frames and timestamps differ in length")
        if vis.kind is not None and not vis.members:
            raise _Skip("no_pixels")
        missing = [n for n in vis.members if not _has_member(sample, n)]
        if missing:
            raise _Skip("missing_member", missing[0])

        kwargs = self._vision_kwargs(vis)
        try:
            batch = processor_inputs(
                rec, sample, self.processor, stream_frames=self.cfg.stream_frames, **kwargs
            )
        except (OSError, DecompressionBombError) as e:  # PIL: unreadable, truncated, bombs
            raise _Skip("decode_error", repr(e)) from e
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise _Skip("processor_error", repr(e)) from e

        input_ids = batch["input_ids"][0]
        out: dict = {}
        vision_tokens = 0
        if "pixel_values" in batch:
            for k in IMAGE_KEYS:
                out[k] = batch[k]
            grid, merges = batch["image_grid_thw"], batch["image_merge_sizes"]
            vision_tokens += int((grid.prod(-1) // merges**2).sum())
        kept = 0
        if "pixel_values_videos" in batch:
            for k in VIDEO_KEYS:
                out[k] = batch[k]
            grid, merges = batch["video_grid_thw"], batch["video_merge_sizes"]
            vision_tokens += int((grid.prod(-1) // merges**2).sum())
            if self.cfg.use_token_compression:
                mask = diffp.compression_mask(
                    self.processor.video_processor,
                    batch["pixel_values_videos"],
                    grid,
                    merges,
                    self.cfg.diff_threshold,
                )
                input_ids = diffp.prune_placeholders(input_ids, self.video_token_id, mask)
                out["video_compression_mask"] = mask
            kept = int(out["video_compression_mask"].sum())
        if vision_tokens > self.cfg.max_vision_tokens:
            raise _Skip("vision_budget", f"{vision_tokens} > {self.cfg.max_vision_tokens}")
        if len(input_ids) > self.cfg.max_length:
            raise _Skip("too_long", f"{len(input_ids)} > {self.cfg.max_length}")
        labels = self._labels(input_ids)
        if not (labels != IGNORE_INDEX).any():
            raise _Skip("no_answer")
        out["input_ids"] = input_ids
        out["attention_mask"] = torch.ones_like(input_ids)
        out["labels"] = labels
        self.fixed.update(fixes)  # counted once the sample is used
        out["meta"] = {
            "key": sample.get("__key__"),
            "source": sample.get("__source__"),
            "kind": vis.kind or "text",
            "length": len(input_ids),
            "vision_tokens": vision_tokens,
            "video_tokens": kept,
        }
        return out

    def _vision_kwargs(self, vis) -> dict:
        """Processor ``size`` kwargs under both caps: the processor's own ``size`` and the
        sample's visual-token budget. Every image (or streaming frame) gets an equal share of
        the budget and at most the image processor's ``longest_edge`` pixels. For a video (and a
        streaming clip with ``stream_frames: video``), transformers reads ``longest_edge`` as the
        pixels of the *whole* video (it divides it by the frame count) and ``shortest_edge`` as
        the pixels of one frame."""
        budget = self.cfg.max_vision_tokens
        kind = vis.kind
        if kind == "stream" and self.cfg.stream_frames == "video":
            kind = "video"
        if kind in ("image", "stream"):
            per = budget // len(vis.members)
            if per < 1:
                raise _Skip("vision_budget", f"{len(vis.members)} images > {budget} tokens")
            max_px = min(self.image_max_pixels, per * self.image_factor**2)
            size = {
                "shortest_edge": _floor_px(self.image_min_pixels, max_px),
                "longest_edge": max_px,
            }
            return {"images_kwargs": {"size": size, "merge_size": self.cfg.image_merge_size}}
        if kind == "video":
            n = len(vis.members)
            if n > budget:
                raise _Skip("vision_budget", f"{n} frames > {budget} tokens")
            # the processor's longest_edge covers MAX_FRAMES frames (model/build.py): cap each
            # frame at that share, and the whole video at the token budget
            per_frame = self.video_max_pixels // MAX_FRAMES
            video_px = min(per_frame * n, budget * self.video_factor**2)
            size = {
                "shortest_edge": _floor_px(self.video_min_pixels, video_px // n),
                "longest_edge": video_px,
            }
            kwargs = {
                "size": size,
                "merge_size": self.cfg.video_merge_size,
                # every token keeps its placeholder; DiffFP prunes them after the call with our
                # threshold (model.diffp). The processor's own default is True.
                "use_token_compression": False,
            }
            return {"videos_kwargs": kwargs}
        return {}

    def _labels(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``-100`` except the content of assistant turns and their ``<|im_end|>``: each
        ``<|im_start|>assistant`` + newline header opens a span that its ``<|im_end|>`` closes;
        with ``stream_labels: videollama3`` also the frame ends and ``<|stream_end|>`` of
        streaming turns (:meth:`_label_stream_turn`)."""
        ids = input_ids.tolist()
        labels = [IGNORE_INDEX] * len(ids)
        n_role = len(self.assistant)
        i = 0
        while i < len(ids):
            head = i + 1 + n_role
            if ids[i] == self.im_start and ids[i + 1 : head] == self.assistant:
                start = head + 1  # past the newline that ends the header
                end = start
                while end < len(ids) and ids[end] != self.im_end:
                    end += 1
                stop = min(end + 1, len(ids))
                labels[start:stop] = ids[start:stop]
                i = stop
            elif ids[i] == self.stream_start and self.cfg.stream_labels == "videollama3":
                i = self._label_stream_turn(ids, labels, i)
            else:
                i += 1
        return torch.tensor(labels, dtype=input_ids.dtype)

    def _label_stream_turn(self, ids: list[int], labels: list[int], start: int) -> int:
        """VideoLLaMA3's labels of a ``<|stream_start|>stream`` turn (its processor's
        ``_process_text_with_label``): the token right after each run of image placeholders
        (the newline that ends the frame) and the turn's ``<|stream_end|>``; the model learns
        that a frame is followed by more watching. The placeholders are ``<|video_pad|>`` with
        ``stream_frames: video``, ``<|image_pad|>`` with ``image``. Returns the index past the
        turn."""
        end = start + 1
        while end < len(ids) and ids[end] != self.stream_end:
            end += 1
        pads = (self.image_token_id, self.video_token_id)
        for j in range(start + 1, min(end, len(ids) - 1)):
            if ids[j] in pads and ids[j + 1] not in pads:
                labels[j + 1] = ids[j + 1]
        if end < len(ids):
            labels[end] = ids[end]
        return end + 1

    # -- batches ----------------------------------------------------------------------------

    def pack(self, encoded: list[dict]) -> list[list[dict]]:
        """Length-bucketed groups: samples sorted by length, each group as long as
        ``len(group) × longest <= tokens_per_batch``; a sample longer than that goes alone."""
        order = sorted(encoded, key=lambda e: len(e["input_ids"]))
        groups: list[list[dict]] = []
        cur: list[dict] = []
        for enc in order:
            n = len(enc["input_ids"])  # the longest so far: sorted ascending
            if cur and (len(cur) + 1) * n > self.cfg.tokens_per_batch:
                groups.append(cur)
                cur = []
            cur.append(enc)
        if cur:
            groups.append(cur)
        return groups

    def collate(self, group: list[dict]) -> dict:
        """Encoded samples -> one micro-batch for ``model(**mb)``: text right-padded, vision
        tensors concatenated in batch order (module docs)."""
        longest = max(len(e["input_ids"]) for e in group)

        def padded(key: str, value: int) -> torch.Tensor:
            rows = torch.full((len(group), longest), value, dtype=torch.long)
            for r, e in enumerate(group):
                rows[r, : len(e[key])] = e[key]
            return rows

        mb = {
            "input_ids": padded("input_ids", self.pad_id),
            "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", IGNORE_INDEX),
        }
        for keys in (IMAGE_KEYS, VIDEO_KEYS):
            having = [e for e in group if keys[0] in e]
            if having:
                for k in keys:
                    mb[k] = torch.cat([e[k] for e in having])
        return mb

    def __call__(self, samples: list[dict]) -> list[dict]:
        """Raw mixture samples -> micro-batches (unusable samples skipped and counted)."""
        encoded = [e for e in map(self.encode, samples) if e is not None]
        return [self.collate(g) for g in self.pack(encoded)]
