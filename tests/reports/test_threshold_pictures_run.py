"""A real Syn7M-style curate run (tiny models of the real classes, the LAION head): the report it
writes at the end, with ``_work/`` still there, pictures the rows its top-fraction thresholds
and its cluster quota dropped, which the ledger keeps no thumbnail of; ``_work/`` is gone after.

Slow: a whole curate run with CLIP, the aesthetic head, BLIP-2 and k-means (about a minute)."""

from __future__ import annotations

import pytest

from curation.curate import curate
from tests.curation.test_syn7m import syn7m_cfg
from tests.reports.page import read_page

pytestmark = pytest.mark.slow


def test_a_real_run_pictures_its_score_and_quota_drops(
    tmp_path, demo_pool, tiny_models, aesthetic_weights, ray_local
):
    pool, _ = demo_pool
    out = tmp_path / "out"
    curate(syn7m_cfg(pool, out, tiny_models, aesthetic_weights), progress=False)
    assert not (out / "_work").exists()  # the pictures came from it while the job ran
    doc = (out / "report.html").read_text(encoding="utf-8")
    page = read_page(doc)
    assert not page.errors
    for column in ("aesthetic", "clip_sim"):
        assert f'data-column="{column}"' in doc
    below = [im for im in page.imgs if im.inside(id="thresholds") and im.inside(data_group="below")]
    assert len(below) >= 2 and all(im.data_uri for im in below)
    assert all(im.decoded().format == "JPEG" for im in below)
    assert all("aesthetic" in im.caption or "clip_sim" in im.caption for im in below)
    quota = [im for im in page.imgs if "cluster-dropped" in im.attrs.get("class", "")]
    assert quota and all(im.data_uri for im in quota)
    # the dropped-by-reason sheet has pictures for every score and quota reason
    dropped = doc.split('<section id="dropped">')[1]
    unpictured = (
        dropped.split("Reasons without pictures")[-1] if "without pictures" in dropped else ""
    )
    for reason in ("aesthetic&lt;", "clip_sim&lt;", "cluster_quota"):
        assert reason in dropped and reason not in unpictured, reason
