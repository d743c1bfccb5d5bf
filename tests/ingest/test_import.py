"""``vl3data import`` end to end on real files: a LLaVA-style JSONL with one of each kind of bad
record, a hub-style Parquet table and a JSON list of text chats. Each run's ledger accounts for
every record with its reason; samples have the layout of our own sets; every set reads back in
webdataset, Ray Data and Hugging Face ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.config import ImportConfig
from ingest.job import run_import
from manifests.configs import load_config
from manifests.dataset import read_dataset_json, shard_paths
from manifests.ledger import read_ledger
from manifests.readers import hf_dataset, ray_dataset
from manifests.shards import iter_samples
from tests.ingest.inputs import LLAVA_EXPECTED, llava_inputs, parquet_inputs, text_inputs


def _samples(out: Path) -> list[dict]:
    return list(iter_samples(shard_paths(out)))


def _check_readers(out: Path, ours: list[dict], tmp_path: Path) -> None:
    """webdataset, Ray Data and HF datasets give our own reader's keys, records and bytes."""
    import webdataset as wds

    by_key = {s["__key__"]: s for s in ours}
    wd = list(wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False))
    assert [s["__key__"] for s in wd] == [s["__key__"] for s in ours]
    for row in ray_dataset(out).take_all():
        assert json.loads(row["json"]) == json.loads(by_key[row["__key__"]]["json"])
        for name, data in by_key[row["__key__"]].items():
            if not name.startswith("__"):
                assert row[name] == data
    hf = hf_dataset(out, decode=False, cache_dir=str(tmp_path / "hf"))
    assert len(hf) == len(ours)
    for row in hf:
        assert row["json"] == json.loads(by_key[row["__key__"]]["json"])


def test_llava_import_accounts_for_every_record(ray_local, photos, tmp_path, capsys):
    from vl3data.cli import main

    ann, media = llava_inputs(tmp_path, photos)
    out = tmp_path / "out"
    argv = ["import", "configs/import_llava.yaml", "--no-progress"]
    argv += [f"--set=input.annotations={ann}", f"--set=input.media={media}", f"--set=output={out}"]
    assert main([*argv, "--set=input.partition_size=7"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'image'}: 18 records -> 3 kept" in printed

    for modality in ("image", "text"):
        led = read_ledger(out / modality).to_pylist()
        assert len(led) == len(LLAVA_EXPECTED)  # every record once, the blank line none
        for row in led:
            line = int(row["source_key"].rsplit(":", 1)[1])
            kind, status, reason = LLAVA_EXPECTED[line]
            if status == "kept" and kind != modality:
                status, reason = "dropped", f"in_{kind}_set"
            assert (row["status"], row["reason"]) == (status, reason), row["source_key"]
        assert read_dataset_json(out / modality)["modality"] == modality
        assert (out / modality / "report.html").is_file()
    report = (out / "image" / "report.html").read_text()
    assert "media_tag_added" in report and "outside_root" in report  # repairs and reasons
    dup = next(r for r in read_ledger(out / "image").to_pylist() if r["reason"] == "duplicate")
    assert dup["duplicate_of"] == "llava.jsonl:1"

    images = {json.loads(s["json"])["source_key"]: s for s in _samples(out / "image")}
    one = images["llava.jsonl:1"]
    rec = json.loads(one["json"])
    assert set(one) == {"__key__", "__url__", "jpg", "json"}  # as curate writes an image
    assert rec["image"] == [f"{one['__key__']}.jpg"] and rec["meta"] == {"id": "a"}
    assert one["jpg"] == (media / "coco" / "0.jpg").read_bytes()  # the original bytes
    two = json.loads(images["llava.jsonl:2"]["json"])
    assert [n.split(".", 1)[1] for n in two["image"]] == ["i00.jpg", "i01.jpg"]
    fixed = json.loads(images["llava.jsonl:3"]["json"])
    assert fixed["conversations"][0]["value"] == "<image>\nDescribe."
    texts = [json.loads(s["json"]) for s in _samples(out / "text")]
    assert all("image" not in r and "video" not in r for r in texts)
    _check_readers(out / "image", list(images.values()), tmp_path)

    # the same command again: complete, nothing redone
    assert main([*argv, "--set=input.partition_size=7"]) == 0


def test_parquet_and_json_list_imports(ray_local, photos, tmp_path):
    table = parquet_inputs(tmp_path, photos)
    out = tmp_path / "hub"
    sets = [f"input.annotations={table}", f"output={out}", "input.partition_size=2"]
    run_import(load_config(ImportConfig, "configs/import_parquet.yaml", sets), progress=False)
    led = {r["source_key"]: r for r in read_ledger(out / "image").to_pylist()}
    assert [led[f"{table.name}#{i}"]["status"] for i in range(5)] == [
        "kept", "kept", "kept", "dropped", "error"]  # fmt: skip
    assert led[f"{table.name}#4"]["reason"] == "not_an_image"
    samples = _samples(out / "image")
    assert all(set(s) == {"__key__", "__url__", "jpg", "json"} for s in samples)
    assert read_dataset_json(out / "text")["samples"] == 1

    chat = text_inputs(tmp_path)
    out = tmp_path / "chat"
    sets = [f"input.annotations={chat}", f"output={out}", "input.partition_size=3"]
    run_import(load_config(ImportConfig, "configs/import_text.yaml", sets), progress=False)
    texts = _samples(out / "text")
    assert len(texts) == 7 and all(set(s) == {"__key__", "__url__", "json"} for s in texts)
    keys = [json.loads(s["json"])["source_key"] for s in texts]
    assert keys == [f"chat.json#{i}" for i in range(7)]
    assert len(ray_dataset(out / "text").take_all()) == 7


def test_a_json_file_that_does_not_parse_is_one_error_row(ray_local, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"conversations": [')
    out = tmp_path / "out"
    cfg = load_config(
        ImportConfig, "configs/import_text.yaml", [f"input.annotations={bad}", f"output={out}"]
    )
    run_import(cfg, progress=False)
    (row,) = read_ledger(out / "text").to_pylist()
    assert (row["status"], row["reason"], row["source_key"]) == (
        "error", "bad_json_file", "broken.json")  # fmt: skip


@pytest.mark.parametrize(
    "field, value",
    [("input.format", "csv"), ("modalities", "[audio]"), ("input.partition_size", "0")],
)
def test_bad_config_fails_before_work_naming_the_field(field, value, tmp_path):
    from manifests.configs import ConfigError

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(ImportConfig, "configs/import_llava.yaml", [f"{field}={value}"])
    cfg = load_config(ImportConfig, "configs/import_llava.yaml", [f"output={tmp_path}/o"])
    with pytest.raises(ConfigError, match=r"input\.annotations"):
        cfg.check_runnable()
