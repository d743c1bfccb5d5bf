"""Dense-caption and grounding annotations, parsed from four public layouts into one form.

Clip cutting and grounding samples need only a video, its duration and ``(start, end, text)``
segments; ActivityNet Captions, YouCook2, Charades-STA and our JSONL differ in layout, not in
meaning. Every rejected input becomes an :class:`AnnotationIssue` rather than an exception or a
silent drop, because the ledger must account for every input (DESIGN §4).

Time rules, the same at load time (annotated duration) and in :func:`check_against_duration`
(probed duration); the first rule that fails names the reason:

1. a start or end that is NaN or infinite: ``nan_time``;
2. a negative start or end: ``negative_time``;
3. ``end <= start``: ``end_before_start`` (a zero-length segment is neither a clip nor a target);
4. with a known duration, ``start >= duration``: ``time_past_duration``;
5. text empty after stripping: ``empty_sentence``; longer than :data:`MAX_SENTENCE_CHARS`:
   ``sentence_too_long`` (a caption is a sentence or a few; a megabyte of text would be copied
   into every caption, streaming and grounding sample of the clip);
6. with a known duration, ``end > duration + END_TOLERANCE_S``: the end is clamped to the duration,
   the segment is KEPT and ``end_clamped`` is reported; an end past the duration by at most the
   tolerance is clamped silently (annotations are rounded; containers differ by a frame or two).

A segment with any reason but ``end_clamped`` is left out of the normalized segments. Structure
of the wrong shape (the file, a video entry, a segment) is ``bad_format``; a line of a
line-oriented file (Charades, JSONL) that cannot be read into a record is ``bad_line``: such files
are decoded line by line, so a line that is not UTF-8 costs that line only (``bad_line``, detail
``line N: not UTF-8 ...``), while a JSON document (ActivityNet, YouCook2) that is not UTF-8 is
one ``bad_format`` for the file. Lines end at ``\n``, ``\r\n`` or ``\r`` only (a U+2028 inside
a JSON string is text, not a line break). An issue about the whole file, or a line whose video is
unknown, has ``video_id == ""``. ``segment_index``
counts the video's segments as written in the file (for Charades: that video's readable lines).
Blank lines are not inputs and are skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

FORMATS = ("activitynet", "youcook2", "charades", "jsonl")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
END_TOLERANCE_S = 0.5

END_BEFORE_START = "end_before_start"
TIME_PAST_DURATION = "time_past_duration"
END_CLAMPED = "end_clamped"
NAN_TIME = "nan_time"
NEGATIVE_TIME = "negative_time"
EMPTY_SENTENCE = "empty_sentence"
SENTENCE_TOO_LONG = "sentence_too_long"
#: longer captions are refused: ActivityNet's longest are a few hundred characters
MAX_SENTENCE_CHARS = 4000
DUPLICATE_ID = "duplicate_id"
BAD_LINE = "bad_line"
BAD_FORMAT = "bad_format"
UNSAFE_PATH = "unsafe_path"

_DETAIL_CHARS = 200


@dataclass(frozen=True)
class Segment:
    """One annotated span of a video, in seconds of the original video."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class VideoAnnotation:
    """One video's segments in file order.

    ``video_id`` is the file's key (ActivityNet, YouCook2), the Charades id, or the JSONL ``id``
    (else its ``video`` path). ``video`` is a path hint relative to the videos root: the JSONL
    path, YouCook2's ``subset/recipe_type/id``, or None (:func:`resolve_video` tries the id).
    """

    video_id: str
    video: str | None
    duration: float | None
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class AnnotationIssue:
    """Why an input (a file, a line, a video entry or a segment) was rejected or altered."""

    video_id: str
    segment_index: int | None
    reason: str
    detail: str


class _BadFormat(ValueError):
    """The whole file has the wrong shape; becomes one ``bad_format`` issue naming the path."""


class _PairsDict(dict):
    """A JSON object that remembers its key/value pairs, so duplicate keys can be reported
    (``json`` otherwise keeps the last one silently)."""

    pairs: list[tuple[str, object]]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, object]]) -> _PairsDict:
        obj = cls(pairs)
        obj.pairs = pairs
        return obj


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."


def _number(value: object) -> float | None:
    """A JSON number or numeric string as a float; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return math.inf
    except ValueError:
        return None


def _pair(value: object) -> tuple[object, object]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    return None, None


def _check_segment(
    video_id: str, index: int, start: float, end: float, text: str, duration: float | None
) -> tuple[Segment | None, AnnotationIssue | None]:
    """Apply the module's time rules to one segment: (kept segment or None, issue or None)."""

    def issue(reason: str, detail: str) -> tuple[None, AnnotationIssue]:
        return None, AnnotationIssue(video_id, index, reason, detail)

    if not (math.isfinite(start) and math.isfinite(end)):
        return issue(NAN_TIME, f"start={start} end={end}")
    if start < 0 or end < 0:
        return issue(NEGATIVE_TIME, f"start={start} end={end}")
    if end <= start:
        return issue(END_BEFORE_START, f"start={start} end={end}")
    if duration is not None and start >= duration:
        return issue(TIME_PAST_DURATION, f"start={start} duration={duration}")
    text = text.strip()
    if not text:
        return issue(EMPTY_SENTENCE, f"start={start} end={end}")
    if len(text) > MAX_SENTENCE_CHARS:
        return issue(SENTENCE_TOO_LONG, f"{len(text)} characters, over {MAX_SENTENCE_CHARS}")
    if duration is None or end <= duration:
        return Segment(start, end, text), None
    clamped = Segment(start, duration, text)
    if end <= duration + END_TOLERANCE_S:
        return clamped, None
    return clamped, AnnotationIssue(
        video_id, index, END_CLAMPED, f"end={end} clamped to duration={duration}"
    )


def _duration(video_id: str, raw: object, issues: list[AnnotationIssue]) -> float | None:
    """The annotated duration, or None (with an issue) when it is missing or unusable."""
    if raw is None:
        return None
    value = _number(raw)
    if value is None:
        issues.append(AnnotationIssue(video_id, None, BAD_FORMAT, f"duration={_short(raw)}"))
    elif not math.isfinite(value):
        issues.append(AnnotationIssue(video_id, None, NAN_TIME, f"duration={value}"))
    elif value < 0:
        issues.append(AnnotationIssue(video_id, None, NEGATIVE_TIME, f"duration={value}"))
    else:
        return value
    return None


def _entry(
    video_id: str,
    video: str | None,
    duration_raw: object,
    raw_segments: list[tuple[object, object, object]],
    issues: list[AnnotationIssue],
) -> VideoAnnotation:
    """Build one video from raw ``(start, end, text)`` triples, recording every rejection."""
    duration = _duration(video_id, duration_raw, issues)
    segments = []
    for index, (start_raw, end_raw, text) in enumerate(raw_segments):
        start, end = _number(start_raw), _number(end_raw)
        if start is None or end is None or not isinstance(text, str):
            detail = f"segment ({_short(start_raw)}, {_short(end_raw)}, {_short(text)})"
            issues.append(AnnotationIssue(video_id, index, BAD_FORMAT, detail))
            continue
        segment, issue = _check_segment(video_id, index, start, end, text, duration)
        if issue is not None:
            issues.append(issue)
        if segment is not None:
            segments.append(segment)
    return VideoAnnotation(video_id, video, duration, segments)


def _first_keys(data: dict, issues: list[AnnotationIssue]) -> Iterator[tuple[str, object]]:
    """The object's entries in file order, keeping the first of repeated keys (lazily, so the
    issues stay in file order)."""
    pairs = data.pairs if isinstance(data, _PairsDict) else list(data.items())
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            issues.append(AnnotationIssue(key, None, DUPLICATE_ID, "repeated key, first kept"))
            continue
        seen.add(key)
        yield key, value


def _activitynet(data: object, issues: list[AnnotationIssue]) -> list[VideoAnnotation]:
    if not isinstance(data, dict):
        raise _BadFormat("top level is not an object of videos")
    videos = []
    for video_id, entry in _first_keys(data, issues):
        stamps = entry.get("timestamps") if isinstance(entry, dict) else None
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        lists = isinstance(stamps, list) and isinstance(sentences, list)
        if not lists or len(stamps) != len(sentences):
            detail = "needs timestamps and sentences lists of equal length"
            issues.append(AnnotationIssue(video_id, None, BAD_FORMAT, detail))
            continue
        raw = [(*_pair(stamp), text) for stamp, text in zip(stamps, sentences, strict=True)]
        videos.append(_entry(video_id, None, entry.get("duration"), raw, issues))
    return videos


def _youcook2_hint(video_id: str, entry: dict) -> str | None:
    """``subset/recipe_type/id``, the layout of YouCook2's raw_videos, when the entry names both."""
    subset, recipe = entry.get("subset"), entry.get("recipe_type")
    if isinstance(recipe, int) and not isinstance(recipe, bool):
        recipe = str(recipe)
    if not (isinstance(subset, str) and isinstance(recipe, str)):
        return None
    hint = f"{subset}/{recipe}/{video_id}"
    return hint if is_safe_relative(hint) else None


def _youcook2_segment(item: object) -> tuple[object, object, object]:
    if not isinstance(item, dict):
        return None, None, item
    return (*_pair(item.get("segment")), item.get("sentence"))


def _youcook2(data: object, issues: list[AnnotationIssue]) -> list[VideoAnnotation]:
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise _BadFormat('no "database" object')
    videos = []
    for video_id, entry in _first_keys(database, issues):
        annotations = entry.get("annotations", []) if isinstance(entry, dict) else None
        if not isinstance(annotations, list):
            issues.append(AnnotationIssue(video_id, None, BAD_FORMAT, "annotations not a list"))
            continue
        raw = [_youcook2_segment(item) for item in annotations]
        hint = _youcook2_hint(video_id, entry)
        videos.append(_entry(video_id, hint, entry.get("duration"), raw, issues))
    return videos


def _lines(data: bytes, issues: list[AnnotationIssue]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line of a line-oriented file, decoded on its own:
    a line that is not UTF-8 becomes a ``bad_line`` issue and the other lines go on."""
    for lineno, raw in enumerate(data.splitlines(), 1):
        if lineno == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 1].hex()
            detail = f"line {lineno}: not UTF-8 (byte 0x{bad} at byte {err.start + 1})"
            issues.append(AnnotationIssue("", None, BAD_LINE, detail))
            continue
        if line.strip():
            yield lineno, line


def _charades(data: bytes, issues: list[AnnotationIssue]) -> list[VideoAnnotation]:
    by_video: dict[str, list[tuple[object, object, object]]] = {}
    for lineno, line in _lines(data, issues):
        head, sep, sentence = line.partition("##")
        fields = head.split()
        times = [_number(value) for value in fields[1:]]
        if not sep or len(fields) != 3 or None in times:
            detail = f"line {lineno}: expected 'VIDEO START END##sentence': {_short(line)}"
            issues.append(AnnotationIssue("", None, BAD_LINE, detail))
            continue
        by_video.setdefault(fields[0], []).append((times[0], times[1], sentence))
    return [_entry(video_id, None, None, raw, issues) for video_id, raw in by_video.items()]


def _jsonl_record(obj: object) -> tuple[str, str | None, object, list] | str:
    """``(video_id, video, duration, segments)`` of one JSONL object, or why it cannot be read."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    video, video_id, segments = obj.get("video"), obj.get("id"), obj.get("segments")
    if video is not None and not (isinstance(video, str) and video):
        return '"video" must be a non-empty string'
    if video_id == "" or isinstance(video_id, bool):
        return '"id" must be a non-empty string or an integer'
    if not isinstance(video_id, (str, int, type(None))):
        return '"id" must be a non-empty string or an integer'
    if video_id is None and video is None:
        return 'needs "video" or "id"'
    if not isinstance(segments, list):
        return '"segments" must be a list'
    video_id = str(video_id) if video_id is not None else video
    return video_id, video, obj.get("duration"), segments


def _jsonl_segment(item: object) -> tuple[object, object, object]:
    if not isinstance(item, dict):
        return None, None, item
    return item.get("start"), item.get("end"), item.get("text")


def _jsonl(data: bytes, issues: list[AnnotationIssue]) -> list[VideoAnnotation]:
    videos: list[VideoAnnotation] = []
    seen: set[str] = set()
    for lineno, line in _lines(data, issues):
        try:
            record = _jsonl_record(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as err:
            record = f"not JSON ({err})"
        if isinstance(record, str):
            issues.append(AnnotationIssue("", None, BAD_LINE, f"line {lineno}: {record}"))
            continue
        video_id, video, duration, segments = record
        if video_id in seen:
            detail = f"line {lineno}: first occurrence kept"
            issues.append(AnnotationIssue(video_id, None, DUPLICATE_ID, detail))
            continue
        seen.add(video_id)
        if video is not None and not is_safe_relative(video):
            detail = f"line {lineno}: {_short(video)}"
            issues.append(AnnotationIssue(video_id, None, UNSAFE_PATH, detail))
            continue
        raw = [_jsonl_segment(item) for item in segments]
        videos.append(_entry(video_id, video, duration, raw, issues))
    return videos


def load_annotations(
    path: str | Path, fmt: str
) -> tuple[list[VideoAnnotation], list[AnnotationIssue]]:
    """Read one annotation file of format ``fmt`` (one of :data:`FORMATS`).

    Never raises for bad content: an unreadable or wrongly shaped file gives no videos and one
    ``bad_format`` issue naming the path; in a line-oriented format a bad line (not UTF-8, not a
    record) is one ``bad_line`` issue. An unknown ``fmt`` is a caller error (ValueError).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; expected one of {FORMATS}")
    path = Path(path)
    issues: list[AnnotationIssue] = []
    try:
        if fmt in ("charades", "jsonl"):
            parse_lines = _charades if fmt == "charades" else _jsonl
            return parse_lines(path.read_bytes(), issues), issues
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text, object_pairs_hook=_PairsDict.from_pairs)
        parse = _activitynet if fmt == "activitynet" else _youcook2
        return parse(data, issues), issues
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, _BadFormat, RecursionError) as err:
        return [], [AnnotationIssue("", None, BAD_FORMAT, f"{path}: {_short(str(err))}")]


def check_against_duration(
    ann: VideoAnnotation, duration: float
) -> tuple[VideoAnnotation, list[AnnotationIssue]]:
    """Re-apply the time rules with the duration probed from the video file.

    Returns the annotation with that duration and the surviving (possibly clamped) segments;
    ``segment_index`` here counts ``ann.segments``. A NaN or negative ``duration`` is a probing
    failure the caller must record itself, so it raises ValueError.
    """
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"probed duration must be finite and >= 0, got {duration}")
    kept, issues = [], []
    for index, seg in enumerate(ann.segments):
        segment, issue = _check_segment(ann.video_id, index, seg.start, seg.end, seg.text, duration)
        if issue is not None:
            issues.append(issue)
        if segment is not None:
            kept.append(segment)
    return replace(ann, duration=duration, segments=kept), issues


def is_safe_relative(path: str) -> bool:
    """True for a non-empty relative path with no ``..`` part, read as POSIX or Windows."""
    if not path or "\0" in path:
        return False
    for pure in (PurePosixPath(path), PureWindowsPath(path)):
        if pure.is_absolute() or pure.drive or pure.root or ".." in pure.parts:
            return False
    return True


def _candidates(ann: VideoAnnotation, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Relative names to try, best first: the hint as given when it names a video file,
    else the hint with each extension, then the id (and an ActivityNet id without ``v_``)."""
    if ann.video and PurePosixPath(ann.video).suffix.lower() in extensions:
        return [ann.video]
    stems = [ann.video] if ann.video else []
    stems.append(ann.video_id)
    if ann.video_id.startswith("v_"):
        stems.append(ann.video_id[2:])
    names = [stem + ext for stem in stems for ext in extensions]
    return list(dict.fromkeys(names))


def resolve_video(
    videos_root: Path, ann: VideoAnnotation, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> Path | None:
    """The video file for ``ann`` under ``videos_root``, or None. ``extensions`` (with dots)
    are tried after an id or an extension-less hint.

    Symlinks are resolved and a target outside the (resolved) root is refused, so neither a
    ``..`` in an id nor a link planted under the root can reach other files.
    """
    root = Path(videos_root).resolve()
    for name in _candidates(ann, extensions):
        if not is_safe_relative(name):
            continue
        try:
            path = (root / name).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a link loop, a bad name
            continue
        if path.is_relative_to(root) and path.is_file():
            return path
    return None
