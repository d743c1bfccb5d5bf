"""``export_shard_set``: one pass over a shard set (or a materialised mixture) writing every
layout asked for beside one shared media folder.

    OUT/annotations_{image,video,stream,text}.jsonl   VideoLLaMA3 (--data_path), one per kind
    OUT/llava.json          LLaVA / LLaVA-NeXT (--data_path); paths relative to OUT/media
    OUT/media/images/ab/{key}.jpg           the original image bytes
    OUT/media/videos/ab/{key}.mp4           a video sample's frames (export.mux)
    OUT/skipped.jsonl       every sample a layout left out, with the reason
    OUT/export.json         what came in, what each layout holds, what was skipped and why

Samples stream through one at a time (``export.source``): memory does not grow with the set.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from export.layouts import LAYOUTS, LLAVA, LLAVA_FILE, RECORD_OF, videollama3_file
from export.mux import frames_to_mp4
from export.names import MEDIA_DIR, image_path, video_path
from export.output import AtomicFolder, JsonLines, JsonList
from export.records import Sample, Skip, read_record
from export.source import StagedSample, shard_entries, staged_samples
from manifests.atomic import write_json
from manifests.dataset import read_dataset_json

EXPORT_JSON = "export.json"
SKIPPED = "skipped.jsonl"
STAGING = ".staging"


def _media_paths(key: str, s: Sample) -> list[str]:
    if s.kind == "image":
        return [
            image_path(key, i, len(s.members), m.rsplit(".", 1)[-1])
            for i, m in enumerate(s.members)
        ]
    if s.kind in ("video", "stream"):
        return [video_path(key)]
    return []


def _write_media(root: Path, staged: StagedSample, s: Sample, paths: list[str]) -> dict:
    """Move or mux the sample's media into ``root`` (the media folder); counts written."""
    dests = [root / p for p in paths]
    if any(d.exists() for d in dests):  # keys are unique in a set: a repeat is not exported
        raise Skip("duplicate_key")
    for d in dests:
        d.parent.mkdir(parents=True, exist_ok=True)
    if s.kind == "image":
        for m, d in zip(s.members, dests, strict=True):
            os.replace(staged.files[m], d)
        return {"images": len(dests)}
    if s.kind in ("video", "stream"):
        frames_to_mp4([staged.files[m] for m in s.members], s.timestamps, dests[0])
        return {"videos": 1, "frames": len(s.members)}
    return {}


class _Export:
    """The writers of one run and its counts."""

    def __init__(self, tmp: Path, layouts: list[str]):
        self.tmp, self.layouts = tmp, layouts
        self.media = tmp / MEDIA_DIR
        self.media.mkdir()
        #: (layout, kind) -> its annotation file, opened at its first record
        self.files: dict[tuple[str, str], JsonList | JsonLines] = {}
        self.skipped_file = JsonLines(tmp / SKIPPED)
        self.skipped = {lay: Counter() for lay in layouts}
        self.counts: Counter = Counter()

    def skip(self, staged: StagedSample, reasons: dict[str, str]) -> None:
        self.skipped_file.write({"key": staged.key, "shard": staged.shard, "reasons": reasons})
        for lay, why in reasons.items():
            self.skipped[lay][why] += 1

    def add(self, staged: StagedSample) -> None:
        self.counts["samples"] += 1
        if staged.problem:
            return self.skip(staged, dict.fromkeys(self.layouts, staged.problem))
        try:
            s = read_record(staged.record, set(staged.files))
        except Skip as exc:
            return self.skip(staged, dict.fromkeys(self.layouts, exc.reason))
        paths = _media_paths(staged.key, s)
        records, reasons = {}, {}
        for lay in self.layouts:
            try:
                records[lay] = RECORD_OF[lay](staged.key, s, paths)
            except Skip as exc:
                reasons[lay] = exc.reason
        if records:
            try:
                self.counts.update(_write_media(self.media, staged, s, paths))
            except Skip as exc:
                reasons.update(dict.fromkeys(records, exc.reason))
                records = {}
        for lay, rec in records.items():
            self._file(lay, s.kind).write(rec)
        if reasons:
            self.skip(staged, reasons)
        return None

    def _file(self, layout: str, kind: str) -> JsonList | JsonLines:
        """LLaVA's one list, or VideoLLaMA3's file of this kind of record."""
        slot = (layout, "all" if layout == LLAVA else kind)
        if slot not in self.files:
            if layout == LLAVA:
                self.files[slot] = JsonList(self.tmp / LLAVA_FILE)
            else:
                self.files[slot] = JsonLines(self.tmp / videollama3_file(kind))
        return self.files[slot]

    def close(self) -> dict:
        if LLAVA in self.layouts:
            self._file(LLAVA, "all")  # the list is written even when empty: []
        for f in (*self.files.values(), self.skipped_file):
            f.close()
        out = {}
        for lay in self.layouts:
            files = {f.path.name: f.n for (ly, _), f in sorted(self.files.items()) if ly == lay}
            out[lay] = {
                "files": files,
                "records": sum(files.values()),
                "skipped": dict(sorted(self.skipped[lay].items())),
            }
        return out


def export_shard_set(
    src: str | Path, out: str | Path, layouts: list[str], *, overwrite: bool = False
) -> dict:
    """Export the shard set at ``src`` to ``out`` in ``layouts`` (``videollama3``, ``llava``);
    returns what ``export.json`` holds. The set is checked against its ``dataset.json`` before
    anything is written; ``out`` appears only complete."""
    unknown = [lay for lay in layouts if lay not in LAYOUTS]
    if not layouts or unknown:
        raise ValueError(f"layouts must be some of {LAYOUTS}, got {layouts}")
    layouts = list(dict.fromkeys(layouts))
    root = Path(src)
    shard_entries(root)  # missing, cut or grown shards: refused before any output exists
    doc = read_dataset_json(root)
    folder = AtomicFolder(out, overwrite=overwrite)
    try:
        run = _Export(folder.tmp, layouts)
        for staged in staged_samples(root, folder.tmp / STAGING):
            run.add(staged)
        summary = {
            "source": str(root.absolute()),
            "source_name": doc.get("name"),
            "source_modality": doc.get("modality"),
            "source_samples": doc.get("samples"),
            "media_folder": MEDIA_DIR,
            "samples": run.counts["samples"],
            "images": run.counts["images"],
            "videos": run.counts["videos"],
            "frames": run.counts["frames"],
            "layouts": run.close(),
            "skipped_file": SKIPPED,
        }
        (folder.tmp / STAGING).rmdir()
        write_json(folder.tmp / EXPORT_JSON, summary)
    except BaseException:
        folder.abort()
        raise
    folder.commit()
    return summary
