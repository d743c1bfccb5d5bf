"""A report opened in Debian's headless Chromium, for the tests: what it measured after load
(broken images, anything wider than the window) and a screenshot.

A copy of the page gets a small script that runs on ``load``, measures, and writes its findings
into the DOM as JSON; ``--dump-dom`` prints the DOM after the page (and that script) ran. The
flags keep the browser off the network: the pages are self-contained and must need nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1280, 900)

_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt || i.src.slice(0, 60));
  const w = window.innerWidth;
  const wide = [];
  for (const el of document.querySelectorAll('main *')) {
    if (el.closest('.graph, pre, .plots')) continue;  // these scroll or scale by design
    const r = el.getBoundingClientRect();
    if (r.width && r.right > w + 1) wide.push(el.tagName.toLowerCase() + '.' + el.className);
  }
  const frames = [...document.querySelectorAll('.frames img')].map(i => i.clientWidth);
  // svg boxes: every text inside its own box
  const spill = [];
  for (const g of document.querySelectorAll('svg g')) {
    const rect = g.querySelector('rect');
    if (!rect) continue;
    const box = rect.getBBox();
    for (const t of g.querySelectorAll('text')) {
      const b = t.getBBox();
      if (b.x + b.width > box.x + box.width || b.y + b.height > box.y + box.height)
        spill.push(t.textContent);
    }
  }
  const out = {images: imgs.length, broken, wide: wide.slice(0, 20),
               scrollWidth: document.documentElement.scrollWidth, width: w, frames, spill,
               svgs: document.querySelectorAll('svg').length};
  const pre = document.createElement('pre');
  pre.id = '__probe__';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def require_chromium() -> str:
    """The browser's path, or skip the test saying how to get it."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            "Debian's chromium is not installed (/usr/bin/chromium): `make ffmpeg` installs it "
            "as root, or apt-get install chromium"
        )
    return CHROMIUM


def _flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--no-pings",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--virtual-time-budget=5000",
    ]


def probe(page: Path, tmp: Path) -> dict[str, Any]:
    """Open a copy of ``page`` (beside it, so relative links still resolve) and return what the
    probe measured: ``images``, ``broken`` (images that did not decode), ``wide`` (elements
    past the window's right edge), ``scrollWidth``, ``width``, ``frames`` (the frame strips'
    image widths), ``spill`` (SVG texts outside their box), ``svgs``."""
    browser = require_chromium()
    copy = page.with_name(f".probe-{page.name}")
    doc = page.read_text(encoding="utf-8")
    copy.write_text(doc.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
    try:
        done = subprocess.run(
            [browser, *_flags(tmp / "profile"), "--dump-dom", copy.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        copy.unlink(missing_ok=True)
    m = re.search(r'<pre id="__probe__">(.*?)</pre>', done.stdout, re.S)
    assert m, f"the probe did not run (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, target: Path, tmp: Path, height: int = 2400) -> Path:
    """A PNG of the page's top ``height`` pixels at the window's width."""
    browser = require_chromium()
    flags = [f for f in _flags(tmp / "profile") if not f.startswith("--window-size")]
    done = subprocess.run(
        [
            browser,
            *flags,
            f"--window-size={WINDOW[0]},{height}",
            f"--screenshot={target}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert target.is_file(), f"no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    return target
