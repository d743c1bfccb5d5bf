"""The stream: exact epochs in the recipe's proportions, deterministic, resumable, sharded
across ranks and DataLoader workers, reading only what each reader needs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from manifests.dataset import shard_paths
from manifests.shards import iter_samples
from mixtures import MixtureDataset, build_plan, iter_reader, load_recipe, open_stage
from mixtures.sampler import reader_slice

from .conftest import SETS, source, write_recipe

DEMO_TEXT = Path(__file__).resolve().parents[2] / "mixtures" / "recipes" / "demo_text.jsonl"


def ids(samples):
    return [(s["__source__"], s["__key__"]) for s in samples]


def test_one_epoch_is_exact_and_in_proportion_throughout(mix_recipe):
    ds = open_stage(mix_recipe)
    samples = list(ds)
    sizes = {name: n for name, (n, _, _) in SETS.items()}
    assert len(samples) == ds.epoch_samples == sum(sizes.values())
    assert Counter(s["__source__"] for s in samples) == sizes
    assert len(set(ids(samples))) == len(samples)  # nothing twice
    assert {s["__group__"] for s in samples if s["__source__"] == "large"} == {"big"}
    total = sum(sizes.values())
    for frac in (0.1, 0.2, 0.5):
        head = Counter(s["__source__"] for s in samples[: int(frac * total)])
        for name, n in sizes.items():
            assert abs(head[name] / int(frac * total) - n / total) < 0.03, (frac, name, head)


def test_samples_are_what_webdataset_reads(mix_recipe, shard_sets):
    by_key = {}
    for name, path in shard_sets.items():
        for s in iter_samples(shard_paths(path)):
            by_key[(name, s["__key__"])] = {k: v for k, v in s.items() if not k.startswith("__")}
    samples = list(open_stage(mix_recipe))
    for s in samples:
        assert {k: v for k, v in s.items() if not k.startswith("__")} == by_key[
            (s["__source__"], s["__key__"])
        ]
    frames = next(s for s in samples if s["__source__"] == "small")
    assert set(frames) >= {"f0000.jpg", "f0001.jpg", "json"}  # video frames stay one sample


def test_same_seed_same_order_new_epoch_new_order_same_samples(mix_recipe):
    first = ids(open_stage(mix_recipe))
    assert ids(open_stage(mix_recipe)) == first
    ds = open_stage(mix_recipe)
    ds.set_epoch(1)
    second = ids(ds)
    assert second != first and sorted(second) == sorted(first)
    assert ids(open_stage(mix_recipe, epoch=1)) == second
    reseeded = ids(open_stage(mix_recipe, overrides=["seed=8"]))
    assert reseeded != first and sorted(reseeded) == sorted(first)


@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_resume_mid_epoch_continues_exactly(mix_recipe, rank, world):
    whole = ids(MixtureDataset(mix_recipe, epoch=2, rank=rank, world_size=world))
    ds = MixtureDataset(mix_recipe, epoch=2, rank=rank, world_size=world)
    before = ids(itertools.islice(iter(ds), 37))
    state = ds.state_dict()
    assert state == {"epoch": 2, "position": 37}
    fresh = MixtureDataset(mix_recipe, rank=rank, world_size=world)
    fresh.load_state_dict(state)
    after = ids(fresh)
    assert before + after == whole
    assert fresh.state_dict() == {"epoch": 2, "position": len(whole)}
    assert ids(fresh) == whole  # the resume applied once; the next pass is the whole epoch


def test_resume_at_the_end_and_beyond(mix_recipe):
    ds = open_stage(mix_recipe)
    ds.load_state_dict({"epoch": 0, "position": ds.epoch_samples})
    assert list(ds) == []
    ds.load_state_dict({"epoch": 0, "position": ds.epoch_samples + 1})
    with pytest.raises(ValueError, match="outside this reader's epoch"):
        list(ds)


def test_readers_are_disjoint_cover_the_epoch_and_are_balanced(mix_recipe):
    plan = build_plan(load_recipe(mix_recipe))
    whole = Counter(ids(iter_reader(plan, 3, 0, 1)))
    parts = [ids(iter_reader(plan, 3, r, 2, w, 2)) for r in range(2) for w in range(2)]
    seen = Counter(itertools.chain.from_iterable(parts))
    assert seen == whole and max(seen.values()) == 1
    for name, (n, _, _) in SETS.items():
        per_reader = [sum(1 for s, _ in p if s == name) for p in parts]
        assert max(per_reader) - min(per_reader) <= 1 and sum(per_reader) == n


def test_each_reader_reads_only_its_run_of_shards(mix_recipe):
    plan = build_plan(load_recipe(mix_recipe))
    large = next(sp for sp in plan.sources if sp.name == "large")
    n_shards = len(large.shards)
    assert n_shards >= 10
    for r in range(4):
        runs = reader_slice(large, plan.seed, 0, r, 4)
        assert len(runs) <= n_shards // 4 + 2
        assert sum(len(sel) for _, sel in runs) == 1000
    # a source with fewer shards than readers: each reader still opens at most two of them
    small = next(sp for sp in plan.sources if sp.name == "small")
    for r in range(16):
        assert len(reader_slice(small, plan.seed, 0, r, 16)) <= 2


def test_two_ranks_of_two_dataloader_workers(mix_recipe):
    from torch.utils.data import DataLoader

    got = []
    for rank in range(2):
        ds = MixtureDataset(mix_recipe, epoch=1, rank=rank, world_size=2)
        for s in DataLoader(ds, batch_size=None, num_workers=2):
            got.append((rank, s["__worker__"], s["__source__"], s["__key__"]))
    assert {(r, w) for r, w, _, _ in got} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    keys = Counter((s, k) for _, _, s, k in got)
    whole = Counter(ids(open_stage(mix_recipe, epoch=1)))
    assert keys == whole and max(keys.values()) == 1


def test_resume_a_plain_dataloader_from_per_worker_positions(mix_recipe):
    from torch.utils.data import DataLoader

    ds = open_stage(mix_recipe)
    seen, last = [], {}
    for s in itertools.islice(DataLoader(ds, batch_size=None, num_workers=2), 101):
        seen.append((s["__source__"], s["__key__"]))
        last[int(s["__worker__"])] = int(s["__position__"])
    state = {"epoch": 0, "position": [last[0] + 1, last[1] + 1]}
    fresh = open_stage(mix_recipe)
    fresh.load_state_dict(state)
    rest = ids(DataLoader(fresh, batch_size=None, num_workers=2))
    assert Counter(seen + rest) == Counter(ids(open_stage(mix_recipe)))


def test_first_random_and_repeat_select_what_they_should(tmp_path, shard_sets):
    def run(strategies, seed=7, extra=()):
        sources = [
            source("medium", shard_sets["medium"], strategy=strategies[0]),
            source("small", shard_sets["small"], "video", strategy=strategies[1]),
            *extra,
        ]
        path = write_recipe(tmp_path / "r.yaml", [{"name": "g", "sources": sources}], seed=seed)
        out = {}
        for s in open_stage(path):
            out.setdefault(s["__source__"], []).append(json.loads(s["json"]).get("i"))
        return out

    got = run(["first:25", "repeat:2"])
    assert sorted(got["medium"]) == list(range(25))
    assert Counter(got["small"]) == dict.fromkeys(range(40), 2)
    got = run(["first:10%", "random:25%"])
    assert sorted(got["medium"]) == list(range(40))
    subset = sorted(got["small"])
    assert len(set(subset)) == len(subset) == 10 and subset != list(range(10))
    assert sorted(run(["first:10%", "random:25%"])["small"]) == subset  # seeded
    assert sorted(run(["first:10%", "random:25%"], seed=99)["small"]) != subset
    # the draw is seeded by (seed, source name): adding a source does not change it
    text = source("text", DEMO_TEXT, "text", "all")
    assert sorted(run(["first:10%", "random:25%"], extra=[text])["small"]) == subset
    got = run(["random:120", "repeat:1"])
    assert len(set(got["medium"])) == 120 and len(got["small"]) == 40


def test_amounts_that_cannot_be_met_take_what_there_is(tmp_path, shard_sets):
    path = write_recipe(
        tmp_path / "r.yaml",
        [{"name": "g", "sources": [source("small", shard_sets["small"], "video", "first:50")]}],
    )
    with pytest.warns(UserWarning, match="10 samples short"):
        ds = open_stage(path)
    assert ds.epoch_samples == 40 and ds.summary()[0]["short"] == 10


def test_text_only_jsonl_and_shard_sets_mix(tmp_path, shard_sets):
    path = write_recipe(
        tmp_path / "r.yaml",
        [
            {"name": "images", "sources": [source("small", shard_sets["small"], "video")]},
            {"name": "text", "sources": [source("text", DEMO_TEXT, "text", "repeat:2")]},
        ],
    )
    samples = list(open_stage(path))
    text = [s for s in samples if s["__source__"] == "text"]
    assert len(text) == 16 and len(samples) == 56
    assert all(isinstance(json.loads(s["json"])["conversations"], list) for s in text)
    assert Counter(s["__key__"] for s in text) == {f"demo_text-{i:09d}": 2 for i in range(8)}
    ds = open_stage(path)
    before = ids(itertools.islice(iter(ds), 20))
    fresh = open_stage(path)
    fresh.load_state_dict(ds.state_dict())
    assert before + ids(fresh) == ids(samples)


def test_missing_source_and_wrong_modality_fail_on_open(tmp_path, shard_sets):
    path = write_recipe(tmp_path / "r.yaml", [{"name": "g", "sources": [source("x", tmp_path)]}])
    with pytest.raises(FileNotFoundError, match=r"dataset\.json"):
        open_stage(path)
    path = write_recipe(
        tmp_path / "r.yaml", [{"name": "g", "sources": [source("x", shard_sets["small"])]}]
    )
    with pytest.raises(ValueError, match=r"groups\[0\].sources\[0\].modality"):
        open_stage(path)


def test_import_mixtures_does_not_import_torch():
    code = "import sys, mixtures; assert 'torch' not in sys.modules; mixtures.load_recipe"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
