"""The per-video stage: probe, check the annotation against the file, cut clips, decode the
video once, and build every task's samples. A Ray task over an Arrow batch of video rows.

Nothing here raises for a bad video or annotation: the row gets ``status``/``stage``/``reason``
and the ledger keeps it. Per-segment and per-clip problems are kept in the row's ``issues`` and
``clips`` columns (JSON), so the report can count them.

A truncated video (its header declares more than its frames hold: a faststart MP4 cut short)
decodes without an error but its frames stop early. When the decode's 1-fps grid ends more than
:data:`TRUNCATED_TOLERANCE_S` (or two grid steps) before the stream's declared duration, the
video is ``truncated``: its usable duration becomes the decoded one (the grid's frame count over
the fps), the annotation is checked, cut and decoded again against it, so captions past the last
frame are out of range (``time_past_duration``, ``end_clamped``) as for any short video, and a
``truncated`` issue (``"segment": null``) names both durations. The ``duration`` column keeps what
the probe declared.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import pyarrow as pa

from manifests.schema import ERROR, KEPT
from video_prep.annotations import Segment, VideoAnnotation, check_against_duration
from video_prep.clips import Clip, cut_clips
from video_prep.config import VideoConfig
from video_prep.frames import Grid, decode_frame_at, decode_grid, sample_video, uniform_indices
from video_prep.probe import VideoError, VideoInfo, probe_video
from video_prep.samples import ClipFrames, caption_record, grounding_records, streaming_record

SAMPLE_TYPE = pa.struct(
    [
        ("task", pa.string()),
        ("key", pa.string()),
        ("record", pa.string()),
        ("frames", pa.list_(pa.binary())),
    ]
)

#: a decode whose frames stop more than this (or two grid steps) before the declared end of the
#: video stream is a truncated video; a whole file's grid ends within one step of it
TRUNCATED_TOLERANCE_S = 2.0

INFO_COLUMNS: dict[str, pa.DataType] = {
    "duration": pa.float64(),
    "fps": pa.float64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "rotation": pa.int32(),
    "vfr": pa.bool_(),
    "codec": pa.string(),
    "grid_frames": pa.int32(),
    "decode_passes": pa.int32(),
    "decode_s": pa.float64(),
    "segments": pa.int32(),
    "clips_kept": pa.int32(),
    "issues": pa.string(),
    "clips": pa.string(),
}


@dataclass
class Outcome:
    """What preparing one video gave: its ledger fields and its samples."""

    status: str = KEPT
    stage: str | None = None
    reason: str | None = None
    info: dict | None = None
    samples: list[dict] | None = None


#: the grid index of a frame decoded off the 1-fps grid (the middle of a sub-second clip)
OFF_GRID = -1


def _frames_for(grid: Grid, clip: Clip, max_frames: int) -> ClipFrames:
    ks = [k for k in sorted(grid.frames) if clip.start <= grid.timestamp(k) < clip.end]
    ks = [ks[i] for i in uniform_indices(len(ks), max_frames)]
    frames = [grid.frames[k] for k in ks]
    return ClipFrames(ks, frames, [grid.timestamp(k) for k in ks], grid.size)


def _decode(
    path: str, info: VideoInfo, clips: list[Clip], cfg: VideoConfig
) -> tuple[dict[int, ClipFrames], int, int, float]:
    """Frames of every kept clip from ONE decode of the video; grid size, passes, seconds.

    A clip shorter than one grid step may hold no grid frame ([150.2, 150.8] at 1 fps): its
    frame is the one shown at its middle, decoded on its own and stamped there, as
    VideoLLaMA3 falls back to a frame inside a span under one second. Never a frame from
    before the clip (that would need a negative timestamp)."""
    f = cfg.frames
    kw = dict(
        max_side=f.max_side,
        quality=f.jpeg_quality,
        timeout_s=f.decode_timeout_s,
        threads=f.decode_threads,
    )
    whole = len(clips) == 1 and clips[0].start <= 0 and clips[0].end >= info.duration
    if whole:  # the plain case: VideoLLaMA3's sampling, memory bounded by max_frames
        s = sample_video(path, info, fps=f.fps, max_frames=f.max_frames, **kw)
        cf = ClipFrames(s.indices, s.frames, s.timestamps, s.size)
        return {clips[0].index: cf}, s.grid_frames, s.passes, s.decode_s
    spans = [(c.start, c.end) for c in clips]

    def keep(k: int, t: float) -> bool:
        return any(s <= t < e for s, e in spans)

    grid = decode_grid(path, info, fps=f.fps, keep=keep, **kw)
    out = {c.index: _frames_for(grid, c, f.max_frames) for c in clips}
    passes, decode_s = 1, grid.decode_s
    decoded_end = grid.n / f.fps
    for c in clips:
        mid = round((c.start + c.end) / 2, 6)
        if out[c.index].frames or mid >= decoded_end:  # past the frames: a truncated video
            continue
        t0 = time.perf_counter()
        try:
            frame = decode_frame_at(path, info, mid, **kw)
        except VideoError:
            continue  # no frame there after all: the clip is dropped (no_frames_in_clip)
        finally:
            passes, decode_s = passes + 1, decode_s + time.perf_counter() - t0
        out[c.index] = ClipFrames([OFF_GRID], [frame], [mid], grid.size)
    return out, grid.n, passes, decode_s


def prepare_video(ann: VideoAnnotation, path: str, cfg: VideoConfig) -> Outcome:
    """Everything for one annotated video; never raises for bad input."""
    try:
        info = probe_video(path)
    except VideoError as e:
        issue = {"segment": None, "reason": e.reason, "detail": e.detail}
        return Outcome(ERROR, "probe", e.reason, info={"issues": json.dumps([issue])})
    probed = info
    if info.stream_duration < info.duration:
        # frames are stamped from the video stream's first frame and stop with the stream: a
        # container that runs longer (a stream starting at 2.5 s, a longer audio track) has no
        # frame there, so captions are checked against the stream's own length
        info = replace(info, duration=info.stream_duration)
    out, decoded_end = _prepare(ann, path, info, cfg)
    if decoded_end is None:
        if out.info is not None:
            out.info["duration"] = probed.duration  # the ledger keeps what the probe found
        return out
    # truncated: everything again against the duration that really decodes
    first = out.info or {}
    usable = replace(info, duration=min(info.duration, decoded_end), stream_duration=decoded_end)
    detail = (
        f"frames stop at {decoded_end:.1f} s of the {info.stream_duration:.1f} s declared"
        f" ({first.get('grid_frames')} frames at {cfg.frames.fps:g} fps)"
    )
    truncated = {"segment": None, "reason": "truncated", "detail": detail}
    out, _ = _prepare(ann, path, usable, cfg, [truncated], check_truncation=False)
    row = out.info
    row["duration"] = probed.duration  # what the probe declared; the issue says what decodes
    row["decode_passes"] = (row.get("decode_passes") or 0) + first["decode_passes"]
    row["decode_s"] = round((row.get("decode_s") or 0.0) + first["decode_s"], 4)
    return out


def _truncated_at(info: VideoInfo, grid_frames: int, fps: float) -> float | None:
    """The decoded end (seconds) when the grid stops well before the declared end, else None."""
    decoded = grid_frames / fps
    if decoded < info.stream_duration - max(TRUNCATED_TOLERANCE_S, 2.0 / fps):
        return decoded
    return None


def _prepare(
    ann: VideoAnnotation,
    path: str,
    info: VideoInfo,
    cfg: VideoConfig,
    issues: list[dict] | None = None,
    check_truncation: bool = True,
) -> tuple[Outcome, float | None]:
    """The video's outcome with ``info`` as its duration, and the decoded end when the decode
    showed the video truncated (the caller prepares it again against that end)."""
    issues = list(issues or [])
    checked, problems = check_against_duration(ann, info.duration)
    issues += [
        {"segment": p.segment_index, "reason": p.reason, "detail": p.detail} for p in problems
    ]
    c = cfg.clips
    clips, unfit = cut_clips(
        checked.segments,
        info.duration,
        max_len_s=c.max_len_s,
        min_per_min=c.min_captions_per_min,
        max_per_min=c.max_captions_per_min,
        density_min_len_s=c.density_min_len_s,
    )
    issues += [{"segment": i, "reason": r, "detail": ""} for i, r in unfit]
    row = {
        **{k: getattr(info, k) for k in ("duration", "fps", "width", "height", "rotation")},
        "vfr": info.vfr,
        "codec": info.codec,
        "segments": len(checked.segments),
        "issues": json.dumps(issues),
    }
    kept = [cl for cl in clips if cl.status == KEPT]
    if kept:
        try:
            frames, n, passes, decode_s = _decode(path, info, kept, cfg)
        except VideoError as e:
            row["issues"] = json.dumps(
                [*issues, {"segment": None, "reason": e.reason, "detail": e.detail}]
            )
            row["clips"] = json.dumps([cl.summary() for cl in clips])
            return Outcome(ERROR, "decode", e.reason, info=row), None
        row.update(grid_frames=n, decode_passes=passes, decode_s=round(decode_s, 4))
        decoded_end = _truncated_at(info, n, cfg.frames.fps) if check_truncation else None
        if decoded_end is not None:
            return Outcome(KEPT, info=row), decoded_end
        for cl in kept:
            if not frames[cl.index].frames:
                cl.status, cl.reason = "dropped", "no_frames_in_clip"
    kept = [cl for cl in clips if cl.status == KEPT]
    row["clips"] = json.dumps([cl.summary() for cl in clips])
    row["clips_kept"] = len(kept)
    if not kept:
        reason = "no_segments" if not checked.segments else "no_kept_clips"
        if not clips and unfit:
            reason = "segment_too_long"
        return Outcome("dropped", "clips", reason, info=row), None
    samples = _samples(ann.video_id, kept, frames, cfg)
    return Outcome(KEPT, info=row, samples=samples), None


def _samples(video_id: str, clips: list[Clip], frames: dict[int, ClipFrames], cfg) -> list[dict]:
    from manifests.schema import stable_id

    base = stable_id("video", video_id)
    out = []

    def add(task: str, rec: dict | None, cf: ClipFrames) -> None:
        if rec is not None:
            n = len(rec["frames"])
            out.append(
                {
                    "task": task,
                    "key": rec["key"],
                    "record": json.dumps(rec),
                    "frames": cf.frames[:n],
                }
            )

    for cl in clips:
        cf = frames[cl.index]
        if "caption" in cfg.tasks:
            key = f"{base}_c{cl.index:03d}"
            add(
                "caption",
                caption_record(
                    key,
                    cl,
                    cf,
                    video_id,
                    cfg.caption.instructions,
                    cfg.seed,
                    cfg.caption.timestamps,
                ),
                cf,
            )
        if "streaming" in cfg.tasks:
            key = f"{base}_s{cl.index:03d}"
            add(
                "streaming",
                streaming_record(
                    key,
                    cl,
                    cf,
                    video_id,
                    cfg.streaming.instructions,
                    cfg.seed,
                    cfg.streaming.max_frames,
                ),
                cf,
            )
        if "grounding" in cfg.tasks:
            prefix = f"{base}_g{cl.index:03d}"
            for rec in grounding_records(
                prefix,
                cl,
                cf,
                video_id,
                cfg.grounding.questions,
                cfg.seed,
                cfg.grounding.turns_per_sample,
            ):
                add("grounding", rec, cf)
    return out


class PrepareVideos:
    """Ray task: a partition's video rows in, the same rows with info and samples out."""

    name = "prepare"

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        cols: dict[str, list] = {k: [] for k in INFO_COLUMNS}
        samples: list = []
        status, stage, reason = [], [], []
        for r in rows:
            if r["status"] != KEPT:  # failed before this stage (annotation problems)
                out = Outcome(r["status"], r["stage"], r["reason"])
            else:
                ann = _annotation(r)
                out = prepare_video(ann, r["video"], self.cfg)
            info = out.info or {}
            if r.get("issues") and "issues" not in info:
                info["issues"] = r["issues"]
            elif r.get("issues"):
                info["issues"] = json.dumps(json.loads(r["issues"]) + json.loads(info["issues"]))
            for k in INFO_COLUMNS:
                cols[k].append(info.get(k))
            samples.append(out.samples or [])
            status.append(out.status)
            stage.append(out.stage)
            reason.append(out.reason)
        batch = batch.drop_columns(
            [c for c in ("status", "stage", "reason", "issues") if c in batch.column_names]
        )
        batch = batch.append_column("status", pa.array(status, pa.string()))
        batch = batch.append_column("stage", pa.array(stage, pa.string()))
        batch = batch.append_column("reason", pa.array(reason, pa.string()))
        for k, typ in INFO_COLUMNS.items():
            batch = batch.append_column(k, pa.array(cols[k], typ))
        return batch.append_column("samples", pa.array(samples, pa.list_(SAMPLE_TYPE)))


def _annotation(row: dict) -> VideoAnnotation:
    segs = [Segment(s, e, t) for s, e, t in json.loads(row["annotation"])]
    return VideoAnnotation(row["source_key"], row["video"], row.get("ann_duration"), segs)
