"""The four-stage trainer end to end on the tiny preset: loss falls in every stage, each stage
starts from the previous one, a run stopped mid-stage resumes to the same losses, and two gloo
ranks stay in sync."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.stages import param_group
from model.train import main
from vl3data import cli

# Test-only: the paper's rates (1e-5 for the LLM) barely move a random tiny model in a few
# steps; lr_scale multiplies them so it visibly overfits the handful of samples.
LR_SCALES = ["--set", "stage1.lr_scale=100"] + [
    a for n in (2, 3, 4) for a in ("--set", f"stage{n}.lr_scale=300")
]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def same_group(a: dict, b: dict, group: str) -> bool:
    names = [n for n in a if param_group(n) == group]
    assert names
    return all(torch.equal(a[n], b[n]) for n in names)


def test_all_stages_loss_falls_in_each(tmp_path, train_recipe, train_config_writer):
    out = tmp_path / "run"
    config = train_config_writer(tmp_path / "train.yaml", train_recipe, out, steps=8)
    summary = main([config, "--stage", "all", *LR_SCALES])

    stages = summary["stages"]
    assert list(stages) == [1, 2, 3, 4]
    for n, r in stages.items():
        assert r["done"] and r["steps"] == 8 and len(r["losses"]) == 8
        assert all(math.isfinite(x) for x in r["losses"])
        assert r["last_loss"] < 0.95 * r["first_loss"], (n, r["losses"])
        assert r["skipped"] == {}
        assert r["token_compression"] == (n in (3, 4))
        # images merged 2x2 in stage 4 only, videos 2x2 throughout
        assert (r["image_merge_size"], r["video_merge_size"]) == (2 if n == 4 else 1, 2)
        assert (r["device"], r["autocast"]) == ("cpu", "fp32")  # what ran, in the result
        rows = [json.loads(x) for x in (out / f"stage{n}/metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in rows] == list(range(1, 9))
        assert rows[0]["samples"] == 9  # every sample of the recipe, every step
    # stage 1 starts from the preset built here, each later stage from the one before
    assert stages[1]["start"] == str(out / "init")
    for n in (2, 3, 4):
        assert stages[n]["start"] == str(out / f"stage{n - 1}" / "final")
    init, s1, s2 = (
        weights(out / "init"),
        weights(out / "stage1/final"),
        weights(out / "stage2/final"),
    )
    assert same_group(init, s1, "llm")  # the LLM is frozen in stage 1 ...
    assert not same_group(init, s1, "vision") and not same_group(init, s1, "projector")
    assert not same_group(s1, s2, "llm")  # ... and trains from stage 2 on
    # the tokenizer was trained here, on the recipe's text, and travels with every checkpoint
    tok = json.loads((out / "stage4/final/tokenizer_config.json").read_text())
    assert tok["image_token"] == "<|image_pad|>" and tok["video_token"] == "<|video_pad|>"
    for n, merge in ((3, 1), (4, 2)):  # each stage's processor saved with its image merge
        pre = json.loads((out / f"stage{n}/final/processor_config.json").read_text())
        assert pre["image_processor"]["merge_size"] == merge, pre
    assert not (out / "stage4/checkpoints").exists()  # resumable ones go once a stage is done
    report = (out / "report.html").read_text()
    stages_table = report.split('<section id="stages">')[1].split("</section>")[0]
    assert "data:image/png;base64," in report and stages_table.count("<tr>") == 5  # head + 4
    assert '<section id="heldout">' in report and '<section id="parameters">' in report
    assert "<th>image merge</th>" in report and "<td>2x2</td>" in report
    assert (out / "loss.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["stages"]["4"]["steps"] == 8


def test_resume_mid_stage_gives_the_uninterrupted_losses(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer, capsys
):
    kw = {"steps": 6, "warmup_ratio": 0.0, "lr_scale": 300}
    whole = train_config_writer(
        tmp_path / "a.yaml", train_recipe, tmp_path / "a", init=tiny_vl3_checkpoint, **kw
    )
    split = train_config_writer(
        tmp_path / "b.yaml", train_recipe, tmp_path / "b", init=tiny_vl3_checkpoint, **kw
    )
    # stage 2 alone starts from model.init; the batch is half the recipe, so positions matter
    args = ["--stage", "2", "--set", "train.batch_size=4"]
    expected = main([whole, *args])["stages"][2]["losses"]

    assert cli.main(["train", split, *args, "--set", "train.stop_after=3"]) == 0
    assert "stopped (--resume goes on)" in capsys.readouterr().out
    ckpt = tmp_path / "b/stage2/checkpoints"
    assert (ckpt / "latest").read_text() == "step-000003"
    state = json.loads((ckpt / "step-000003/state.json").read_text())
    assert state["step"] == 3 and state["mixture"] == [{"epoch": 1, "position": 3}]
    trainer = torch.load(ckpt / "step-000003/trainer_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(trainer)
    # stop_after counts the steps of this run: resumed at 3, it stops again at 5
    assert cli.main(["train", split, *args, "--resume", "--set", "train.stop_after=2"]) == 0
    assert (ckpt / "latest").read_text() == "step-000005"

    resumed = main([split, *args, "--resume"])["stages"][2]
    assert resumed["done"] and resumed["start"] == str(tiny_vl3_checkpoint)
    assert resumed["losses"][:3] == expected[:3]
    assert resumed["losses"][3:] == expected[3:], (resumed["losses"], expected)
    assert (
        weights(tmp_path / "b/stage2/final").keys() == weights(tmp_path / "a/stage2/final").keys()
    )
    # a finished stage is not trained again
    again = main([split, *args, "--resume"])["stages"][2]
    assert again["losses"] == resumed["losses"]


def test_two_gloo_ranks_stay_in_sync(torchrun_two_ranks):
    out = torchrun_two_ranks  # stages 1-2 under torchrun, 3 steps, 3 samples per rank a step
    summary = json.loads((out / "summary.json").read_text())
    for n in ("1", "2"):
        r = summary["stages"][n]
        assert r["world_size"] == 2 and r["done"] and r["steps"] == 3
        assert r["in_sync"] and len(set(r["param_checksums"])) == 1, r["param_checksums"]
        assert all(math.isfinite(x) for x in r["losses"])
        rows = [json.loads(x) for x in (out / f"stage{n}/metrics.jsonl").read_text().splitlines()]
        assert all(row["samples"] == 6 for row in rows)  # 3 per rank
        assert all(row["micro_batches"] > 1 for row in rows)
    assert summary["stages"]["2"]["start"] == str(out / "stage1" / "final")


def test_held_out_samples_are_evaluated_not_trained(tmp_path, train_recipe, train_config_writer):
    import mixtures
    from model.heldout import heldout_samples, is_heldout
    from model.stream import Stream

    out = tmp_path / "run"
    config = train_config_writer(tmp_path / "train.yaml", train_recipe, out, steps=2)
    summary = main(
        [config, "--stage", "1", "--set", "data.holdout_fraction=0.4", "--set", "data.eval_limit=4"]
    )
    ev = summary["stages"][1]["eval"]
    held = heldout_samples(str(train_recipe), 0.4, 4)
    assert held and ev["samples"] == len(held)
    assert math.isfinite(ev["loss"]) and ev["loss_by_task"]
    assert all(math.isfinite(v) for v in ev["loss_by_task"].values())
    stream = Stream(mixtures.open_stage(str(train_recipe)), 0.4)
    trained = {s["__key__"] for s in stream.take(40)}
    assert trained and not any(is_heldout(k, 0.4) for k in trained)
    assert {s["__key__"] for s in held}.isdisjoint(trained)


def test_a_mixture_held_out_whole_fails_instead_of_spinning(train_recipe):
    import pytest

    import mixtures
    from model.stream import Stream

    stream = Stream(mixtures.open_stage(str(train_recipe)), 0.999999)
    with pytest.raises(RuntimeError, match="no samples"):
        stream.take(1)
