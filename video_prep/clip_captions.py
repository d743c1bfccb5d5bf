"""Clip captions by a vision-language model: a Ray Data actor over an Arrow batch of clips.

The same engines as image recaptioning (``recaption.engines``: transformers on CPU or GPU, vLLM,
any OpenAI-compatible server), the same quality gates (``recaption.gates``) and the same retry
rule: a caption failing a retryable gate is asked again with the subset's next sampling
settings; what still fails is marked with the gate's reason. Each clip goes to the model as up
to ``captions.max_frames`` of its 1-fps frames, uniformly chosen, each after its
``Time {t:.1f}s:`` label (seconds from the clip's start), then the kind's prompt.

A clip whose short caption fails is dropped (reason ``caption_<gate>``; an engine error is
``error``): grounding questions and streaming answers are made of short captions. A failed
detailed caption only leaves that clip without a detailed caption sample
(``detailed_reason``).

video_prep imports recaption here (a peer edge listed in tests/test_layering.py): the engines
and gates are recaption's, and recaption never imports video_prep.
"""

from __future__ import annotations

import dataclasses
import time

import pyarrow as pa

from manifests.schema import DROPPED, ERROR, KEPT
from recaption.config import SubsetConfig
from recaption.engines.base import Request, Result
from recaption.gates import check_caption, clean_caption
from recaption.stage import GATE_DROPS, INPUT_ERRORS
from video_prep.frames import uniform_indices
from video_prep.raw_config import ClipCaptionsConfig


def caption_columns(kind: str) -> dict[str, pa.DataType]:
    return {
        f"{kind}_caption": pa.string(),
        f"{kind}_reason": pa.string(),
        f"{kind}_attempts": pa.int32(),
        f"{kind}_prompt_tokens": pa.int32(),
        f"{kind}_output_tokens": pa.int32(),
        f"{kind}_gen_s": pa.float64(),
    }


def model_frames(
    frames: list[bytes], timestamps: list[float], start: float, max_frames: int
) -> list[tuple[float, bytes]]:
    """Up to ``max_frames`` of a clip's frames, uniformly (VideoLLaMA3's rule), stamped in
    seconds from the clip's start."""
    return [
        (round(timestamps[i] - start, 6), frames[i])
        for i in uniform_indices(len(frames), max_frames)
    ]


def caption_with_retries(
    ask, todo: list[int], subset: SubsetConfig
) -> tuple[dict[int, str | None], dict[int, Result], dict[int, int]]:
    """The recaption stage's rule, for any requests: ``ask(rows, sampling)`` answers rows;
    returns each row's failing gate (None: passed), its last result and the attempts used."""
    verdict: dict[int, str | None] = {}
    results: dict[int, Result] = {}
    attempts: dict[int, int] = {}
    for attempt, sampling in enumerate([subset.sampling, *subset.retry], start=1):
        if not todo:
            break
        for i, res in ask(todo, sampling).items():
            why = check_caption(res, subset.gates)
            if why in subset.accept:
                why = None
            if why == "engine_error" and (res.error or "").startswith(INPUT_ERRORS):
                why = res.error.split(":", 1)[0]
            verdict[i], results[i], attempts[i] = why, res, attempt
        todo = [i for i in todo if verdict[i] in subset.retry_reasons]
    return verdict, results, attempts


class ClipCaptionStage:
    """Short (and detailed) captions of a batch of clip rows; engines load in ``setup()``."""

    name = "clip_captions"

    def __init__(self, cfg: ClipCaptionsConfig):
        self.cfg = cfg
        short = cfg.short.engine
        # a whole partition per call, as the recaption stage: batches, so greedy ties, must not
        # depend on scheduling; the engine cuts it into batch_size chunks
        self.batch_size = None
        self.concurrency = short.concurrency if short.kind != "openai" else 1
        self.num_gpus = short.num_gpus
        self.num_cpus = 1 if not short.num_gpus else 0
        self.engines: dict[str, object] = {}

    def setup(self) -> None:
        from recaption.engines import make_engine

        made: list[tuple[object, object]] = []
        for kind in self.cfg.kinds():
            ecfg = getattr(self.cfg, kind).engine
            if ecfg.kind == "vllm":  # a clip is several images in one prompt
                limit = {"limit_mm_per_prompt": {"image": self.cfg.max_frames}}
                ecfg = dataclasses.replace(ecfg, extra={**limit, **ecfg.extra})
            same = next((e for c, e in made if c == ecfg), None)  # one model, loaded once
            if same is None:
                same = make_engine(ecfg)
                same.setup()
                made.append((ecfg, same))
            self.engines[kind] = same

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        keys = [
            f"{v}/c{c}"
            for v, c in zip(batch["id"].to_pylist(), batch["clip_index"].to_pylist(), strict=True)
        ]
        status = batch["status"].to_pylist()
        stage, reason = batch["stage"].to_pylist(), batch["reason"].to_pylist()
        frames = batch["frames"].to_pylist()
        stamps = batch["timestamps"].to_pylist()
        starts = batch["clip_start"].to_pylist()
        live = [i for i in range(n) if status[i] == KEPT and frames[i]]
        requests = {
            i: model_frames(frames[i], stamps[i], starts[i], self.cfg.max_frames) for i in live
        }
        cols: dict[str, list] = {}
        for kind in ("short", "detailed"):
            out = {c: [None] * n for c in caption_columns(kind)}
            cols.update(out)  # filled below
            if kind not in self.cfg.kinds():
                continue
            subset: SubsetConfig = getattr(self.cfg, kind)
            engine = self.engines[kind]
            prompt = self.cfg.model_prompt(kind)

            def ask(rows, sampling, kind=kind, engine=engine, prompt=prompt):
                reqs = [Request(f"{keys[i]}/{kind}", b"", prompt, requests[i]) for i in rows]
                return dict(zip(rows, engine.generate(reqs, sampling), strict=True))

            t0 = time.perf_counter()
            verdict, results, attempts = caption_with_retries(ask, live, subset)
            spent = (time.perf_counter() - t0) / max(1, len(verdict))
            for i, why in verdict.items():
                res = results[i]
                if why is None:
                    out[f"{kind}_caption"][i] = clean_caption(res.text)
                out[f"{kind}_reason"][i] = why
                out[f"{kind}_attempts"][i] = attempts[i]
                out[f"{kind}_prompt_tokens"][i] = res.prompt_tokens
                out[f"{kind}_output_tokens"][i] = res.output_tokens
                out[f"{kind}_gen_s"][i] = spent
                if kind == "short" and why is not None:
                    status[i] = DROPPED if why in GATE_DROPS else ERROR
                    stage[i], reason[i] = self.name, f"caption_{why}"
        batch = batch.drop_columns(["status", "stage", "reason"])
        batch = batch.append_column("status", pa.array(status, pa.string()))
        batch = batch.append_column("stage", pa.array(stage, pa.string()))
        batch = batch.append_column("reason", pa.array(reason, pa.string()))
        for kind in ("short", "detailed"):
            for c, typ in caption_columns(kind).items():
                batch = batch.append_column(c, pa.array(cols[c], typ))
        return batch
