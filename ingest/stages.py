"""The import's stages, in order: check the record, read its media, decode its images with
curation's safety caps, sample its video at 1 fps with video_prep's sampler.

Each is a plain function object over an Arrow batch (a Ray task's chunk); nothing raises for a
bad record: the row gets ``status``/``stage``/``reason`` and the ledger keeps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.decode import Decode, Probe
from ingest.config import ImageChecks, ImportConfig
from ingest.media import MediaError, read_media, resolve_media
from ingest.records import check_record, meta_of
from manifests.marks import alive, errors_to, mark, set_column
from manifests.schema import KEPT, new_rows
from video_prep.config import FramesConfig
from video_prep.frames import decode_grid, sample_video, uniform_indices
from video_prep.probe import VideoError, probe_video

CHECK_FIELDS = {
    "modality": pa.string(),
    "media": pa.string(),  # JSON list of the record's media paths
    "fixes": pa.string(),  # repairs made: media_tag_added, leading_turns_removed
    "_fields": pa.string(),  # JSON: conversations or the stream's fields, and meta
}


@dataclass
class CheckRecords:
    """Parse and check each record (``ingest.records``); duplicates found by the plan go here,
    and records of a modality this run does not write are dropped before their media is read."""

    fmt: str
    modalities: tuple[str, ...]
    image_tag_for_video: bool = False
    name: str = "check"

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = alive(batch)
        raws, dups = batch["_raw"].to_pylist(), batch["duplicate_of"].to_pylist()
        cols: dict[str, list] = {k: [None] * batch.num_rows for k in CHECK_FIELDS}
        errors: list[str | None] = [None] * batch.num_rows
        drops: list[str | None] = [None] * batch.num_rows
        for i in np.flatnonzero(live):
            if dups[i] is not None:
                drops[i] = "duplicate"
                continue
            try:
                rec = json.loads(raws[i])
            except (json.JSONDecodeError, RecursionError):
                errors[i] = "bad_json"
                continue
            got = check_record(rec, self.fmt, self.image_tag_for_video)
            if got.reason:
                errors[i] = got.reason
                continue
            cols["modality"][i] = got.modality
            cols["media"][i] = json.dumps(got.media)
            cols["fixes"][i] = ",".join(got.fixes) or None
            cols["_fields"][i] = json.dumps({**got.fields, "meta": meta_of(rec)})
            if got.modality not in self.modalities:
                drops[i] = f"{got.modality}_not_imported"
        for k, typ in CHECK_FIELDS.items():
            batch = set_column(batch, k, pa.array(cols[k], typ))
        batch = errors_to(batch, errors, self.name)
        return mark(batch, drops, self.name)


IMAGE_FIELDS = {
    "_images": pa.list_(pa.binary()),
    "_exts": pa.list_(pa.string()),
    "width": pa.int32(),  # of the first image
    "height": pa.int32(),
    "_video": pa.string(),  # the resolved video file
}


@dataclass
class ReadMedia:
    """Each image's bytes (a file under the media root, or a table's cell) and each video's
    resolved path; every refusal is the record's reason (``ingest.media``)."""

    root: str
    max_file_bytes: int
    max_video_bytes: int
    name: str = "media"

    def __call__(self, batch: pa.Table) -> pa.Table:
        root = Path(self.root).resolve() if self.root else None
        live = alive(batch)
        kinds, media = batch["modality"].to_pylist(), batch["media"].to_pylist()
        cells = batch["_cells"].to_pylist()
        images: list = [None] * batch.num_rows
        videos: list = [None] * batch.num_rows
        errors: list[str | None] = [None] * batch.num_rows
        for i in np.flatnonzero(live):
            paths = json.loads(media[i] or "[]")
            try:
                if kinds[i] == "image":
                    images[i] = [self._image(root, p, cells[i]) for p in paths]
                elif kinds[i] == "video":
                    if root is None:
                        raise MediaError("no_media_root")
                    videos[i] = str(resolve_media(root, paths[0], self.max_video_bytes))
            except MediaError as e:
                errors[i] = e.reason
        batch = set_column(batch, "_images", pa.array(images, IMAGE_FIELDS["_images"]))
        batch = set_column(batch, "_video", pa.array(videos, pa.string()))
        return errors_to(batch, errors, self.name)

    def _image(self, root: Path | None, path: str, cells: list[bytes] | None) -> bytes:
        if path.startswith("cell:") and cells is not None:
            data = cells[int(path[5:])]
            if not data:
                raise MediaError("empty_file")
            if len(data) > self.max_file_bytes:
                raise MediaError("file_too_large")
            return data
        if root is None:
            raise MediaError("no_media_root")
        return read_media(root, path, self.max_file_bytes)


class DecodeImages:
    """Every image of every record through curation's own ``Probe`` (header, pixel cap) and
    ``Decode`` (full decode; odd modes, EXIF rotation and exotic formats re-encoded as JPEG):
    an image set imported is held to the checks a curated one is. A record is refused with the
    first reason one of its images got."""

    name = "decode"

    def __init__(self, checks: ImageChecks):
        self.probe = Probe(max_pixels=checks.max_pixels)
        self.decode = Decode(
            verify=checks.verify,
            draft=checks.draft,
            verify_size=checks.verify_size,
            store_max_side=checks.store_max_side,
            jpeg_quality=checks.jpeg_quality,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        # the bytes stay in Arrow: flattened into one row per image, decoded, and put back
        # into each record's list by the same offsets (no Python copy of any image)
        lists = batch["_images"].combine_chunks()
        lists = pc.if_else(pa.array(alive(batch)), lists, pa.scalar(None, lists.type))
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        n = int(offsets[-1])
        if n == 0:
            return self._set(batch, lists, pa.nulls(len(lists), IMAGE_FIELDS["_exts"]), [], [])
        t = new_rows("images", 0, [str(j) for j in range(n)])
        t = self.decode(self.probe(set_column(t, "image", pc.list_flatten(lists))))
        off, mask = pa.array(offsets, pa.int32()), pc.is_null(lists)
        images = pa.ListArray.from_arrays(off, t["image"].combine_chunks(), mask=mask)
        exts = pc.fill_null(t["ext"], "jpg").combine_chunks()
        exts = pa.ListArray.from_arrays(off, exts, mask=mask)
        has = lengths > 0
        first = pa.array(np.where(has, offsets[:-1], 0))
        widths = pc.if_else(pa.array(has), pc.take(t["width"], first), None)
        heights = pc.if_else(pa.array(has), pc.take(t["height"], first), None)
        batch = self._set(batch, images, exts, widths, heights)
        errors: list[str | None] = [None] * batch.num_rows
        drops: list[str | None] = [None] * batch.num_rows
        not_kept = np.flatnonzero(pc.not_equal(t["status"], KEPT).to_numpy(zero_copy_only=False))
        if len(not_kept):
            owner = np.repeat(np.arange(batch.num_rows), lengths)
            status, reason = t["status"].to_pylist(), t["reason"].to_pylist()
            for j in not_kept:
                target = errors if status[j] == "error" else drops
                target[owner[j]] = target[owner[j]] or reason[j]
        batch = errors_to(batch, errors, self.name)
        return mark(batch, drops, self.name)

    @staticmethod
    def _set(batch, images, exts, widths, heights) -> pa.Table:
        n = batch.num_rows
        batch = set_column(batch, "_images", images)
        batch = set_column(batch, "_exts", exts)
        for name, values in (("width", widths), ("height", heights)):
            arr = values if len(values) else pa.nulls(n, pa.int32())
            batch = set_column(
                batch,
                name,
                pa.array(arr, pa.int32()) if isinstance(arr, list) else arr.cast(pa.int32()),
            )
        return batch


VIDEO_FIELDS = {
    "_frames": pa.list_(pa.binary()),
    "_timestamps": pa.list_(pa.float64()),
    "duration": pa.float64(),
    "frames": pa.int32(),
}


@dataclass
class SampleVideos:
    """Each video record's frames with the video job's sampler: 1 fps, uniformly capped at
    ``frames.max_frames``, stamped in seconds of the video; a streaming record's frames are
    those of its ``start_time``..``end_time`` span, stamped in seconds of the whole video, as
    VideoLLaMA3's loader gives them."""

    frames_cfg: FramesConfig
    name: str = "video"

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = alive(batch)
        paths, fields = batch["_video"].to_pylist(), batch["_fields"].to_pylist()
        cols: dict[str, list] = {k: [None] * batch.num_rows for k in VIDEO_FIELDS}
        widths, heights = [None] * batch.num_rows, [None] * batch.num_rows
        if "width" in batch.column_names:  # images decoded before: their sizes stay
            widths, heights = batch["width"].to_pylist(), batch["height"].to_pylist()
        errors: list[str | None] = [None] * batch.num_rows
        for i in np.flatnonzero(live):
            if paths[i] is None:
                continue
            try:
                frames, ts, size, duration = self._sample(paths[i], json.loads(fields[i]))
            except VideoError as e:
                errors[i] = e.reason
                continue
            cols["_frames"][i], cols["_timestamps"][i] = frames, ts
            cols["duration"][i], cols["frames"][i] = duration, len(frames)
            widths[i], heights[i] = size
        for k, typ in VIDEO_FIELDS.items():
            batch = set_column(batch, k, pa.array(cols[k], typ))
        batch = set_column(batch, "width", pa.array(widths, pa.int32()))
        batch = set_column(batch, "height", pa.array(heights, pa.int32()))
        return errors_to(batch, errors, self.name)

    def _sample(self, path: str, fields: dict):
        f = self.frames_cfg
        kw = dict(
            max_side=f.max_side,
            quality=f.jpeg_quality,
            timeout_s=f.decode_timeout_s,
            threads=f.decode_threads,
        )
        info = probe_video(path)
        if info.stream_duration < info.duration:  # frames stop with the video stream
            info = replace(info, duration=info.stream_duration)
        if not fields.get("stream"):
            s = sample_video(path, info, fps=f.fps, max_frames=f.max_frames, **kw)
            return s.frames, [round(t, 3) for t in s.timestamps], s.size, info.duration
        start, end = fields["start_time"], fields["end_time"]
        if start >= info.duration:
            raise VideoError("stream_past_end", f"starts at {start} s of {info.duration} s")
        grid = decode_grid(path, info, fps=f.fps, keep=lambda k, t: start <= t <= end, **kw)
        ks = sorted(grid.frames)
        if not ks:
            raise VideoError("no_frames", f"no frame between {start} and {end} s")
        ks = [ks[j] for j in uniform_indices(len(ks), f.max_frames)]
        frames = [grid.frames[k] for k in ks]
        return frames, [round(grid.timestamp(k), 3) for k in ks], grid.size, info.duration


def import_stages(cfg: ImportConfig) -> list:
    """The stages of an import, in order (only those its modalities need)."""
    inp = cfg.input
    stages: list = [
        CheckRecords(inp.format, tuple(cfg.modalities), inp.image_tag_for_video),
        ReadMedia(inp.media, inp.max_file_bytes, inp.max_video_bytes),
    ]
    if "image" in cfg.modalities:
        stages.append(DecodeImages(cfg.images))
    if "video" in cfg.modalities:
        stages.append(SampleVideos(cfg.frames))
    return stages
