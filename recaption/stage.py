"""The caption stage: a Ray Data actor over an Arrow batch of images, one per subset.

It asks the engine for a caption of every live row, runs the quality gates, retries the
captions that failed a retryable gate with the subset's other sampling settings, and marks the
rest with the gate's reason. Score columns (caption, tokens, finish reason, attempts) land in the
ledger; nothing is dropped silently.
"""

from __future__ import annotations

import time

import pyarrow as pa

from manifests.schema import DROPPED, ERROR, KEPT
from recaption.config import SubsetConfig
from recaption.engines.base import Request, Result
from recaption.gates import REASONS, check_caption, clean_caption
from recaption.prompts import PromptConfig

COLUMNS: dict[str, pa.DataType] = {
    "caption": pa.string(),
    "instruction": pa.string(),
    "prompt_tokens": pa.int32(),
    "output_tokens": pa.int32(),
    "finish_reason": pa.string(),
    "attempts": pa.int32(),
    "gen_s": pa.float64(),
}
#: engine errors that are about the input, not the engine: a rejected prompt (too long for the
#: model), a 4xx answer; recorded as such, not retried
INPUT_ERRORS = ("decode_error", "rejected", "http_4")


#: gate reasons that drop a caption; anything else (engine or input errors) is status error
GATE_DROPS = frozenset(REASONS) - {"engine_error"}


class CaptionStage:
    """``short`` or ``detailed`` captions for a batch; the engine loads in ``setup()``."""

    def __init__(self, kind: str, subset: SubsetConfig, prompts: PromptConfig):
        self.kind, self.subset, self.prompts = kind, subset, prompts
        self.name = f"caption_{kind}"
        # a whole partition per call: Ray Data would otherwise bundle rows of several partitions
        # into one batch as they arrive, and the engine's batches (so its numerics, so greedy
        # ties) would depend on scheduling. The engine cuts the partition into batch_size chunks.
        self.batch_size = None
        self.concurrency = subset.engine.concurrency if subset.engine.kind != "openai" else 1
        self.num_gpus = subset.engine.num_gpus
        self.num_cpus = 1 if not subset.engine.num_gpus else 0
        self.engine = None

    def setup(self) -> None:
        from recaption.engines import make_engine

        self.engine = make_engine(self.subset.engine)
        self.engine.setup()

    def _ask(self, rows: list[int], keys, images, sampling) -> dict[int, Result]:
        prompt = self.prompts.model_prompt(self.kind)
        reqs = [Request(keys[i], images[i], prompt) for i in rows]
        return dict(zip(rows, self.engine.generate(reqs, sampling), strict=True))

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        keys = batch["id"].to_pylist()
        images = batch["image"].to_pylist()
        status = batch["status"].to_pylist()
        stage, reason = batch["stage"].to_pylist(), batch["reason"].to_pylist()
        out = {c: [None] * n for c in COLUMNS}
        todo = [i for i in range(n) if status[i] == KEPT and images[i]]
        settings = [self.subset.sampling, *self.subset.retry]
        verdict: dict[int, str | None] = {}
        t0 = time.perf_counter()
        for attempt, sampling in enumerate(settings, start=1):
            if not todo:
                break
            for i, res in self._ask(todo, keys, images, sampling).items():
                why = check_caption(res, self.subset.gates)
                if why in self.subset.accept:
                    why = None
                if why == "engine_error" and (res.error or "").startswith(INPUT_ERRORS):
                    why = res.error.split(":", 1)[0]  # decode_error, rejected, http_400, ...
                verdict[i] = why
                out["caption"][i] = clean_caption(res.text) if res.text else None
                out["prompt_tokens"][i] = res.prompt_tokens
                out["output_tokens"][i] = res.output_tokens
                out["finish_reason"][i] = res.error or res.finish_reason
                out["attempts"][i] = attempt
            todo = [i for i in todo if verdict[i] in self.subset.retry_reasons]
        spent = (time.perf_counter() - t0) / max(1, len(verdict))
        for i, why in verdict.items():
            out["instruction"][i] = self.prompts.instruction(self.kind, keys[i])
            out["gen_s"][i] = spent
            if why is not None:
                status[i] = DROPPED if why in GATE_DROPS else ERROR
                stage[i], reason[i] = self.name, why
        batch = batch.drop_columns(["status", "stage", "reason"])
        batch = batch.append_column("status", pa.array(status, pa.string()))
        batch = batch.append_column("stage", pa.array(stage, pa.string()))
        batch = batch.append_column("reason", pa.array(reason, pa.string()))
        for c, typ in COLUMNS.items():
            batch = batch.append_column(c, pa.array(out[c], typ))
        return batch
