"""Temporal-grounding scores computed with the rules of VideoLLaMA3's Charades-STA evaluation.

Why the same rules: our grounding numbers must be comparable with the paper's, so reading a
model's free text into intervals, and scoring them, follows DAMO-NLP-SG/VideoLLaMA3
``evaluation/benchmarks/charades_sta.py`` (``process_response``) and
``evaluation/benchmarks/base.py`` (``_eval_temporal_grounding``):

1. Every ``A - B`` or ``A to B`` (spaces optional, ASCII hyphen only) between two unsigned
   decimals is a predicted interval; when there is at least one, nothing else is read.
2. Otherwise every unsigned decimal in the text is taken; if their count is odd the FIRST is
   dropped, and the rest are paired in order. So no number, or one, gives no interval.
3. Numbers are seconds: no units, no ``mm:ss``, no signs (``-`` is only ever a separator).
4. An interval is ``(min, max)`` of its two numbers. Against the target, the IoU is
   ``sum(overlaps) / (target length + sum(predicted lengths) - sum(overlaps))``: several
   intervals are scored together, unmerged, exactly as the original does.
5. mIoU and R@k (the share with IoU >= k, k = 0.3, 0.5, 0.7) over all samples, in percent, as
   the original reports them; a text with no interval scores IoU 0 and is counted in
   ``unparsed``.

Departures, only where the original fails or adds nothing: a zero union scores 0 (the original
divides by zero); no samples give ``None`` metrics; clamping to the video duration exists but is
opt-in (the original never clamps, so leave it off for comparable numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

THRESHOLDS = (0.3, 0.5, 0.7)

_DECIMAL = r"(?:\d+\.?\d*|\d*\.\d+)"  # "12", "12.", "12.5", ".5"
_RANGE = re.compile(rf"({_DECIMAL})\s*(?:-|to)\s*({_DECIMAL})")
_ANY_NUMBER = re.compile(r"\d*\.?\d+")

Interval = tuple[float, float]


def format_interval(start: float, end: float) -> str:
    """The answer text of a grounding sample, ``"12.0-18.5 s"`` (DESIGN §5).

    Refuses what :func:`parse_interval` could not read back: a negative or non-finite time
    (its ``-`` would read as a separator) or an end before the start.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
        raise ValueError(f"not a grounding interval: {start}, {end}")
    return f"{start:.1f}-{end:.1f} s"


def _clamp(interval: Interval, duration: float | None) -> Interval:
    if duration is None:
        return interval
    return min(max(interval[0], 0.0), duration), min(max(interval[1], 0.0), duration)


def parse_intervals(text: str, duration: float | None = None) -> list[Interval]:
    """All intervals in a model's answer, by rules 1-4 of the module docstring, each as
    ``(min, max)``; clamped to ``[0, duration]`` only when ``duration`` is given."""
    pairs = _RANGE.findall(text)
    if not pairs:
        numbers = _ANY_NUMBER.findall(text)
        numbers = numbers[len(numbers) % 2 :]  # an odd count drops the first
        pairs = list(zip(numbers[::2], numbers[1::2], strict=True))
    intervals = []
    for a, b in pairs:
        low, high = sorted((float(a), float(b)))
        intervals.append(_clamp((low, high), duration))
    return intervals


def parse_interval(text: str, duration: float | None = None) -> Interval | None:
    """The first interval of :func:`parse_intervals`, or None when the text gives none."""
    intervals = parse_intervals(text, duration)
    return intervals[0] if intervals else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of two intervals (each read as ``(min, max)``); 0 when the union is empty."""
    return grounding_iou([a], b)


def grounding_iou(predicted: Sequence[Sequence[float]], target: Sequence[float]) -> float:
    """The original's IoU of several predicted intervals against one target (rule 4).

    Overlapping predictions are not merged, as in the original, so the value can exceed 1 when
    they repeat the target; a zero or non-finite result of the division scores 0.
    """
    t_start, t_end = min(target), max(target)
    overlap = 0.0
    union = t_end - t_start
    for interval in predicted:
        start, end = min(interval), max(interval)
        overlap += max(0.0, min(end, t_end) - max(start, t_start))
        union += end - start
    union -= overlap
    if union <= 0:
        return 0.0
    value = overlap / union
    return value if math.isfinite(value) else 0.0


def evaluate(
    predictions: Sequence[str],
    targets: Sequence[Sequence[float]],
    durations: Sequence[float | None] | None = None,
) -> dict[str, float | int | None]:
    """Score answers against target intervals: ``n``, ``mIoU`` and ``R@k`` in percent, and
    ``unparsed`` (answers with no interval, scored 0). ``durations`` opts into clamping."""
    if len(predictions) != len(targets) or (
        durations is not None and len(durations) != len(targets)
    ):
        raise ValueError("predictions, targets and durations must have the same length")
    ious, unparsed = [], 0
    for i, (text, target) in enumerate(zip(predictions, targets, strict=True)):
        intervals = parse_intervals(text, durations[i] if durations is not None else None)
        unparsed += not intervals
        ious.append(grounding_iou(intervals, target))
    n = len(ious)
    metrics: dict[str, float | int | None] = {"n": n}
    metrics["mIoU"] = 100 * sum(ious) / n if n else None
    for k in THRESHOLDS:
        metrics[f"R@{k}"] = 100 * sum(v >= k for v in ious) / n if n else None
    metrics["unparsed"] = unparsed
    return metrics


def _read_predictions(path: Path) -> tuple[list[str], list[Interval], list[float | None]]:
    """The three columns of a predictions JSONL; ValueError naming the first bad line."""
    predictions, targets, durations = [], [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, target, duration = row["prediction"], row["target"], row.get("duration")
            if not isinstance(text, str) or not isinstance(target, list) or len(target) != 2:
                raise ValueError("needs a text prediction and a [start, end] target")
            start, end = float(target[0]), float(target[1])
            if not (math.isfinite(start) and math.isfinite(end)):
                raise ValueError("target times must be finite")
            duration = None if duration is None else float(duration)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}:{lineno}: {err}") from err
        predictions.append(text)
        targets.append((start, end))
        durations.append(duration)
    return predictions, targets, durations


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m video_prep.grounding_eval PRED.jsonl``: print the metrics as one JSON line.

    Each line is ``{"prediction": "...", "target": [s, e], "duration": optional}``.
    """
    parser = argparse.ArgumentParser(prog="python -m video_prep.grounding_eval")
    parser.add_argument("predictions", type=Path, help="JSONL of prediction/target/duration")
    parser.add_argument(
        "--clamp-to-duration",
        action="store_true",
        help="clamp predictions to [0, duration] (not done by VideoLLaMA3's evaluation)",
    )
    args = parser.parse_args(argv)
    try:
        predictions, targets, durations = _read_predictions(args.predictions)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = evaluate(predictions, targets, durations if args.clamp_to_duration else None)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
