"""Training records of the three video tasks (DESIGN §5), built from a clip and its frames.

- caption: ``<video>`` + an instruction -> the clip's dense captions as one paragraph;
- streaming: the clip's frames and answers interleaved by time, each caption answered at its
  end time, in VideoLLaMA3's streaming record (times in seconds of the original video);
- grounding: "When does '<sentence>' happen?" -> ``"{s:.1f}-{e:.1f} s"``.

Caption and grounding records time everything from the clip's start (frame timestamps and
answers alike), so a clip is a self-contained video; ``clip`` records where it came from.
Instructions rotate by a seeded hash of the sample key, so reruns agree and records vary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from video_prep.clips import Clip
from video_prep.grounding_eval import format_interval


@dataclass
class ClipFrames:
    """The frames of one clip: grid indices, JPEG bytes, timestamps in original seconds."""

    indices: list[int]
    frames: list[bytes]
    timestamps: list[float]
    size: tuple[int, int] | None = None  # (width, height) of the stored frames


def pick(options: list[str], key: str, seed: int) -> str:
    """A deterministic choice per sample key: the same on every rerun and every worker."""
    h = hashlib.sha1(f"{seed}\x00{key}".encode()).digest()
    return options[int.from_bytes(h[:8], "big") % len(options)]


def member_names(key: str, n: int) -> list[str]:
    """Frame member names inside the tar: ``{key}.f0000.jpg`` ... (DESIGN §4)."""
    return [f"{key}.f{j:04d}.jpg" for j in range(n)]


def _r(t: float) -> float:
    return round(float(t), 3)


def _video_fields(key: str, clip: Clip, frames: ClipFrames, video_id: str, rebase: bool) -> dict:
    offset = clip.start if rebase else 0.0
    if frames.timestamps and min(frames.timestamps) < clip.start:  # a frame from before it
        raise ValueError(
            f"{key}: frame at {min(frames.timestamps)} s lies before the clip's start "
            f"{clip.start} s; a record never carries a negative timestamp"
        )
    return {
        "key": key,
        "video": [key],
        "frames": member_names(key, len(frames.frames)),
        "timestamps": [_r(t - offset) for t in frames.timestamps],
        "source_video": video_id,
        "clip": {"index": clip.index, "start": _r(clip.start), "end": _r(clip.end)},
        **({"width": frames.size[0], "height": frames.size[1]} if frames.size else {}),
    }


def caption_record(
    key: str,
    clip: Clip,
    frames: ClipFrames,
    video_id: str,
    instructions: list[str],
    seed: int,
    timestamps: bool = False,
) -> dict:
    parts = []
    for seg in sorted(clip.segments, key=lambda s: (s.start, s.end)):
        text = seg.text.strip()
        if timestamps:
            text = f"{format_interval(seg.start - clip.start, seg.end - clip.start)}: {text}"
        parts.append(text)
    answer = ("\n" if timestamps else " ").join(parts)
    rec = _video_fields(key, clip, frames, video_id, rebase=True)
    rec["conversations"] = [
        {"from": "human", "value": "<video>\n" + pick(instructions, key, seed)},
        {"from": "gpt", "value": answer},
    ]
    return rec


def grounding_records(
    key_prefix: str,
    clip: Clip,
    frames: ClipFrames,
    video_id: str,
    questions: list[str],
    seed: int,
    turns_per_sample: int = 1,
) -> list[dict]:
    """One record per ``turns_per_sample`` captions of the clip (sharing its frames)."""
    segs = sorted(clip.segments, key=lambda s: (s.start, s.end))
    out = []
    for g in range(0, len(segs), turns_per_sample):
        key = f"{key_prefix}_{g // turns_per_sample:03d}"
        conv = []
        for seg in segs[g : g + turns_per_sample]:
            sentence = seg.text.strip().rstrip(".")
            q = pick(questions, f"{key}/{len(conv)}", seed).format(sentence=sentence)
            conv.append({"from": "human", "value": ("<video>\n" if not conv else "") + q})
            conv.append(
                {
                    "from": "gpt",
                    "value": format_interval(seg.start - clip.start, seg.end - clip.start),
                }
            )
        rec = _video_fields(key, clip, frames, video_id, rebase=True)
        rec["conversations"] = conv
        out.append(rec)
    return out


def streaming_record(
    key: str,
    clip: Clip,
    frames: ClipFrames,
    video_id: str,
    instructions: list[str],
    seed: int,
    max_frames: int = 400,
) -> dict | None:
    """Answers at caption end times; frames past ``max_frames`` and the answers after the first
    dropped frame are cut, as VideoLLaMA3's loader does. None when no answer is left."""
    n = len(frames.frames)
    max_time = float("inf")
    if n > max_frames:
        max_time = frames.timestamps[max_frames]
        frames = ClipFrames(
            frames.indices[:max_frames],
            frames.frames[:max_frames],
            frames.timestamps[:max_frames],
            frames.size,
        )
    conv = [{"role": "user", "content": pick(instructions, key, seed), "time": _r(clip.start)}]
    for seg in sorted(clip.segments, key=lambda s: (s.end, s.start)):
        if seg.end >= max_time:
            break
        conv.append({"role": "assistant", "content": seg.text.strip(), "time": _r(seg.end)})
    if len(conv) < 2:
        return None
    rec = _video_fields(key, clip, frames, video_id, rebase=False)
    rec.update(
        {
            "stream": True,
            "start_time": _r(clip.start),
            "end_time": _r(clip.end),
            "conversation": conv,
        }
    )
    return rec
