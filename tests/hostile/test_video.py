"""Hostile videos and annotations through the real ``vl3data video``: one run per annotation
format (JSONL, Charades-STA, ActivityNet) over a folder of bad (and odd but good) videos and an
annotation file of bad entries, then one test per kind (its ledger rows: status, reason, and the
issues that explain them, in every task's set), plus the run-wide promises (no traceback, one
row per input, nothing written outside the output, no Python connection off loopback).

An input of the video job is an annotation entry: a JSONL line, a Charades video (all its lines)
or unreadable line, an ActivityNet entry. Each is one ledger row in each of the three sets
(caption, streaming, grounding), whether it names a good video, a bad one, none at all, or
cannot be read (``bad_line``, keyed ``annotations.jsonl:N``). Bad segments stay on their video's
row, in its ``issues``.

Nothing outside the videos folder may be read: links out of it and paths with ``..`` are refused
before any probe (the row has no resolved ``video`` and no ``duration``), and a playlist named
``.mp4`` (HLS, ffconcat) is refused by the demuxer whitelist before ffmpeg opens what it lists.
ffmpeg runs as a subprocess: the audit hook sees the connections of Python only, so the playlist
to an address is checked by its row instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.hostile.harness import (
    VIDEO_TASKS,
    assert_clean_exit,
    assert_nothing_else_touched,
    assert_only_loopback,
    run_video,
)
from tests.video_prep.test_hostile_inputs import faststart_video, truncated_copy
from video_prep.grounding_eval import parse_interval
from video_prep.sample_videos import pattern_video, rotated, vfr

# real CLI runs over a whole corpus: `make test-slow` (and CI) runs them; `make test` stays
# under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

ANN = {"jsonl": "annotations.jsonl", "charades": "sta.txt", "activitynet": "train.json"}
HUGE = 1_000_000  # characters of the huge caption
LINE = "LINE"  # in an expected key: this case's line, ``annotations.jsonl:N`` (``sta.txt:N``)


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _lavfi(out: Path, src: str, *codec: str) -> Path:
    _ff("-f", "lavfi", "-i", src, *codec, str(out))
    return out


H264 = ("-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast")
H264_444 = ("-pix_fmt", "yuv444p", "-c:v", "libx264", "-preset", "ultrafast")  # odd sizes
VP8 = ("-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k")


# --- files: name -> maker(path, ctx) -------------------------------------------------------------


def _copy_good(p: Path, ctx: dict) -> None:
    shutil.copyfile(ctx["good"], p)


def _bytes(data: bytes) -> Callable[[Path, dict], None]:
    return lambda p, ctx: p.write_bytes(data)


def _link(target: str | Callable[[dict], str]) -> Callable[[Path, dict], None]:
    return lambda p, ctx: os.symlink(target(ctx) if callable(target) else target, p)


def _half_of(seconds: float, faststart: bool) -> Callable[[Path, dict], None]:
    """The first half of a video's bytes: with its header at the front (faststart) the rest
    still decodes; with the header at the end the half is junk."""

    def make(p: Path, ctx: dict) -> None:
        full = ctx["scratch"] / f"{p.stem}.full.mp4"
        (faststart_video if faststart else pattern_video)(full, seconds)
        truncated_copy(full, p)

    return make


def _rotated(p: Path, ctx: dict) -> None:
    rotated(ctx["good"], p, 90)


def _two_streams(p: Path, ctx: dict) -> None:
    _ff(
        "-f", "lavfi", "-i", "testsrc=duration=3:size=160x120:rate=10",
        "-f", "lavfi", "-i", "testsrc2=duration=3:size=320x240:rate=10",
        "-map", "0:v", "-map", "1:v", *H264, str(p),
    )  # fmt: skip


def _cover_art(p: Path, ctx: dict) -> None:
    """Audio with a picture attached as cover art: a video stream that is not a video."""
    _ff(
        "-f", "lavfi", "-i", "sine=duration=2", "-f", "lavfi", "-i", "testsrc=s=64x64:d=0.1",
        "-frames:v", "1", "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "mjpeg",
        "-disposition:v:0", "attached_pic", str(p),
    )  # fmt: skip


def _png(p: Path, ctx: dict) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(p, format="PNG")


def _garbled(p: Path, ctx: dict) -> None:
    """A faststart video with a stretch of its middle overwritten by junk."""
    full = faststart_video(ctx["scratch"] / "garbled.full.mp4", 6)
    data = bytearray(full.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2000] = bytes(range(250)) * 8
    p.write_bytes(bytes(data))


def _hls(target: object) -> str:
    """An HLS playlist of one segment: ``target``, a path or an address."""
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{target}\n#EXT-X-ENDLIST\n"


def _fifo(p: Path, ctx: dict) -> None:
    os.mkfifo(p)


def _folder(p: Path, ctx: dict) -> None:
    p.mkdir()
    shutil.copyfile(ctx["good"], p / "inner.mp4")


# --- lines -------------------------------------------------------------------------------------


def _line(video: str | None, *segments, vid: str | None = None, **more) -> bytes:
    obj: dict = {}
    if video is not None:
        obj["video"] = video
    if vid is not None:
        obj["id"] = vid
    segs = [
        {"start": s[0], "end": s[1], "text": s[2]} if isinstance(s, tuple) else s for s in segments
    ]
    obj["segments"] = segs
    obj.update(more)
    return json.dumps(obj, ensure_ascii=False).encode()


OK = (0.0, 2.0, "A clock counts on colour bars.")
OK2 = (1.0, 3.0, "The clock keeps counting.")


@dataclass
class Case:
    """One kind: the files it puts under the videos folder, its annotation line(s), and what
    each of its ledger keys must get: ``[(status, reason), ...]`` (two for a repeated id), with
    the issues expected on the row (``(segment, reason)``, in order) when given."""

    lines: list[bytes]
    expect: dict[str, list[tuple[str, str | None]]]
    files: dict[str, Callable[[Path, dict], None]] = field(default_factory=dict)
    issues: dict[str, list[tuple[int | None, str]]] = field(default_factory=dict)
    check: Callable[[object, dict], None] | None = None  # (run, {task: its row}): asserts


KEPT = [("kept", None)]


def _err(reason: str) -> list[tuple[str, str]]:
    return [("error", reason)]


def _seg_case(
    vid: str, *segments, issues: list[tuple[int | None, str]], expect=KEPT, **more
) -> Case:
    """The good video under an id of its own, with the given segments (and line fields)."""
    line = _line("good.mp4", *segments, vid=vid, **more)
    return Case([line], {vid: expect}, issues={vid: issues})


# --- checks beyond (status, reason) ------------------------------------------------------------


def _records(run, row: dict, task: str) -> list[dict]:
    keys = json.loads(row["keys"] or "[]")
    return [run.extra["sets"][task][k] for k in keys]


def _check_rotated(run, rows: dict) -> None:
    row = rows["caption"]
    assert row["rotation"] in (90, 270) and (row["width"], row["height"]) == (120, 160), row


def _check_vfr(run, rows: dict) -> None:
    row = rows["caption"]
    assert row["vfr"] is True and row["grid_frames"] == 3, row  # 3.93 s


def _check_offset(run, rows: dict) -> None:
    """A stream that starts at 2.5 s is stamped from its first frame: 0, 1, 2 s."""
    row = rows["caption"]
    assert row["grid_frames"] == 3, row
    (rec,) = _records(run, row, "caption")
    assert rec["timestamps"] == [0.0, 1.0, 2.0], rec["timestamps"]


def _check_size(w: int, h: int):
    def check(run, rows: dict) -> None:
        row = rows["caption"]
        assert (row["width"], row["height"]) == (w, h), row
        assert len(_records(run, row, "caption")[0]["frames"]) == row["grid_frames"]

    return check


def _check_one_frame(run, rows: dict) -> None:
    (rec,) = _records(run, rows["caption"], "caption")
    assert rec["timestamps"] == [0.0], rec


def _check_truncated(run, rows: dict) -> None:
    row = rows["caption"]
    assert row["duration"] == pytest.approx(10.0)  # what the header declares
    clips = json.loads(row["clips"])
    assert all(c["end"] <= row["grid_frames"] for c in clips), clips
    for task in VIDEO_TASKS:
        for rec in _records(run, rows[task], task):
            assert max(rec["timestamps"]) < row["grid_frames"], rec["timestamps"]


def _check_answers_within(end: float):
    """No clip, frame or answer past ``end``, the video stream's last second."""

    def check(run, rows: dict) -> None:
        row = rows["caption"]
        assert row["duration"] > end  # the ledger keeps the container's duration
        assert all(c["end"] <= end for c in json.loads(row["clips"]))
        for rec in _records(run, rows["grounding"], "grounding"):
            _, hi = parse_interval(rec["conversations"][1]["value"])
            assert hi <= end, rec["conversations"]
        (rec,) = _records(run, rows["streaming"], "streaming")
        assert all(m["time"] <= end for m in rec["conversation"]), rec["conversation"]

    return check


def _check_text_kept(text: str):
    def check(run, rows: dict) -> None:
        (rec,) = _records(run, rows["caption"], "caption")
        assert text in rec["conversations"][1]["value"], rec["conversations"]

    return check


def _check_not_read(run, rows: dict) -> None:
    """Refused before any read: no resolved path, nothing probed."""
    for row in rows.values():
        assert row["video"] is None and row["duration"] is None, row


def _check_refused_playlist(run, rows: dict) -> None:
    """Refused by the demuxer whitelist, before anything it names is opened (ffmpeg reads the
    file a playlist lists: the row would be kept, with the frames of the file outside)."""
    (issue,) = json.loads(rows["caption"]["issues"])
    assert "not opened" in issue["detail"], issue


def _check_huge(run, rows: dict) -> None:
    """A 1 MB caption is not a caption: refused with a reason, not put in every sample."""
    for task in VIDEO_TASKS:
        for rec in _records(run, rows[task], task):
            assert len(json.dumps(rec)) < HUGE, (task, "a 1 MB caption went into a sample")


def _check_nan_parsed(run, rows: dict) -> None:
    issues = json.loads(rows["caption"]["issues"])
    assert all(math.isfinite(i["segment"]) for i in issues if i["segment"] is not None)


# --- the cases ---------------------------------------------------------------------------------


def _cases(ctx: dict) -> dict[str, Case]:
    outside = ctx["outside"]
    c: dict[str, Case] = {}
    # the first line of the file, after a UTF-8 byte order mark
    c["bom_first_line"] = Case([_line("good.mp4", OK, vid="bom")], {"bom": KEPT})
    # videos: good, odd but good, and broken
    c["good"] = Case(
        [_line("good.mp4", OK, OK2)],
        {"good.mp4": KEPT},
        files={"good.mp4": _copy_good},
        check=_check_size(160, 120),
    )
    c["audio_only"] = Case(
        [_line("audio.mp4", OK)],
        {"audio.mp4": _err("no_video_stream")},
        files={"audio.mp4": lambda p, ctx: _lavfi(p, "sine=frequency=440:duration=1")},
    )
    c["text_named_mp4"] = Case(
        [_line("text.mp4", OK)],
        {"text.mp4": _err("corrupt_container")},
        files={"text.mp4": _bytes(b"this is not a video, just text\n" * 20)},
    )
    c["empty_file"] = Case(
        [_line("empty.mp4", OK)],
        {"empty.mp4": _err("corrupt_container")},
        files={"empty.mp4": _bytes(b"")},
    )
    c["moov_at_end_cut_in_half"] = Case(
        [_line("moov_end_half.mp4", OK)],
        {"moov_end_half.mp4": _err("corrupt_container")},
        files={"moov_end_half.mp4": _half_of(10, faststart=False)},
    )
    c["faststart_cut_in_half"] = Case(
        [_line("fast_half.mp4", (0.0, 2.0, "The start."), (1.0, 9.0, "Past the last frame."),
               (8.0, 9.5, "After the last frame."))],
        {"fast_half.mp4": KEPT},
        files={"fast_half.mp4": _half_of(10, faststart=True)},
        issues={"fast_half.mp4": [(None, "truncated"), (1, "end_clamped"),
                                  (2, "time_past_duration")]},
        check=_check_truncated,
    )  # fmt: skip
    c["one_frame"] = Case(
        [_line("one_frame.mp4", (0.0, 0.1, "A single frame."))],
        {"one_frame.mp4": KEPT},
        files={
            "one_frame.mp4": lambda p, ctx: _lavfi(
                p, "testsrc=duration=3:size=160x120:rate=10", "-frames:v", "1", *H264
            )
        },
        check=_check_one_frame,
    )
    c["sub_second"] = Case(
        [_line("half_second.mp4", (0.0, 0.5, "A flash of the pattern."))],
        {"half_second.mp4": KEPT},
        files={"half_second.mp4": lambda p, ctx: pattern_video(p, 0.5)},
        check=_check_one_frame,
    )
    c["variable_frame_rate"] = Case(
        [_line("vfr.mp4", (0.0, 4.0, "Bars and a clock, at a varying rate."))],
        {"vfr.mp4": KEPT},
        files={"vfr.mp4": lambda p, ctx: vfr(p, 4.0)},
        check=_check_vfr,
    )
    c["rotated_phone_video"] = Case(
        [_line("rotated.mp4", OK)],
        {"rotated.mp4": KEPT},
        files={"rotated.mp4": _rotated},
        check=_check_rotated,
    )
    c["stream_starts_at_2_5s"] = Case(
        [_line("offset.mp4", (0.0, 3.0, "The pattern, stamped from its first frame."))],
        {"offset.mp4": KEPT},
        files={
            "offset.mp4": lambda p, ctx: _lavfi(
                p, "testsrc=duration=3:size=160x120:rate=10", *H264, "-output_ts_offset", "2.5"
            )
        },
        check=_check_offset,
    )
    c["caption_past_the_frames_of_a_late_stream"] = Case(
        [_line("offset.mp4", OK, (3.5, 5.0, "In the container's 5.5 s, after the last frame."),
               vid="offset_late")],
        {"offset_late": KEPT},
        issues={"offset_late": [(1, "time_past_duration")]},
        check=_check_answers_within(3.0),
    )  # fmt: skip
    c["audio_longer_than_video"] = Case(
        [_line("long_audio.mp4", OK, (1.0, 6.0, "Runs on into the sound."),
               (4.0, 7.0, "Only sound here."))],
        {"long_audio.mp4": KEPT},
        files={
            "long_audio.mp4": lambda p, ctx: _ff(
                "-f", "lavfi", "-i", "testsrc=duration=3:size=160x120:rate=10",
                "-f", "lavfi", "-i", "sine=duration=8", *H264, "-c:a", "aac", str(p),
            )
        },
        issues={"long_audio.mp4": [(1, "end_clamped"), (2, "time_past_duration")]},
        check=_check_answers_within(3.0),
    )  # fmt: skip
    c["tiny_16x16"] = Case(
        [_line("tiny.mp4", OK)],
        {"tiny.mp4": KEPT},
        files={"tiny.mp4": lambda p, ctx: pattern_video(p, 3, size="16x16")},
        check=_check_size(16, 16),
    )
    c["odd_size_161x121"] = Case(
        [_line("odd.mp4", OK)],
        {"odd.mp4": KEPT},
        files={"odd.mp4": lambda p, ctx: _lavfi(p, "testsrc=d=3:s=161x121:r=10", *H264_444)},
        check=_check_size(161, 121),
    )
    c["webm_vp8"] = Case(
        [_line("clip.webm", OK)],
        {"clip.webm": KEPT},
        files={"clip.webm": lambda p, ctx: _lavfi(p, "testsrc=d=3:s=160x120:r=10", *VP8)},
    )
    c["mkv_mjpeg_found_by_id"] = Case(
        [_line(None, OK, vid="clip_mkv")],
        {"clip_mkv": KEPT},
        files={
            "clip_mkv.mkv": lambda p, ctx: _lavfi(
                p, "testsrc=duration=3:size=160x120:rate=10", "-c:v", "mjpeg", "-q:v", "5"
            )
        },
    )
    c["two_video_streams"] = Case(
        [_line("two_streams.mp4", OK)],
        {"two_streams.mp4": KEPT},
        files={"two_streams.mp4": _two_streams},
        check=_check_size(320, 240),
    )
    c["audio_with_cover_art"] = Case(
        [_line("cover_art.mp4", OK)],
        {"cover_art.mp4": _err("no_video_stream")},
        files={"cover_art.mp4": _cover_art},
    )
    c["random_bytes"] = Case(
        [_line("random.mkv", OK)],
        {"random.mkv": _err("corrupt_container")},
        files={"random.mkv": _bytes(bytes(range(256)) * 64)},
    )
    c["png_named_mp4"] = Case(
        [_line("picture.mp4", OK)],
        {"picture.mp4": _err("zero_duration")},
        files={"picture.mp4": _png},
    )
    c["garbage_in_the_middle"] = Case(
        [_line("garbled.mp4", (0.0, 6.0, "Colour bars, garbled on the way."))],
        {"garbled.mp4": KEPT},
        files={"garbled.mp4": _garbled},
    )
    c["video_in_a_subfolder"] = Case(
        [_line("sub/deeper/nested.mp4", OK)],
        {"sub/deeper/nested.mp4": KEPT},
        files={"sub/deeper/nested.mp4": _copy_good},
    )
    c["hls_playlist_named_mp4"] = Case(
        [_line("playlist.mp4", OK)],
        {"playlist.mp4": _err("corrupt_container")},
        files={"playlist.mp4": lambda p, ctx: p.write_text(_hls(ctx["outside"] / "secret.mp4"))},
        check=_check_refused_playlist,
    )
    c["hls_playlist_relative_out"] = Case(
        [_line("playlist_rel.mp4", OK)],
        {"playlist_rel.mp4": _err("corrupt_container")},
        files={"playlist_rel.mp4": _bytes(_hls("file:../outside/secret.mp4").encode())},
        check=_check_refused_playlist,
    )
    c["hls_playlist_to_the_network"] = Case(
        [_line("playlist_net.mkv", OK)],
        {"playlist_net.mkv": _err("corrupt_container")},
        files={"playlist_net.mkv": _bytes(_hls("http://127.0.0.1:9/segment.ts").encode())},
        check=_check_refused_playlist,
    )
    c["ffconcat_script_named_mp4"] = Case(
        [_line("concat.mp4", OK)],
        {"concat.mp4": _err("corrupt_container")},
        files={"concat.mp4": _bytes(b"ffconcat version 1.0\nfile good.mp4\nfile good.mp4\n")},
        check=_check_refused_playlist,
    )
    c["missing_video"] = Case(
        [_line("not_there.mp4", OK)], {"not_there.mp4": _err("unknown_video")}
    )
    c["symlink_out_of_root"] = Case(
        [_line("escape.mp4", OK)],
        {"escape.mp4": _err("unknown_video")},
        files={"escape.mp4": _link(lambda ctx: str(ctx["outside"] / "secret.mp4"))},
        check=_check_not_read,
    )
    c["symlink_relative_out_of_root"] = Case(
        [_line("escape_rel.mp4", OK)],
        {"escape_rel.mp4": _err("unknown_video")},
        files={"escape_rel.mp4": _link("../outside/secret.mp4")},
        check=_check_not_read,
    )
    c["symlinked_dir_out_of_root"] = Case(
        [_line("linked_dir/secret.mp4", OK)],
        {"linked_dir/secret.mp4": _err("unknown_video")},
        files={"linked_dir": _link(lambda ctx: str(ctx["outside"]))},
        check=_check_not_read,
    )
    c["symlink_to_dev_zero"] = Case(
        [_line("devzero.mp4", OK)],
        {"devzero.mp4": _err("unknown_video")},
        files={"devzero.mp4": _link("/dev/zero")},
        check=_check_not_read,
    )
    c["symlink_inside_root"] = Case(
        [_line("alias.mp4", OK)],
        {"alias.mp4": KEPT},
        files={"alias.mp4": _link("good.mp4")},
    )
    c["dangling_symlink"] = Case(
        [_line("dangling.mp4", OK)],
        {"dangling.mp4": _err("unknown_video")},
        files={"dangling.mp4": _link("nowhere.mp4")},
    )
    c["fifo_named_mp4"] = Case(
        [_line("fifo.mp4", OK)],
        {"fifo.mp4": _err("unknown_video")},
        files={"fifo.mp4": _fifo},
        check=_check_not_read,
    )
    c["folder_named_mp4"] = Case(
        [_line("dir.mp4", OK)],
        {"dir.mp4": _err("unknown_video")},
        files={"dir.mp4": _folder},
    )
    c["dotdot_path"] = Case(
        [_line("../outside/secret.mp4", OK)],
        {"../outside/secret.mp4": _err("unsafe_path")},
        check=_check_not_read,
    )
    c["dotdot_inside_path"] = Case(
        [_line("sub/../good.mp4", OK)],
        {"sub/../good.mp4": _err("unsafe_path")},
    )
    c["absolute_path"] = Case(
        [_line(str(outside / "secret.mp4"), OK)],
        {str(outside / "secret.mp4"): _err("unsafe_path")},
        check=_check_not_read,
    )
    c["dotdot_in_id"] = Case(
        [_line(None, OK, vid="../outside/secret")],
        {"../outside/secret": _err("unknown_video")},
        check=_check_not_read,
    )
    c["windows_dotdot_path"] = Case(
        [_line("..\\outside\\secret.mp4", OK)],
        {"..\\outside\\secret.mp4": _err("unsafe_path")},
    )
    c["windows_drive_path"] = Case(
        [_line("C:\\videos\\good.mp4", OK)], {"C:\\videos\\good.mp4": _err("unsafe_path")}
    )
    c["path_too_long"] = Case(
        [_line("a" * 5000 + ".mp4", OK)], {"a" * 5000 + ".mp4": _err("unknown_video")}
    )
    c["repeated_key_in_a_line"] = Case(
        [b'{"video": "good.mp4", "video": "../outside/other.mp4", "segments": []}'],
        {"../outside/other.mp4": _err("unsafe_path")},
    )
    c["nul_in_path"] = Case(
        [_line("good.mp4\u0000.txt", OK)],
        {"good.mp4\u0000.txt": _err("unsafe_path")},
    )
    # lines that are not records
    c["non_utf8_line"] = Case(
        [b'{"video": "good.mp4", "segments": [{"start": 0, "end": 1, "text": "caf\xe9"}]}'],
        {LINE: _err("bad_line")},
    )
    c["non_json_line"] = Case([b"{not json"], {LINE: _err("bad_line")})
    c["json_array_line"] = Case([b"[1, 2, 3]"], {LINE: _err("bad_line")})
    c["deeply_nested_line"] = Case([b"[" * 100_000 + b"]" * 100_000], {LINE: _err("bad_line")})
    c["control_char_in_string"] = Case(
        [b'{"video": "good.mp4", "segments": [{"start": 0, "end": 1, "text": "a\x01b"}]}'],
        {LINE: _err("bad_line")},
    )
    c["no_segments_key"] = Case([b'{"video": "good.mp4"}'], {LINE: _err("bad_line")})
    c["segments_a_string"] = Case(
        [_line("good.mp4", vid="seg_str")[:-2] + b'"0-2 a clock"}'], {LINE: _err("bad_line")}
    )
    c["empty_video_name"] = Case([_line("", OK)], {LINE: _err("bad_line")})
    c["bom_in_the_middle"] = Case(
        [b"\xef\xbb\xbf" + _line("good.mp4", OK, vid="mid_bom")], {LINE: _err("bad_line")}
    )
    c["id_is_a_bool"] = Case([_line("good.mp4", OK, vid=True)], {LINE: _err("bad_line")})
    # segments: each on the good video under an id of its own
    c["negative_start"] = _seg_case(
        "neg_start", (-1.0, 2.0, "Before the video."), OK, issues=[(0, "negative_time")]
    )
    c["end_before_start"] = _seg_case(
        "end_before", (2.0, 1.0, "Backwards."), OK, issues=[(0, "end_before_start")]
    )
    c["zero_length_segment"] = _seg_case(
        "zero_len", (1.0, 1.0, "No time at all."), OK, issues=[(0, "end_before_start")]
    )
    c["start_past_duration"] = _seg_case(
        "past_end", OK, (5.0, 6.0, "After the end."), issues=[(1, "time_past_duration")]
    )
    c["end_far_past_duration"] = _seg_case(
        "clamped", (0.0, 30.0, "Runs long."), issues=[(0, "end_clamped")]
    )
    c["only_segments_past_duration"] = _seg_case(
        "all_past",
        (5.0, 6.0, "After the end."),
        issues=[(0, "time_past_duration")],
        expect=[("dropped", "no_segments")],
    )
    c["nan_and_inf_times"] = Case(
        [b'{"video": "good.mp4", "id": "nan_inf", "segments": ['
         b'{"start": NaN, "end": 1, "text": "nan"}, {"start": 0, "end": Infinity, "text": "inf"},'
         b'{"start": -Infinity, "end": 1, "text": "-inf"}, {"start": 0, "end": 1e400, "text": "e"},'
         b'{"start": 0, "end": 2, "text": "A clock."}]}'],
        {"nan_inf": KEPT},
        issues={"nan_inf": [(0, "nan_time"), (1, "nan_time"), (2, "nan_time"), (3, "nan_time")]},
        check=_check_nan_parsed,
    )  # fmt: skip
    c["huge_integer_time"] = _seg_case(
        "huge_int", {"start": 0, "end": 10**400, "text": "big"}, OK, issues=[(0, "nan_time")]
    )
    c["times_as_numeric_strings"] = _seg_case(
        "str_times", {"start": "0", "end": "2.0", "text": "Strings that are numbers."}, issues=[]
    )
    c["segments_are_strings"] = _seg_case(
        "seg_items_str",
        "0 2 a clock",
        "2 3 more",
        issues=[(0, "bad_format"), (1, "bad_format")],
        expect=[("dropped", "no_segments")],
    )
    c["times_not_numbers"] = _seg_case(
        "bad_times",
        {"start": "soon", "end": 2, "text": "x"},
        {"start": [0], "end": 2, "text": "y"},
        {"start": True, "end": 2, "text": "z"},
        OK,
        issues=[(0, "bad_format"), (1, "bad_format"), (2, "bad_format")],
    )
    c["text_not_a_string"] = _seg_case(
        "text_num", {"start": 0, "end": 2, "text": 7}, OK, issues=[(0, "bad_format")]
    )
    c["empty_caption"] = _seg_case(
        "empty_text",
        (0.0, 1.0, ""),
        (0.0, 1.0, " \t\n "),
        OK,
        issues=[(0, "empty_sentence"), (1, "empty_sentence")],
    )
    c["annotated_duration_shorter"] = Case(
        [_line("good.mp4", (0.0, 2.0, "Past the annotated end."), vid="ann_short", duration=1.0)],
        {"ann_short": KEPT},
        issues={"ann_short": [(0, "end_clamped")]},
    )
    c["annotated_duration_longer"] = Case(
        [_line("good.mp4", OK, (30.0, 40.0, "In the annotation only."), vid="ann_long",
               duration=60.0)],
        {"ann_long": KEPT},
        issues={"ann_long": [(1, "time_past_duration")]},
    )  # fmt: skip
    c["annotated_duration_negative"] = _seg_case(
        "ann_neg", OK, issues=[(None, "negative_time")], duration=-5
    )
    c["annotated_duration_nan"] = Case(
        [b'{"video": "good.mp4", "id": "ann_nan", "duration": NaN, "segments": '
         b'[{"start": 0, "end": 2, "text": "A clock."}]}'],
        {"ann_nan": KEPT},
        issues={"ann_nan": [(None, "nan_time")]},
    )  # fmt: skip
    c["thousand_captions_on_a_3s_video"] = Case(
        [_line("good.mp4", *[(0.0, 2.0, f"Caption {i}.") for i in range(1000)], vid="dense")],
        {"dense": [("dropped", "no_kept_clips")]},
    )
    c["huge_caption"] = Case(
        [_line("good.mp4", (0.0, 2.0, "x" * HUGE), OK2, vid="huge_text")],
        {"huge_text": KEPT},
        issues={"huge_text": [(0, "sentence_too_long")]},
        check=_check_huge,
    )
    c["u2028_in_caption"] = Case(
        [
            _line(
                "good.mp4",
                (0.0, 2.0, "A clock\u2028counts\u2029on\u0085\u200f\u05e9\u05dc\u05d5\u05dd 🎬."),
                vid="u2028",
            )
        ],
        {"u2028": KEPT},
        check=_check_text_kept(
            "A clock\u2028counts\u2029on\u0085\u200f\u05e9\u05dc\u05d5\u05dd 🎬."
        ),
    )
    c["duplicate_id"] = Case(
        [_line("good.mp4", OK, vid="dup"), _line("good.mp4", OK2, vid="dup")],
        {"dup": [("kept", None), ("error", "duplicate_id")]},
    )
    c["same_file_two_ids"] = Case(
        [_line("good.mp4", OK, vid="twin_a"), _line("good.mp4", OK, vid="twin_b")],
        {"twin_a": KEPT, "twin_b": KEPT},
    )
    c["empty_segment_list"] = Case(
        [_line("good.mp4", vid="no_segs")], {"no_segs": [("dropped", "no_segments")]}
    )
    c["bad_duration_field"] = _seg_case(
        "bad_duration", OK, issues=[(None, "bad_format")], duration="ten"
    )
    c["integer_id"] = Case([_line("good.mp4", OK, vid=7)], {"7": KEPT})
    c["unicode_and_newline_name"] = Case(
        [_line("café\nvidéo 🎬.mp4", OK)],
        {"café\nvidéo 🎬.mp4": KEPT},
        files={"café\nvidéo 🎬.mp4": _copy_good},
    )
    c["cr_only_line_ends"] = Case(
        [_line("good.mp4", OK, vid="cr_a") + b"\r" + _line("good.mp4", OK, vid="cr_b")],
        {"cr_a": KEPT, "cr_b": KEPT},
    )
    c["crlf_line_end"] = Case([_line("good.mp4", OK, vid="crlf") + b"\r"], {"crlf": KEPT})
    return c


def _charades_cases(ctx: dict) -> dict[str, Case]:
    """Charades-STA lines, ``VIDEO START END##sentence``: a video's lines make one row."""
    c: dict[str, Case] = {}
    good = {"good.mp4": _copy_good}
    c["bom_first_line"] = Case([b"bom 0.0 2.0##A clock."], {"bom": KEPT}, {"bom.mp4": _copy_good})
    c["good_two_lines"] = Case(
        [b"good 0.0 2.0##A clock counts.", b"good 1.0 3.0##It keeps counting."],
        {"good": KEPT},
        good,
        issues={"good": []},
    )
    c["interleaved_videos"] = Case(
        [b"ia 0 2##First of a.", b"ib 0 2##First of b.", b"ia 1 3##Second of a."],
        {"ia": KEPT, "ib": KEPT},
        {"ia.mp4": _copy_good, "ib.webm": lambda p, ctx: _lavfi(p, "testsrc=d=3:r=10", *VP8)},
    )
    c["tabs_and_crlf"] = Case(
        [b"tabs\t0\t2##Tab separated.\r"], {"tabs": KEPT}, {"tabs.mp4": _copy_good}
    )
    c["hashes_in_the_sentence"] = Case(
        [b"hashes 0 2##A clock ## and a hash."],
        {"hashes": KEPT},
        {"hashes.mp4": _copy_good},
        check=_check_text_kept("A clock ## and a hash."),
    )
    c["non_utf8_line"] = Case([b"good 0.0 2.0##caf\xe9"], {LINE: _err("bad_line")})
    c["no_separator"] = Case([b"good 0.0 2.0 A clock without hashes."], {LINE: _err("bad_line")})
    c["four_fields"] = Case([b"good 0 1 2##Too many numbers."], {LINE: _err("bad_line")})
    c["times_not_numbers"] = Case([b"good soon later##When?"], {LINE: _err("bad_line")})
    c["only_the_sentence"] = Case([b"##No video, no times."], {LINE: _err("bad_line")})
    c["nan_and_inf_times"] = Case(
        [b"nanv nan 2##x", b"nanv 0 inf##y", b"nanv 0 2##A clock."],
        {"nanv": KEPT},
        {"nanv.mp4": _copy_good},
        issues={"nanv": [(0, "nan_time"), (1, "nan_time")]},
    )
    c["negative_start_only"] = Case(
        [b"negv -1 2##Before the video."],
        {"negv": [("dropped", "no_segments")]},
        {"negv.mp4": _copy_good},
        issues={"negv": [(0, "negative_time")]},
    )
    c["end_before_start"] = Case(
        [b"backv 2 1##Backwards.", b"backv 0 2##A clock."],
        {"backv": KEPT},
        {"backv.mp4": _copy_good},
        issues={"backv": [(0, "end_before_start")]},
    )
    c["empty_sentence"] = Case(
        [b"emptyv 0 2##   "],
        {"emptyv": [("dropped", "no_segments")]},
        {"emptyv.mp4": _copy_good},
        issues={"emptyv": [(0, "empty_sentence")]},
    )
    c["start_past_duration"] = Case(
        [b"pastv 0 2##A clock.", b"pastv 5 6##After the end."],
        {"pastv": KEPT},
        {"pastv.mp4": _copy_good},
        issues={"pastv": [(1, "time_past_duration")]},
    )
    c["corrupt_video"] = Case(
        [b"junk 0 2##x"], {"junk": _err("corrupt_container")}, {"junk.mp4": _bytes(b"junk" * 99)}
    )
    c["missing_video"] = Case([b"absent 0 2##x"], {"absent": _err("unknown_video")})
    c["dotdot_id"] = Case(
        [b"../outside/secret 0 2##x"],
        {"../outside/secret": _err("unknown_video")},
        check=_check_not_read,
    )
    c["symlink_out_of_root"] = Case(
        [b"escape 0 2##x"],
        {"escape": _err("unknown_video")},
        {"escape.mp4": _link(lambda ctx: str(ctx["outside"] / "secret.mp4"))},
        check=_check_not_read,
    )
    return c


def _an(key: str, body: str) -> bytes:
    return f'"{key}": {body}'.encode()


def _activitynet_cases(ctx: dict) -> dict[str, Case]:
    """ActivityNet Captions entries, ``"v_ID": {"duration", "timestamps", "sentences"}``, one
    object: an entry is a row."""
    c: dict[str, Case] = {}
    good = '{"duration": 3.0, "timestamps": [[0, 2], [1, 3]], "sentences": ["A clock.", "More."]}'
    c["good"] = Case([_an("v_good", good)], {"v_good": KEPT}, {"v_good.mp4": _copy_good})
    c["file_without_v_prefix"] = Case(
        [_an("v_strip", good)], {"v_strip": KEPT}, {"strip.mkv": _copy_good}
    )
    c["duplicate_key"] = Case(
        [_an("v_dup", good), _an("v_dup", good)],
        {"v_dup": [("kept", None), ("error", "duplicate_id")]},
        {"v_dup.mp4": _copy_good},
    )
    c["unequal_lists"] = Case(
        [_an("v_unequal", '{"timestamps": [[0, 1], [1, 2]], "sentences": ["one"]}')],
        {"v_unequal": _err("bad_format")},
        {"v_unequal.mp4": _copy_good},
    )
    c["timestamps_a_string"] = Case(
        [_an("v_tstr", '{"timestamps": "0-2", "sentences": ["one"]}')],
        {"v_tstr": _err("bad_format")},
        {"v_tstr.mp4": _copy_good},
    )
    c["entry_not_an_object"] = Case(
        [_an("v_list", "[1, 2]")], {"v_list": _err("bad_format")}, {"v_list.mp4": _copy_good}
    )
    c["stamps_of_three"] = Case(
        [_an("v_three", '{"timestamps": [[0, 1, 2]], "sentences": ["x"]}')],
        {"v_three": [("dropped", "no_segments")]},
        {"v_three.mp4": _copy_good},
        issues={"v_three": [(0, "bad_format")]},
    )
    c["nan_time"] = Case(
        [_an("v_nan", '{"timestamps": [[NaN, 1], [0, 2]], "sentences": ["x", "A clock."]}')],
        {"v_nan": KEPT},
        {"v_nan.mp4": _copy_good},
        issues={"v_nan": [(0, "nan_time")]},
    )
    c["duration_a_string"] = Case(
        [_an("v_dstr", '{"duration": "ten", "timestamps": [[0, 2]], "sentences": ["A clock."]}')],
        {"v_dstr": KEPT},
        {"v_dstr.mp4": _copy_good},
        issues={"v_dstr": [(None, "bad_format")]},
    )
    c["sentence_not_a_string"] = Case(
        [_an("v_snum", '{"timestamps": [[0, 2], [0, 1]], "sentences": [7, "A clock."]}')],
        {"v_snum": KEPT},
        {"v_snum.mp4": _copy_good},
        issues={"v_snum": [(0, "bad_format")]},
    )
    c["missing_video"] = Case([_an("v_absent", good)], {"v_absent": _err("unknown_video")})
    c["dotdot_key"] = Case(
        [_an("../outside/secret", good)],
        {"../outside/secret": _err("unknown_video")},
        check=_check_not_read,
    )
    c["symlink_out_of_root"] = Case(
        [_an("v_escape", good)],
        {"v_escape": _err("unknown_video")},
        {"v_escape.mp4": _link(lambda ctx: str(ctx["outside"] / "secret.mp4"))},
        check=_check_not_read,
    )
    return c


TABLES = {"jsonl": _cases, "charades": _charades_cases, "activitynet": _activitynet_cases}
# the names, for test ids: the same tables on placeholders
PLACEHOLDER = {"outside": Path("/nonexistent")}
XFAIL: dict = {}  # every case passes: none is marked as a known failure


def _params(fmt: str) -> list:
    names = list(TABLES[fmt](PLACEHOLDER))
    return [pytest.param(n, marks=XFAIL[n]) if fmt == "jsonl" and n in XFAIL else n for n in names]


def _write_corpus(base: Path, fmt: str) -> tuple[Path, Path, dict[str, Case]]:
    videos, outside, scratch = base / "videos", base / "outside", base / "scratch"
    for d in (videos, outside, scratch):
        d.mkdir()
    good = pattern_video(scratch / "good.mp4", 3)
    ctx = {"good": good, "outside": outside, "scratch": scratch}
    shutil.copyfile(good, outside / "secret.mp4")
    cases = TABLES[fmt](ctx)
    name = ANN[fmt]
    entries: list[bytes] = []
    lineno = 0
    for case in cases.values():
        for rel, make in case.files.items():
            (videos / rel).parent.mkdir(parents=True, exist_ok=True)
            make(videos / rel, ctx)
        for line in case.lines:
            lineno += len(line.splitlines())  # a CR alone ends a line too
            entries.append(line)
        if LINE in case.expect:
            assert len(case.lines) == 1
            case.expect[f"{name}:{lineno}"] = case.expect.pop(LINE)
    if fmt == "activitynet":  # one JSON object (repeated keys and NaN as written)
        data = b"\xef\xbb\xbf{\n" + b",\n".join(entries) + b"\n}\n"
    else:  # a BOM first, blank lines last: neither is an input
        data = b"\xef\xbb\xbf" + b"".join(e + b"\n" for e in entries) + b"\n   \n"
    ann = base / "ann" / name
    ann.parent.mkdir()
    ann.write_bytes(data)
    return videos, ann, cases


def _run(tmp_path_factory, fmt: str):
    base = tmp_path_factory.mktemp(f"hostile_video_{fmt}")
    videos, ann, cases = _write_corpus(base, fmt)
    sets = ["input.partition_size=8", "frames.max_side=160", "clips.density_min_len_s=10"]
    run = run_video(base, videos, ann, sets, fmt=fmt)
    run.extra["cases"], run.extra["format"] = cases, fmt
    return run


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    return _run(tmp_path_factory, "jsonl")


@pytest.fixture(scope="module")
def charades_run(tmp_path_factory):
    return _run(tmp_path_factory, "charades")


@pytest.fixture(scope="module")
def activitynet_run(tmp_path_factory):
    return _run(tmp_path_factory, "activitynet")


RUNS = {"jsonl": "video_run", "charades": "charades_run", "activitynet": "activitynet_run"}


@pytest.fixture(params=list(RUNS))
def any_run(request):
    return request.getfixturevalue(RUNS[request.param])


def test_video_run_exits_cleanly(any_run):
    assert_clean_exit(any_run)


def test_video_run_writes_nothing_outside_the_output(any_run):
    assert_nothing_else_touched(any_run)


def test_video_run_connects_to_loopback_only(any_run):
    assert_only_loopback(any_run)


def test_video_connect_hook_ran_in_the_ray_workers(any_run):
    assert len(any_run.extra["hooked"]) >= 2, any_run.extra["hooked"]


@pytest.mark.parametrize("task", VIDEO_TASKS)
def test_video_every_input_has_exactly_one_row(any_run, task):
    """One row per annotation entry (a JSONL line, a Charades video or bad line, an ActivityNet
    entry), in each task's set: the same keys, the same ids, counted in stats.json."""
    expected = [k for c in any_run.extra["cases"].values() for k, v in c.expect.items() for _ in v]
    rows = any_run.extra["ledgers"][task]
    assert sorted(r["source_key"] for r in rows) == sorted(expected)
    assert len({r["id"] for r in rows}) == len(rows)
    fmt = any_run.extra["format"]
    assert {r["source"] for r in rows} == {f"video:{fmt}:{ANN[fmt]}"}
    caption_ids = [r["id"] for r in any_run.extra["ledgers"]["caption"]]
    assert [r["id"] for r in rows] == caption_ids
    stats = json.loads((any_run.out / task / "stats.json").read_text())
    assert stats["inputs"] == len(expected)


def _assert_case(run, case: str) -> None:
    """The case's rows in every task's ledger: (status, reason), the issues that explain them,
    samples for a kept row, and what else the case promises."""
    c: Case = run.extra["cases"][case]
    for task in VIDEO_TASKS:
        for key, want in c.expect.items():
            got = [r for r in run.extra["ledgers"][task] if r["source_key"] == key]
            assert sorted((r["status"], r["reason"]) for r in got) == sorted(want), (task, got)
            if key in c.issues:
                issues = json.loads(got[0]["issues"] or "[]")
                assert [(i["segment"], i["reason"]) for i in issues] == c.issues[key], (task, key)
            for r in got:
                assert bool(json.loads(r["keys"] or "[]")) == (r["status"] == "kept"), (task, r)
    if c.check is not None:
        (key,) = c.expect
        rows = {
            t: next(r for r in run.extra["ledgers"][t] if r["source_key"] == key)
            for t in VIDEO_TASKS
        }
        c.check(run, rows)


@pytest.mark.parametrize("case", _params("jsonl"))
def test_video_case(video_run, case):
    _assert_case(video_run, case)


@pytest.mark.parametrize("case", _params("charades"))
def test_charades_case(charades_run, case):
    _assert_case(charades_run, case)


@pytest.mark.parametrize("case", _params("activitynet"))
def test_activitynet_case(activitynet_run, case):
    _assert_case(activitynet_run, case)


def test_a_hung_ffprobe_is_a_corrupt_container_after_the_timeout(tmp_path, monkeypatch):
    """``probe.PROBE_TIMEOUT_S`` bounds ffprobe (ffmpeg-python's ``probe`` took ``timeout`` as
    an ffprobe option and waited forever): an ffprobe that hangs costs the video, not the job."""
    from video_prep import probe

    probe.format_whitelist()  # listed by the real ffprobe, once per process
    fake = tmp_path / "bin" / "ffprobe"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    video = pattern_video(tmp_path / "v.mp4", 1)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(probe, "PROBE_TIMEOUT_S", 1.0)
    t0 = time.monotonic()
    with pytest.raises(probe.VideoError) as err:
        probe.probe_video(video)
    assert time.monotonic() - t0 < 10
    assert err.value.reason == "corrupt_container" and "TimeoutExpired" in err.value.detail
