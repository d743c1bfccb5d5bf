"""Held-out evaluation of a compact VideoLLaMA3: loss per task and temporal-grounding mIoU.

* **Held-out split**: :mod:`model.heldout` (:func:`~model.heldout.is_heldout`,
  :func:`~model.heldout.heldout_samples`), a leaf module, because the tokenizer and the trainer's
  stream need the same split without importing the evaluation.
* **Loss** (:func:`evaluate_loss`): samples through the trainer's :class:`~model.collate.Collator`
  (same rendering, labels, visual-token budget and DiffFP), batched as the trainer batches them;
  each sample's cross-entropy is summed over its answer tokens, and every group's loss is the
  token mean over its samples (the model's own loss on a batch of that group). Groups: ``task``
  (the record's ``task``, else its shard set's ``dataset.json`` task, else ``grounding`` for a
  record whose every answer is an interval, else its kind), ``kind`` (image | video | stream |
  text) and ``source``.
* **Grounding** (:func:`evaluate_grounding`): for every question of every grounding record, the
  conversation up to that question (earlier answers as recorded) is rendered with the generation
  prompt, with the video frames and timestamps, greedily decoded, and the answers are scored
  against the recorded intervals by :func:`video_prep.grounding_eval.evaluate`, VideoLLaMA3's
  Charades-STA rules (mIoU and R@0.3/0.5/0.7 in percent, ``unparsed`` answers scored 0).

Both take a model, a processor or collator and raw mixture samples, so the trainer can call them
after a stage; the CLI evaluates a checkpoint on a recipe's held-out samples::

    python -m model.evaluate out/train_compact/stage3/final \\
        --recipe mixtures/recipes/demo_stage3.yaml --limit 20
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from model.build import load_checkpoint
from model.collate import IGNORE_INDEX, IMAGE_KEYS, VIDEO_KEYS, CollateConfig, Collator
from model.diffp import DEFAULT_THRESHOLD, threshold_value
from model.heldout import HOLDOUT_FRACTION, heldout_samples
from model.precision import PRECISIONS, autocast_dtype
from model.presets import get_preset
from model.stages import VIDEO_MERGE_SIZE
from video_prep.grounding_eval import evaluate as score_intervals
from video_prep.grounding_eval import parse_interval

log = logging.getLogger(__name__)

GROUPINGS = ("task", "kind", "source")
_INTERVAL_ANSWER = re.compile(r"^\s*\d+(?:\.\d+)?\s*-\s*\d+(?:\.\d+)?\s*s\s*$")  # "12.0-18.5 s"


# --- records -------------------------------------------------------------------------------------


def _record(sample: dict) -> dict | None:
    raw = sample.get("json")
    if isinstance(raw, dict):
        return raw
    try:
        rec = json.loads(raw) if raw is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def is_grounding_record(rec: dict) -> bool:
    """A video record (not streaming) whose every answer is an interval, ``"12.0-18.5 s"``."""
    if rec.get("stream") or not rec.get("video"):
        return False
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        return False
    answers = [t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "gpt"]
    return bool(answers) and all(isinstance(a, str) and _INTERVAL_ANSWER.match(a) for a in answers)


def sample_task(sample: dict, kind: str) -> str:
    """The task a sample's loss is reported under: the record's ``task``, else the sample's
    ``__task__`` (its shard set's), else ``grounding`` for a grounding record, else ``kind``."""
    rec = _record(sample) or {}
    task = rec.get("task") or sample.get("__task__")
    if isinstance(task, str) and task:
        return task
    return "grounding" if is_grounding_record(rec) else kind


# --- loss ----------------------------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _autocast(device: torch.device, amp: torch.dtype | None):
    if amp is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp)


def _to(mb: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in mb.items()}


def _mean(total: dict) -> dict:
    tokens = total["answer_tokens"]
    return {
        "loss": total["loss_sum"] / tokens if tokens else None,
        "samples": total["samples"],
        "answer_tokens": tokens,
    }


def evaluate_loss(
    model,
    collator: Collator,
    samples: Sequence[dict],
    amp: torch.dtype | None = None,
) -> dict:
    """Mean loss over the answer tokens of ``samples`` (raw mixture samples), overall and per
    task, kind and source (module docs), in eval mode without gradients (the model's mode is
    restored). Returns ``{"loss", "samples", "answer_tokens", "skipped", "by_task",
    "by_kind", "by_source"}``; each ``by_*`` maps a name to ``{"loss", "samples",
    "answer_tokens"}``. A group with no usable sample is absent; ``loss`` is None when no
    sample could be used."""
    before = Counter(collator.skipped)
    encoded = []
    for sample in samples:
        enc = collator.encode(sample)
        if enc is not None:
            enc["meta"]["task"] = sample_task(sample, enc["meta"]["kind"])
            encoded.append(enc)
    skipped = dict(collator.skipped - before)

    def zero() -> dict:
        return {"loss_sum": 0.0, "answer_tokens": 0, "samples": 0}

    totals = {g: defaultdict(zero) for g in GROUPINGS}
    overall = zero()
    device = _device(model)
    with _eval_mode(model):
        for group in collator.pack(encoded):
            mb = _to(collator.collate(group), device)
            labels = mb.pop("labels")
            with _autocast(device, amp):
                logits = model(**mb, use_cache=False).logits
            for row, enc in enumerate(group):
                target = labels[row, 1:]
                n = int((target != IGNORE_INDEX).sum())
                ce = torch.nn.functional.cross_entropy(
                    logits[row, :-1].float(), target, ignore_index=IGNORE_INDEX, reduction="sum"
                )
                meta = enc["meta"]
                source = meta["source"] or "unknown"
                names = {"task": meta["task"], "kind": meta["kind"], "source": source}
                for t in (overall, *(totals[g][str(names[g])] for g in GROUPINGS)):
                    t["loss_sum"] += float(ce)
                    t["answer_tokens"] += n
                    t["samples"] += 1
    return {
        **_mean(overall),
        "skipped": skipped,
        **{f"by_{g}": {k: _mean(v) for k, v in sorted(totals[g].items())} for g in GROUPINGS},
    }


# --- temporal grounding ----------------------------------------------------------------------


@dataclass
class GroundingQuestion:
    """One question of a grounding record and the record cut after it (earlier answers as
    recorded, an empty answer in place of this one: what the prompt is rendered from)."""

    key: str
    index: int  # the question's position among the record's questions
    question: str
    target: tuple[float, float]
    record: dict


def grounding_questions(sample: dict) -> list[GroundingQuestion]:
    """The questions of a grounding sample, each with its target interval; none for a sample
    that is not a grounding record."""
    rec = _record(sample)
    if rec is None or not is_grounding_record(rec):
        return []
    conv = rec["conversations"]
    out = []
    for i, turn in enumerate(conv):
        if turn.get("from") != "gpt" or i == 0:
            continue
        target = parse_interval(turn["value"])
        if target is None:  # pragma: no cover - is_grounding_record matched the answer
            continue
        cut = {**rec, "conversations": [*conv[:i], {"from": "gpt", "value": ""}]}
        question = str(conv[i - 1].get("value", "")).replace("<video>", "").strip()
        out.append(GroundingQuestion(str(sample.get("__key__")), len(out), question, target, cut))
    return out


def prompt_inputs(collator: Collator, sample: dict, q: GroundingQuestion) -> dict | None:
    """Model inputs for generating the answer to ``q``: the record up to the question through
    the collator (the training rendering, frames, timestamps, visual budget and DiffFP), ending
    in the generation prompt ``<|im_start|>assistant\\n``. None (counted in the collator's
    ``skipped``) when the sample cannot be encoded."""
    enc = collator.encode({**sample, "json": q.record})
    if enc is None:
        return None
    ids = enc["input_ids"]
    # the empty answer renders as "<|im_start|>assistant\n<|im_end|>\n": cut at its <|im_end|>
    cut = int((ids == collator.im_end).nonzero()[-1])
    inputs = {k: enc[k] for k in (*IMAGE_KEYS, *VIDEO_KEYS) if k in enc}
    inputs["input_ids"] = ids[None, :cut]
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return inputs


def score_grounding(predictions: Sequence[str], targets: Sequence[Sequence[float]]) -> dict:
    """VideoLLaMA3's Charades-STA scores of answer texts against target intervals: ``n``,
    ``mIoU``, ``R@0.3``/``R@0.5``/``R@0.7`` (percent) and ``unparsed``."""
    return score_intervals(list(predictions), [tuple(t) for t in targets])


def default_collator(processor) -> Collator:
    """A collator with the paper's budgets for a processor (its own pixel caps bind first)."""
    return Collator(processor, CollateConfig(image_merge_size=processor.image_processor.merge_size))


def evaluate_grounding(
    model,
    processor,
    samples: Sequence[dict],
    max_new_tokens: int = 16,
    collator: Collator | None = None,
    amp: torch.dtype | None = None,
    limit: int | None = None,
) -> dict:
    """Greedy answers to every question (the first ``limit`` when given) of the grounding
    records among ``samples`` (others are ignored), scored by :func:`score_grounding`.

    ``collator`` (default: :func:`default_collator` of ``processor``) renders the prompts; pass
    the trainer's to evaluate with its budgets and DiffFP. Returns the scores plus ``records``
    (grounding records seen), ``skipped`` (questions whose sample could not be encoded, by
    reason) and ``predictions`` (per question: key, question, target, answer text)."""
    collator = collator or default_collator(processor)
    tok = processor.tokenizer
    stop = sorted({collator.im_end, *([tok.eos_token_id] if tok.eos_token_id is not None else [])})
    before = Counter(collator.skipped)
    device = _device(model)
    texts, targets, rows = [], [], []
    records = 0
    with _eval_mode(model):
        for sample in samples:
            questions = grounding_questions(sample)
            records += bool(questions)
            for q in questions:
                if limit is not None and len(texts) >= limit:
                    break
                inputs = prompt_inputs(collator, sample, q)
                if inputs is None:
                    continue
                n = inputs["input_ids"].shape[1]
                with _autocast(device, amp):
                    out = model.generate(
                        **_to(inputs, device),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        eos_token_id=stop,
                        pad_token_id=collator.pad_id,
                    )
                text = tok.decode(out[0, n:], skip_special_tokens=True).strip()
                texts.append(text)
                targets.append(q.target)
                rows.append(
                    {"key": q.key, "question": q.question, "target": list(q.target), "answer": text}
                )
    return {
        **score_grounding(texts, targets),
        "records": records,
        "skipped": dict(collator.skipped - before),
        "predictions": rows,
    }


# --- CLI ---------------------------------------------------------------------------------------


def eval_collate_config(
    preset: str | None,
    token_compression: bool,
    image_merge_size: int = 1,
    diff_threshold: str | float = DEFAULT_THRESHOLD,
    stream_frames: str = "video",
) -> CollateConfig:
    """The trainer's collator settings for ``preset`` (the paper's without one), images merged
    ``image_merge_size`` x ``image_merge_size`` (the checkpoint's processor says how its stage
    merged them: 2 after stage 4), DiffFP's ``diff_threshold`` a setting of
    :func:`model.diffp.threshold_value`, streaming frames as ``stream_frames`` (``video``: one clip,
    VideoLLaMA3's way; ``image``)."""
    kw: dict = {}
    if preset:
        p = get_preset(preset)
        kw = {
            "max_length": p.max_length,
            "max_vision_tokens": p.max_vision_tokens,
            "tokens_per_batch": p.tokens_per_batch,
        }
    return CollateConfig(
        video_merge_size=VIDEO_MERGE_SIZE,
        image_merge_size=image_merge_size,
        diff_threshold=threshold_value(diff_threshold),
        use_token_compression=token_compression,
        stream_frames=stream_frames,
        **kw,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.evaluate",
        description="Held-out loss per task and temporal-grounding mIoU of a checkpoint.",
    )
    p.add_argument("checkpoint", help="a checkpoint directory, e.g. out/train_compact/stage3/final")
    p.add_argument("--recipe", required=True, help="the stage recipe whose held-out samples to use")
    p.add_argument("--limit", type=int, help="at most N held-out samples per source")
    p.add_argument(
        "--fraction",
        type=float,
        default=HOLDOUT_FRACTION,
        help=f"share of samples held out, by key hash (default {HOLDOUT_FRACTION})",
    )
    p.add_argument("--preset", help="tiny | small | 2b: its budgets (and processor if none saved)")
    p.add_argument(
        "--token-compression",
        choices=("auto", "on", "off"),
        default="auto",
        help="DiffFP; auto: as the checkpoint's stage trained (its result.json), else off",
    )
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens per grounding answer")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--no-grounding", action="store_true", help="the held-out loss only")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Evaluate a checkpoint on a recipe's held-out samples; print and return the JSON."""
    args = build_parser().parse_args(argv)
    ckpt = Path(args.checkpoint)
    compression = args.token_compression == "on"
    done = ckpt / "result.json"  # what the checkpoint's stage ran with
    stage = json.loads(done.read_text()) if done.is_file() else {}
    if args.token_compression == "auto":
        compression = bool(stage.get("token_compression"))
    threshold = stage.get("diff_threshold", DEFAULT_THRESHOLD)  # the stage's reading
    stream_frames = stage.get("stream_frames", "video")  # how the stage fed streaming frames
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = autocast_dtype(args.precision, device)
    model, processor = load_checkpoint(ckpt, preset=args.preset)
    samples = heldout_samples(args.recipe, args.fraction, args.limit)
    model.to(device)
    merge = processor.image_processor.merge_size  # the stage's, saved with its checkpoint
    collator = Collator(
        processor,
        eval_collate_config(args.preset, compression, merge, threshold, stream_frames),
    )
    result: dict = {
        "checkpoint": str(ckpt),
        "recipe": str(args.recipe),
        "fraction": args.fraction,
        "heldout_samples": len(samples),
        "token_compression": compression,
        "diff_threshold": threshold,
        "image_merge_size": merge,
        "stream_frames": stream_frames,
        "loss": evaluate_loss(model, collator, samples, amp=amp),
    }
    if not args.no_grounding:
        result["grounding"] = evaluate_grounding(
            model, processor, samples, args.max_new_tokens, collator=collator, amp=amp
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"model.evaluate: error: {exc}", file=sys.stderr)
        sys.exit(1)
