"""Grounding answers are read and scored by VideoLLaMA3's Charades-STA rules."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from video_prep.grounding_eval import (
    evaluate,
    format_interval,
    grounding_iou,
    iou,
    main,
    parse_interval,
    parse_intervals,
)


def test_format_interval() -> None:
    assert format_interval(12, 18.5) == "12.0-18.5 s"
    assert format_interval(0.04, 0.06) == "0.0-0.1 s"
    for bad in [(-1.0, 2.0), (3.0, 2.0), (math.nan, 2.0), (1.0, math.inf)]:
        with pytest.raises(ValueError):
            format_interval(*bad)


def test_format_then_parse_round_trips_to_a_tenth() -> None:
    rng = random.Random(0)
    for _ in range(500):
        start = rng.uniform(0, 300)
        end = start + rng.uniform(0, 120)
        parsed = parse_interval(format_interval(start, end))
        assert parsed is not None
        assert parsed[0] == pytest.approx(start, abs=0.05 + 1e-9)
        assert parsed[1] == pytest.approx(end, abs=0.05 + 1e-9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.0-18.5 s", (12.0, 18.5)),
        ("The event happens from 5 to 10.", (5.0, 10.0)),
        ("It lasts 3.5 - 9 seconds", (3.5, 9.0)),
        ("18.5-12.0 s", (12.0, 18.5)),  # reversed: (min, max)
        ("between .5 and 2.", (0.5, 2.0)),  # no range: the two numbers
        ("In video 1 it starts at 3 and ends at 7", (3.0, 7.0)),  # odd count: first dropped
        ("Clip 2 shows it: 1.0 - 2.0", (1.0, 2.0)),  # a range wins over loose numbers
        ("00:12 - 00:18", (0.0, 12.0)),  # mm:ss is not understood, as in the original
        ("at 5.2 seconds", None),  # one number: no interval
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_interval(text: str, expected: tuple[float, float] | None) -> None:
    assert parse_interval(text) == expected


def test_parse_intervals_keeps_every_range() -> None:
    text = "first 24.3 - 30.4, then 1 to 2"
    assert parse_intervals(text) == [(24.3, 30.4), (1.0, 2.0)]
    assert parse_intervals("1 2 3 4 5") == [(2.0, 3.0), (4.0, 5.0)]
    assert parse_interval(text) == (24.3, 30.4)


def test_parse_clamps_only_with_a_duration() -> None:
    assert parse_interval("25.0-40.0 s") == (25.0, 40.0)
    assert parse_interval("25.0-40.0 s", duration=30.0) == (25.0, 30.0)
    assert parse_interval("35-40", duration=30.0) == (30.0, 30.0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 10), (5, 15), 5 / 15),
        ((0, 10), (0, 10), 1.0),
        ((2, 4), (0, 10), 0.2),
        ((0, 5), (5, 10), 0.0),  # touching
        ((0, 2), (8, 10), 0.0),
        ((10, 0), (0, 5), 0.5),  # reversed
        ((3, 3), (3, 3), 0.0),  # empty union
    ],
)
def test_iou(a: tuple[float, float], b: tuple[float, float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_grounding_iou_scores_several_intervals_together() -> None:
    # overlaps 2 + 2 over (10 + 4 - 4)
    assert grounding_iou([(0, 2), (8, 10)], (0, 10)) == pytest.approx(0.4)
    # (0, 4) and (6, 8) against (2, 7): overlaps 2 + 1, union 5 + 6 - 3
    assert grounding_iou([(0, 4), (6, 8)], (2, 7)) == pytest.approx(3 / 8)
    # the original does not merge repeats, so this exceeds 1
    assert grounding_iou([(0, 10), (0, 10)], (0, 10)) == pytest.approx(2.0)
    assert grounding_iou([], (0, 10)) == 0.0


def test_evaluate_thresholds_are_inclusive() -> None:
    target = (0.0, 10.0)
    predictions = [
        "0-10 s",  # IoU 1.0
        "0.0-7.0 s",  # 0.7
        "0.0-5.0 s",  # 0.5
        "0.0-3.0 s",  # 0.3
        "0.0-2.9 s",  # 0.29
        "no idea",  # unparsed: 0
    ]
    metrics = evaluate(predictions, [target] * 6)

    assert metrics["n"] == 6
    assert metrics["unparsed"] == 1
    assert metrics["mIoU"] == pytest.approx(100 * (1 + 0.7 + 0.5 + 0.3 + 0.29) / 6)
    assert metrics["R@0.3"] == pytest.approx(100 * 4 / 6)
    assert metrics["R@0.5"] == pytest.approx(100 * 3 / 6)
    assert metrics["R@0.7"] == pytest.approx(100 * 2 / 6)
    assert list(metrics) == ["n", "mIoU", "R@0.3", "R@0.5", "R@0.7", "unparsed"]


def test_evaluate_durations_and_edges() -> None:
    assert evaluate(["0-20"], [(0, 10)])["mIoU"] == pytest.approx(50.0)
    assert evaluate(["0-20"], [(0, 10)], durations=[10.0])["mIoU"] == pytest.approx(100.0)
    assert evaluate(["0-20"], [(0, 10)], durations=[None])["mIoU"] == pytest.approx(50.0)
    assert evaluate([], []) == {
        "n": 0,
        "mIoU": None,
        "R@0.3": None,
        "R@0.5": None,
        "R@0.7": None,
        "unparsed": 0,
    }
    with pytest.raises(ValueError):
        evaluate(["0-1"], [])
    with pytest.raises(ValueError):
        evaluate(["0-1"], [(0, 1)], durations=[])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_main_prints_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_jsonl(
        tmp_path / "pred.jsonl",
        [
            {"prediction": "The person turns on the light at 24.3-30.4 s.", "target": [24.3, 30.4]},
            {"prediction": "0.0 to 20.0", "target": [0, 10], "duration": 10.0},
            {"prediction": "never", "target": [1, 2]},
        ],
    )
    assert main([str(path)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 3
    assert metrics["unparsed"] == 1
    assert metrics["mIoU"] == pytest.approx(50.0)
    assert metrics["R@0.5"] == pytest.approx(200 / 3)
    assert metrics["R@0.7"] == pytest.approx(100 / 3)

    assert main([str(path), "--clamp-to-duration"]) == 0
    clamped = json.loads(capsys.readouterr().out)
    assert clamped["mIoU"] == pytest.approx(200 / 3)
    assert clamped["R@0.7"] == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '{"prediction": "1-2"}',
        '{"prediction": "1-2", "target": "12"}',
        '{"prediction": 3, "target": [1, 2]}',
        '{"prediction": "1-2", "target": [1, NaN]}',
    ],
)
def test_main_names_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    path = tmp_path / "pred.jsonl"
    path.write_text('{"prediction": "1-2", "target": [1, 2]}\n' + bad + "\n")
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:2:" in captured.err


def test_module_entry_point(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "pred.jsonl", [{"prediction": "1-2", "target": [1, 2]}])
    result = subprocess.run(
        [sys.executable, "-m", "video_prep.grounding_eval", str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert json.loads(result.stdout)["mIoU"] == pytest.approx(100.0)
