"""The download stage against a real loopback HTTP server that misbehaves on purpose.

Every URL must come out as exactly one row with the right status and reason, within a bounded
time, whatever the server does: that is what lets a web-scale URL pool run unattended.
"""

from __future__ import annotations

import dataclasses
import email.utils
import io
import socket
import time

import numpy as np
import pyarrow as pa
import pytest
import skimage.data
import urllib3
from PIL import Image

import curation.download as download_mod
from curation.address_gate import check_url
from curation.config import DownloadConfig
from curation.download import Download, sniff_image_ext
from manifests.marks import mark
from manifests.schema import DROPPED, ERROR, KEPT, new_rows
from tests.http_server import ImageServer

SOURCE = "url_parquet:/pool/urls.parquet"

# Tight on purpose: every bad route must end within a few seconds on 2 slow cores.
CFG = DownloadConfig(
    concurrency=8,
    connect_timeout_s=1.0,
    read_timeout_s=0.5,
    total_timeout_s=2.0,
    retries=1,
    backoff_s=0.05,
    max_bytes=1_000_000,
    max_redirects=2,
    allow_addresses=["127.0.0.1/32"],  # the test server; not public
)


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def served_photos() -> dict[str, bytes]:
    """Real served_photos: the astronaut as a JPEG, the cat as a PNG (both well under max_bytes)."""
    jpg = _encode(skimage.data.astronaut(), "JPEG")
    png = _encode(skimage.data.chelsea(), "PNG")
    assert len(jpg) < CFG.max_bytes and len(png) < CFG.max_bytes
    return {"astronaut.jpg": jpg, "chelsea.png": png}


@pytest.fixture
def server(image_server: ImageServer, served_photos: dict[str, bytes]) -> ImageServer:
    image_server.add_image("astronaut.jpg", served_photos["astronaut.jpg"], "image/jpeg")
    image_server.add_image("chelsea.png", served_photos["chelsea.png"], "image/png")
    image_server.big_bytes = 2 * CFG.max_bytes
    return image_server


def _closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(urls: list[str | None]) -> pa.Table:
    keys = ["" if u is None else u for u in urls]
    ids = [f"urls.parquet#0:{i}" for i in range(len(urls))]
    return new_rows(SOURCE, 0, keys, id_keys=ids, url=urls)


def _url(server: ImageServer, target: str) -> str:
    return server.url(target) if target.startswith("/") else target


# (route or literal URL, status, reason, image served: name of the photo, or None)
CASES: list[tuple[str, str, str | None, str | None]] = [
    ("/img/astronaut.jpg", KEPT, None, "astronaut.jpg"),
    ("/img/chelsea.png", KEPT, None, "chelsea.png"),
    ("/404", ERROR, "http_404", None),
    ("/429", ERROR, "http_429", None),
    ("/500", ERROR, "http_500", None),
    ("/flaky/chelsea.png", KEPT, None, "chelsea.png"),
    ("/slow", ERROR, "timeout", None),
    ("/stall", ERROR, "timeout", None),
    ("/trickle", ERROR, "timeout", None),
    ("/trickle-chunked", ERROR, "timeout", None),
    ("/loop", ERROR, "too_many_redirects", None),
    ("/redirect-ftp", ERROR, "bad_url_scheme", None),
    ("/redirect-file", ERROR, "bad_url_scheme", None),
    ("/redirect-ok/astronaut.jpg", KEPT, None, "astronaut.jpg"),
    ("/html", ERROR, "not_an_image", None),
    ("/big", ERROR, "too_large", None),
    ("/big-nolength", ERROR, "too_large", None),
    ("/big-declared", ERROR, "too_large", None),
    ("/empty", ERROR, "empty_body", None),
    ("CLOSED", ERROR, "connection_error", None),
    ("ftp://example.com/a.jpg", ERROR, "bad_url_scheme", None),
    ("file:///etc/passwd", ERROR, "bad_url_scheme", None),
    ("", ERROR, "empty_url", None),
    ("http://[::1/a.jpg", ERROR, "bad_url", None),
]

# Requests each route must have received: retries for 429/5xx/timeouts, none for other 4xx or
# refused redirects, max_redirects + 1 for the loop, one for a deadline that is already spent.
EXPECTED_HITS = {
    "/404": 1,
    "/429": CFG.retries + 1,
    "/500": CFG.retries + 1,
    "/flaky/chelsea.png": 2,
    "/slow": CFG.retries + 1,
    "/stall": CFG.retries + 1,
    "/trickle": 1,
    "/trickle-chunked": 1,
    "/loop": CFG.max_redirects + 1,
    "/redirect-ftp": 1,
    "/redirect-file": 1,
    "/redirect-ok/astronaut.jpg": 1,
    "/img/astronaut.jpg": 2,  # directly and through /redirect-ok
    "/html": 1,
    "/img/chelsea.png": 1,
    "/big": 1,
    "/big-nolength": 1,
    "/big-declared": 1,
    "/empty": 1,
}


def test_every_url_gets_its_status_and_reason(server: ImageServer, served_photos: dict[str, bytes]):
    port = _closed_port()
    urls = [
        f"http://127.0.0.1:{port}/a.jpg" if t == "CLOSED" else _url(server, t) for t, *_ in CASES
    ]
    batch = _batch(urls)
    server.hang_limit_s = 120.0  # stalling routes would hold a client for two minutes

    start = time.monotonic()
    out = Download(CFG)(batch)
    elapsed = time.monotonic() - start

    # every input comes out exactly once, in order, with the schema untouched
    assert out.schema == batch.schema
    assert out.num_rows == batch.num_rows
    assert out["id"].to_pylist() == batch["id"].to_pylist()
    assert out["row"].to_pylist() == batch["row"].to_pylist()
    assert out["url"].to_pylist() == urls

    got = out.to_pylist()
    for (target, status, reason, photo), row in zip(CASES, got, strict=True):
        assert (row["status"], row["reason"]) == (status, reason), target
        if photo is None:
            assert row["stage"] == "download", target
            assert row["image"] is None and row["bytes"] is None and row["ext"] is None, target
        else:
            assert row["stage"] is None, target
            assert row["image"] == served_photos[photo], target
            assert row["bytes"] == len(served_photos[photo]), target
            assert row["ext"] == photo.rsplit(".", 1)[1], target

    hits = {path: server.hits[path] for path in EXPECTED_HITS}
    assert hits == EXPECTED_HITS
    # bounded by our deadlines, not by the server: its stalling routes would have gone on for
    # hang_limit_s (a bound no slow machine comes near: each URL is cut at total_timeout_s)
    assert elapsed < server.hang_limit_s, f"batch took {elapsed:.1f}s"


def test_trickling_server_is_cut_at_the_total_deadline(server: ImageServer):
    """A byte every 0.2 s never trips the read timeout; only the whole-request deadline can.

    In the chunked variant the bytes go to a chunk-size line that http.client reads inside one
    ``read1``: no check between reads can see the deadline there, only a cut socket.
    """
    server.hang_limit_s = 120.0  # the server would trickle for two minutes
    batch = _batch([server.url("/trickle"), server.url("/trickle-chunked")])
    start = time.monotonic()
    out = Download(CFG)(batch)
    elapsed = time.monotonic() - start
    assert out["reason"].to_pylist() == ["timeout", "timeout"]
    # not before the deadline, and long before the server would have stopped: only the
    # deadline can have ended it (a timing bound no busy machine comes near)
    assert CFG.total_timeout_s - 0.1 <= elapsed < server.hang_limit_s / 4


def test_rows_not_to_fetch_pass_through_untouched(
    server: ImageServer, served_photos: dict[str, bytes]
):
    fetch = server.url("/img/chelsea.png")
    dropped = server.url("/redirect-ok/astronaut.jpg")  # dropped by an earlier stage
    has_image = server.url("/404")  # already holds bytes: nothing to download
    batch = new_rows(
        SOURCE,
        3,
        ["a", "b", "c", "d"],
        url=[fetch, dropped, has_image, None],  # d: a folder-style row, no URL at all
        image=[None, None, served_photos["astronaut.jpg"], served_photos["chelsea.png"]],
    )
    batch = mark(batch, [None, "aspect_ratio", None, None], stage="filters")

    out = Download(CFG)(batch)

    assert server.hits["/img/chelsea.png"] == 1
    assert server.hits["/redirect-ok/astronaut.jpg"] == 0
    assert server.hits["/img/astronaut.jpg"] == 0
    assert server.hits["/404"] == 0
    assert out.schema == batch.schema
    assert out.slice(1).equals(batch.slice(1))
    first = out.slice(0, 1).to_pylist()[0]
    assert (first["status"], first["image"], first["ext"]) == (
        KEPT,
        served_photos["chelsea.png"],
        "png",
    )
    assert out["status"].to_pylist() == [KEPT, DROPPED, KEPT, KEPT]


def test_batch_with_nothing_to_fetch_is_returned_as_is():
    batch = mark(_batch(["http://127.0.0.1:9/a.jpg"]), ["aspect_ratio"], stage="filters")
    assert Download(CFG)(batch) is batch


def test_refused_urls_send_no_request(monkeypatch: pytest.MonkeyPatch):
    sent: list[str] = []

    def record(self: urllib3.PoolManager, method: str, url: str, *args: object, **kwargs: object):
        sent.append(url)
        raise urllib3.exceptions.ProtocolError("no request should have been sent")

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", record)
    urls = ["ftp://x/a.jpg", "file:///etc/passwd", "", "  ", "javascript:alert(1)", "http:///a"]
    out = Download(CFG)(_batch(urls))
    assert sent == []
    assert out["status"].to_pylist() == [ERROR] * len(urls)
    assert out["reason"].to_pylist() == [
        "bad_url_scheme", "bad_url_scheme", "empty_url", "empty_url", "bad_url_scheme", "bad_url",
    ]  # fmt: skip


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_count_for_5xx_but_never_for_404(server: ImageServer, retries: int):
    cfg = DownloadConfig(
        retries=retries, backoff_s=0.01, total_timeout_s=5.0, allow_addresses=["127.0.0.1/32"]
    )
    routes = ["/500", "/404", "/flaky/chelsea.png"]
    out = Download(cfg)(_batch([server.url(r) for r in routes]))
    assert server.hits["/500"] == retries + 1
    assert server.hits["/404"] == 1
    flaky = (KEPT, None) if retries else (ERROR, "http_500")
    assert list(zip(out["status"].to_pylist(), out["reason"].to_pylist(), strict=True)) == [
        (ERROR, "http_500"),
        (ERROR, "http_404"),
        flaky,
    ]


def test_backoff_doubles_each_retry(server: ImageServer, monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []  # time.sleep is only called by the stage (the server uses Events)
    monkeypatch.setattr(download_mod.time, "sleep", slept.append)
    cfg = DownloadConfig(
        retries=3, backoff_s=0.25, total_timeout_s=10.0, allow_addresses=["127.0.0.1/32"]
    )
    out = Download(cfg)(_batch([server.url("/429")]))
    assert out["reason"].to_pylist() == ["http_429"]
    assert slept == [0.25, 0.5, 1.0]
    assert server.hits["/429"] == 4


def test_retry_after_is_honoured_and_a_wait_past_the_deadline_gives_up(
    server: ImageServer, monkeypatch: pytest.MonkeyPatch
):
    slept: list[float] = []
    monkeypatch.setattr(download_mod.time, "sleep", slept.append)
    cfg = DownloadConfig(
        retries=2, backoff_s=0.25, total_timeout_s=10.0, allow_addresses=["127.0.0.1/32"]
    )
    out = Download(cfg)(_batch([server.url("/429-after/3")]))
    assert out["reason"].to_pylist() == ["http_429"]
    assert slept == [3.0, 3.0]  # the server's 3 s, not the 0.25 s backoff
    assert server.hits["/429-after/3"] == 3
    slept.clear()
    out = Download(cfg)(_batch([server.url("/429-after/3600")]))
    assert out["reason"].to_pylist() == ["http_429"]
    assert slept == [] and server.hits["/429-after/3600"] == 1  # an hour: not within 10 s


def test_retry_after_reads_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert download_mod.retry_after_s("120") == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert download_mod.retry_after_s(date, now=now) == pytest.approx(30.0)
    assert download_mod.retry_after_s(email.utils.formatdate(now - 5, usegmt=True), now=now) == 0
    assert download_mod.retry_after_s("soon") is None
    assert download_mod.retry_after_s(None) is None


def test_redirects_count_against_max_redirects(server: ImageServer):
    cfg = DownloadConfig(max_redirects=0, retries=0, allow_addresses=["127.0.0.1/32"])
    routes = ["/redirect-ok/astronaut.jpg", "/img/astronaut.jpg"]
    out = Download(cfg)(_batch([server.url(r) for r in routes]))
    assert out["reason"].to_pylist() == ["too_many_redirects", None]
    assert server.hits["/img/astronaut.jpg"] == 1  # only the direct request


@pytest.mark.parametrize(
    ("data", "ext"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"GIF87a\x01\x00", "gif"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"BM\x36\x00\x00\x00", "bmp"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<!DOCTYPE html><html>", None),
        (b"\x89PNG", None),  # cut inside the signature
        (b"", None),
    ],
)
def test_sniff_image_ext(data: bytes, ext: str | None):
    assert sniff_image_ext(data) == ext


def test_sniff_knows_real_photos(served_photos: dict[str, bytes]):
    assert sniff_image_ext(served_photos["astronaut.jpg"]) == "jpg"
    assert sniff_image_ext(served_photos["chelsea.png"]) == "png"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/a.jpg", None),
        ("HTTP://EXAMPLE.COM/a.jpg", None),
        (None, "empty_url"),
        ("", "empty_url"),
        ("ftp://example.com/a.jpg", "bad_url_scheme"),
        ("data:image/png;base64,AAAA", "bad_url_scheme"),
        ("example.com/a.jpg", "bad_url_scheme"),
        ("http://[::1/a.jpg", "bad_url"),
        ("http://example.com:99999/a.jpg", "bad_url"),
        ("https:///a.jpg", "bad_url"),
    ],
)
def test_check_url(url: str | None, reason: str | None):
    assert check_url(url) == reason


def test_fetching_threads_live_across_batches(server: ImageServer):
    """A partition arrives in chunks of a few dozen rows: the threads (and their sessions)
    are made once per process and config, not once per chunk."""
    import threading

    cfg = dataclasses.replace(CFG, user_agent="threads-test")  # a pool of its own
    stage = Download(cfg, name="fetch-threads-test")
    urls = [server.url("/img/astronaut.jpg")] * 12

    def fetchers() -> set[int]:
        return {t.ident for t in threading.enumerate() if t.name.startswith(stage.name)}

    stage(_batch(urls))
    first = fetchers()
    assert 0 < len(first) <= cfg.concurrency  # still there after the batch
    again = Download(cfg, name=stage.name)  # a new instance, as each partition task unpickles
    assert again(_batch(urls))["status"].to_pylist() == [KEPT] * 12
    assert first <= fetchers() and len(fetchers()) <= cfg.concurrency  # reused, none replaced
