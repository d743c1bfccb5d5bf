"""The training report as a person reads it: one page in the data reports' style with the
curves of every stage on one time axis, held-out loss per task and grounding per stage, the
trainable parameters per stage, the data each stage drew from, a visible warning when the
training loss falls far below the held-out loss, and no raw JSON dump.

The training output is written by hand in the loop's own formats (``metrics.jsonl``,
``result.json``, the mixture's ``composition.json``), so every number is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.config import TrainConfig
from model.stages import GROUPS
from model.train_report import memorisation, write_report
from tests.reports.page import read_page

TASKS = ("caption", "grounding")


def _result(n: int, recipe: Path, losses: list[float], held: float, miou: float) -> dict:
    return {
        "stage": n,
        "recipe": str(recipe),
        "steps": len(losses),
        "done": True,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "losses": losses,
        "mean_step_time_s": 0.5,
        "lr": {"vision": 1e-5 * n, "projector": 1e-3, "llm": 0.0 if n == 1 else 2e-5},
        "token_compression": n >= 3,
        "diff_threshold": 0.1,
        "image_merge_size": 2 if n == 4 else 1,
        "parameters": {
            "vision": {"total": 1000, "trainable": 1000},
            "projector": {"total": 100, "trainable": 100},
            "llm": {"total": 5000, "trainable": 0 if n == 1 else 5000},
        },
        "skipped": {},
        "fixed": {},
        "in_sync": True,
        "eval": {
            "samples": 7,
            "loss": held,
            "loss_by_task": {"caption": held - 0.1, "grounding": held + 0.1},
            "grounding": {"n": 3, "mIoU": miou, "R@0.3": 50.0, "R@0.5": 33.3, "unparsed": 1},
        },
    }


def build(out: Path) -> TrainConfig:
    """Four stages of six steps; stage 4 memorises (train 0.2, held-out 3.0)."""
    mix = out.parent / "mix"
    ends = {1: (4.0, 3.0, 3.2), 2: (3.0, 2.5, 2.8), 3: (2.5, 2.0, 2.3), 4: (2.0, 0.2, 3.0)}
    for n, (first, last, held) in ends.items():
        recipe = mix / f"stage{n}" / "recipe.yaml"
        recipe.parent.mkdir(parents=True)
        recipe.write_text("stage: x\n")
        comp = [
            {"level": "source", "group": "images", "source": "syn7m", "epoch_samples": 30},
            {"level": "group", "group": "images", "source": None, "epoch_samples": 30},
            {"level": "source", "group": "video", "source": "clips", "epoch_samples": 10},
            {"level": "group", "group": "video", "source": None, "epoch_samples": 10},
        ]
        (recipe.parent / "composition.json").write_text(json.dumps({"composition": comp}))
        losses = list(map(float, [first + (last - first) * i / 5 for i in range(6)]))
        stage = out / f"stage{n}"
        (stage / "final").mkdir(parents=True)
        rows = [
            {
                "stage": n,
                "step": i + 1,
                "loss": loss,
                "tokens": 400,
                "samples": 8,
                "step_time_s": 0.5,
                "lr": {g: 1e-4 * (i + 1) for g in GROUPS},
            }
            for i, loss in enumerate(losses)
        ]
        (stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = _result(n, recipe, losses, held, 10.0 * n)
        (stage / "final" / "result.json").write_text(json.dumps(result))
    return TrainConfig(name="tiny-run", output=str(out))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, str]:
    """The training output and its report, written once for the tests below."""
    root = tmp_path_factory.mktemp("train_report")
    doc = write_report(build(root / "train"), {}).read_text(encoding="utf-8")
    return root, doc


def test_training_report_reads_like_the_data_reports(rendered):
    _, doc = rendered
    page = read_page(doc)
    assert not page.errors
    # the page kit's frame and sections
    for sid in ("stages", "curves", "heldout", "parameters", "data"):
        assert f'<section id="{sid}">' in doc
    assert '<div class="cards" id="counts">' in doc
    curves = [im for im in page.imgs if im.inside(id="curves")]
    assert len(curves) == 1 and curves[0].decoded().format == "PNG"
    w, h = curves[0].decoded().size
    assert w > 800 and h > 500  # three panels on one time axis
    # every stage's span on the time axis: 6 steps of 0.5 s each
    assert "stage 1 0.0–3.0 s, stage 2 3.0–6.0 s, stage 3 6.0–9.0 s, stage 4 9.0–12.0 s" in doc
    assert "800 tokens / s (mean)" in page.text  # 400 tokens per 0.5 s step
    # held-out loss per task and grounding mIoU per stage
    assert "held-out caption" in page.text and "held-out grounding" in page.text
    assert "2.900" in page.text and "3.100" in page.text and "40.0" in page.text  # stage 4
    # trainable parameters per stage: the LLM frozen in stage 1 only
    assert "0 (0.0 %)" in page.text and "5,000 (100.0 %)" in page.text
    assert "1,100 of 6,100" in page.text and "6,100 of 6,100" in page.text
    # the data each stage drew from: 48 samples drawn, 75 % images
    assert "48 samples drawn, 1.20 epochs" in page.text
    assert "75.0 %" in page.text and "36" in page.text
    # no raw JSON dump: the config is a collapsed details block, nothing else is JSON
    assert "<details><summary>Config</summary>" in doc
    body = doc.split("<details>")[0]
    assert "&quot;losses&quot;" not in body and '"losses"' not in body


def test_memorisation_is_a_visible_warning(rendered):
    root, doc = rendered
    page = read_page(doc)
    # stage 4 alone: train 0.2 (the mean of its last step), held-out 3.0
    assert '<ul class="notes" id="notes">' in doc
    assert "Stage 4: training loss 0.200 is far below the held-out loss 3.000 (15.0x)" in page.text
    assert '<p class="bad warn">' in doc and '<span class="bad">15.0x</span>' in doc
    assert "Stage 3:" not in page.text
    results = {n: json.loads((root / f"train/stage{n}/final/result.json").read_text())
               for n in (1, 2, 3)}  # fmt: skip
    assert memorisation(results) == []
