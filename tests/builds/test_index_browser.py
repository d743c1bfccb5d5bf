"""The small build for real, then its ``OUT/index.html`` and every report it links opened in
Debian's headless Chromium: no broken image, nothing wider than the window, every link to a file
that exists, and a screenshot of the index that is not blank.

Slow: it needs a build of its own (tests/builds/test_build.py's builds change under their
tests); skipped with the reason where chromium is not installed (``make ffmpeg`` installs it).
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from PIL import Image

from manifests.configs import load_config
from tests.reports.browser import probe, require_chromium, screenshot
from tests.reports.page import read_page
from vl3data.builder.config import BuildConfig
from vl3data.builder.execute import run_build

pytestmark = pytest.mark.slow


def test_build_index_and_its_reports_render_in_chromium(small_build, ray_local, tmp_path):
    require_chromium()  # before the build: no browser, no point building
    run_build(load_config(BuildConfig, str(small_build())), echo=lambda _line: None)
    out = tmp_path / "out"
    index = out / "index.html"
    page = read_page(index.read_text(encoding="utf-8"))
    assert not page.errors
    files = [out / unquote(h) for h in page.links if not h.startswith("#")]
    assert files and all(f.is_file() for f in files), files
    reports = sorted({f for f in files if f.name == "report.html"})
    mixes = [r for r in reports if (r.parent / "composition.json").is_file()]
    assert len(reports) - len(mixes) == 4  # curated, and the three video sets
    assert len(mixes) == 2  # the build's two mixtures (mixtures.page)

    found = probe(index, tmp_path)
    assert found["broken"] == [] and found["wide"] == [] and found["spill"] == []
    assert found["scrollWidth"] <= found["width"] and found["svgs"] == 1
    shot = screenshot(index, tmp_path / "index.png", tmp_path, height=1400)
    with Image.open(shot) as im:
        assert im.size[0] == 1280 and len(im.convert("RGB").getcolors(1 << 20) or []) > 50

    for report in reports:
        seen = probe(report, tmp_path)
        assert seen["images"] > 0 and seen["broken"] == [], (report, seen["broken"])
        assert seen["wide"] == [] and seen["scrollWidth"] <= seen["width"], (report, seen)
        if "videos" in report.parts and seen["frames"]:  # frames fill their cards
            assert min(seen["frames"]) >= 200, seen["frames"]
