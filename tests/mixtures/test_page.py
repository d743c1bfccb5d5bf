"""A mixture's report.html (``mixtures.page``): its composition, its token estimate and the
first samples of every source read back from its own shards, written with the mixture
(``vl3data report`` redraws it: tests/test_cli_report.py). The mixture is the session's real
one (images from curate, caption and streaming videos from the video job, text):
tests/conftest.py ``job_sets``."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests.dataset import shard_paths
from mixtures.materialise import write_mixture
from mixtures.page import PER_SOURCE, STRIP_FRAMES
from mixtures.recipe import load_recipe
from tests.manifests.test_readers import TEXTS


@pytest.fixture()
def mixture(job_sets, tmp_path) -> Path:
    """The session's mixed recipe written again, with its composition and report."""
    recipe = load_recipe(job_sets["mixed"].parent / "mixed.yaml")
    out = tmp_path / "mixed"
    write_mixture(recipe, out, shuffle_buffer=100)
    return out


def _sample_cards(html: str) -> list[str]:
    """Each sample's card, up to the next one (or the page's end)."""
    return html.split('<div class="sample">')[1:]


def _images(card: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(b64)))
        for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', card)
    ]


def test_the_report_shows_each_sources_first_samples_as_the_trainer_reads_them(mixture):
    html = (mixture / "report.html").read_text()
    assert "Report generated" in html and "by mixtures.page." in html
    ledger = pq.read_table(mixture / "ledger").to_pylist()
    per_source = Counter(r["source"] for r in ledger)
    assert set(per_source) == {"img", "vid", "stream", "chat"}
    cards = _sample_cards(html)
    by_source = Counter(re.match(r"<div><b>([^<]+)</b>", c).group(1) for c in cards)
    assert by_source == {s: min(PER_SOURCE, n) for s, n in per_source.items()}
    first = {}  # each source's first keys in shard order, as the page picks them
    for r in ledger:
        first.setdefault(r["source"], [])
        if len(first[r["source"]]) < PER_SOURCE:
            first[r["source"]].append(r["key"])
    for card in cards:
        source = re.match(r"<div><b>([^<]+)</b>", card).group(1)
        key = re.search(r"key (\d+)", card).group(1)
        assert key in first[source]
        pics = _images(card)
        for p in pics:
            p.load()  # a real picture, decoded
            assert max(p.size) <= 160
        if source == "img":
            assert len(pics) == 1 and "image" in card
        elif source in ("vid", "stream"):
            assert 1 <= len(pics) <= STRIP_FRAMES and re.search(r"\d+\.\d s", card)
            assert "video" in card
        else:
            assert not pics and "text" in card
    # the conversations are the shards' own: a text sample's question, a video's answer
    assert any(t in html for t in TEXTS)
    assert "human:" in html or "user:" in html


def test_the_report_has_the_composition_and_token_estimate(mixture):
    html = (mixture / "report.html").read_text()
    comp = json.loads((mixture / "composition.json").read_text())
    assert 'id="composition"' in html and 'id="tokens"' in html
    for row in comp["composition"]:
        if row["level"] == "source":
            cells = re.search(rf"&nbsp;&nbsp;{row['source']}</td>(.*?)</tr>", html).group(1)
            assert f">{row['epoch_samples']:,}<" in cells
    stage = comp["tokens"]["vision_tokens"]
    assert stage is not None and f"{stage:,}" in html


def test_a_damaged_shard_is_a_note_not_a_lost_report(mixture):
    from mixtures.page import write_mixture_report

    (shard,) = shard_paths(mixture)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 6 // 10 + 100])  # cut, not on a member's edge
    write_mixture_report(mixture)
    html = (mixture / "report.html").read_text()
    assert "could not be read" in html and "are in no shard" in html
    assert _sample_cards(html)  # what came before the cut is still shown


def test_only_the_shards_holding_the_shown_samples_are_read(job_sets, tmp_path):
    from mixtures.materialise import materialise
    from mixtures.page import picked_keys, write_mixture_report

    out = tmp_path / "small_shards"
    materialise(load_recipe(job_sets["mixed"].parent / "mixed.yaml"), out, max_count=2)
    shards = shard_paths(out)
    picked = picked_keys(out)
    used = {p.shard for p in picked.values()}
    unused = [s for s in shards if s.relative_to(out).as_posix() not in used]
    assert len(shards) > 2 and unused  # several two-sample shards, some with nothing shown
    for s in unused:
        s.write_bytes(b"not a tar")  # would be a note, were it opened
    write_mixture_report(out)
    html = (out / "report.html").read_text()
    assert "could not be read" not in html and "in no shard" not in html
    assert len(_sample_cards(html)) == len(picked)
