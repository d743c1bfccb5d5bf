"""Hostile URL parquet pools through the real ``vl3data curate`` (``input.kind=url_parquet``)
against the real loopback test server (``tests/http_server.py``), with only 127.0.0.1 allowed:
one run over every kind of bad URL (each row's text names its case), then one test per kind,
plus the run-wide promises. The pool names cloud-metadata, private and loopback addresses in
every spelling; the audit hook proves no process of the job ever dialled one."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.hostile.harness import (
    assert_clean_exit,
    assert_nothing_else_touched,
    assert_only_loopback,
    free_port,
    run_curate,
)
from tests.hostile.media import image_cases, small
from tests.http_server import ImageServer
from vl3data.sample_media import bomb_png_header, jpeg_bytes, png_bytes

# real CLI runs over a whole corpus: `make test-slow` (and CI) runs them; `make test` stays
# under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

KEPT = ("kept", None)
PRIVATE = ("error", "private_address")
SCHEME = ("error", "bad_url_scheme")
BAD = ("error", "bad_url")
TIMEOUT = ("error", "timeout")
NAN = float("nan")

# case -> (URL: a route on the server, "{port}"/"{closed}" filled in, or a literal; declared
# width, height; expected (status, reason))
CASES: dict[str, tuple[str | None, float | None, float | None, tuple]] = {
    "ok_jpeg": ("/img/a.jpg", 128, 96, KEPT),
    "ok_png": ("/img/b.png", 128, 96, KEPT),
    "same_url_twice_1": ("/img/a.jpg", 128, 96, KEPT),
    "same_url_twice_2": ("/img/a.jpg", 128, 96, KEPT),
    "userinfo_in_url": ("http://user:pw@127.0.0.1:{port}/img/a.jpg", 128, 96, KEPT),
    "query_and_fragment": ("/img/a.jpg?x=1&y=%00#frag", 128, 96, KEPT),
    "non_ascii_path": ("/img/caf\u00e9.jpg", 128, 96, KEPT),
    "flaky_then_ok": ("/flaky/c.jpg", 128, 96, KEPT),
    "redirect_ok": ("/redirect-ok/a.jpg", 128, 96, KEPT),
    "declared_sizes_garbage": ("/img/d.jpg", NAN, -5, KEPT),
    "declared_sizes_huge": ("/img/e.jpg", 1e30, 1e30, KEPT),
    "declared_extreme_aspect": ("/img/never.jpg", 4000, 100, ("dropped", "aspect_ratio")),
    "declared_too_small": ("/img/never2.jpg", 10, 10, ("dropped", "min_side")),
    "real_extreme_aspect": ("/img/strip.jpg", 640, 480, ("dropped", "aspect_ratio")),
    "http_404": ("/404", 128, 96, ("error", "http_404")),
    "http_429": ("/429", 128, 96, ("error", "http_429")),
    "http_429_retry_after_huge": ("/429-after/999999", 128, 96, ("error", "http_429")),
    "http_500": ("/500", 128, 96, ("error", "http_500")),
    "unknown_route": ("/nothing-here", 128, 96, ("error", "http_404")),
    "redirect_loop": ("/loop", 128, 96, ("error", "too_many_redirects")),
    "redirect_to_ftp": ("/redirect-ftp", 128, 96, SCHEME),
    "redirect_to_file": ("/redirect-file", 128, 96, SCHEME),
    "redirect_to_data": ("/redirect-to?data:image/png;base64,AAAA", 128, 96, SCHEME),
    "redirect_to_metadata": (
        "/redirect-to?http://169.254.169.254/latest/meta-data/",
        0,
        0,
        PRIVATE,
    ),
    "redirect_to_ten_net": ("/redirect-to?http://10.0.0.7:8265/", 128, 96, PRIVATE),
    "redirect_to_mapped_v6": ("/redirect-to?http://[::ffff:169.254.169.254]/", 128, 96, PRIVATE),
    "redirect_to_other_loopback": (
        "/redirect-to?http://127.0.0.2:{port}/img/a.jpg",
        128,
        96,
        PRIVATE,
    ),
    "metadata_direct": ("http://169.254.169.254/latest/meta-data/iam/", 128, 96, PRIVATE),
    "ten_net": ("http://10.1.2.3/x.jpg", 128, 96, PRIVATE),
    "one_nine_two": ("http://192.168.0.1/x.jpg", 128, 96, PRIVATE),
    "one_seven_two": ("http://172.16.0.1/x.jpg", 128, 96, PRIVATE),
    "cgnat": ("http://100.64.0.1/x.jpg", 128, 96, PRIVATE),
    "other_loopback": ("http://127.0.0.2:{port}/img/a.jpg", 128, 96, PRIVATE),
    "ipv6_loopback": ("http://[::1]:{port}/img/a.jpg", 128, 96, PRIVATE),
    "integer_ip_metadata": ("http://2852039166/latest/meta-data/", 128, 96, PRIVATE),
    "hex_ip_metadata": ("http://0xa9fea9fe/latest/meta-data/", 128, 96, PRIVATE),
    "octal_ip_metadata": ("http://0251.0376.0251.0376/", 128, 96, PRIVATE),
    "short_ip_ten_net": ("http://10.1/x.jpg", 128, 96, PRIVATE),
    "mapped_v6_ten_net": ("http://[::ffff:10.0.0.1]/x.jpg", 128, 96, PRIVATE),
    "unique_local_v6": ("http://[fd00::1]/x.jpg", 128, 96, PRIVATE),
    "link_local_v6": ("http://[fe80::1]/x.jpg", 128, 96, PRIVATE),
    "unspecified": ("http://0.0.0.0:{port}/img/a.jpg", 128, 96, PRIVATE),
    "multicast": ("http://224.0.0.1/x.jpg", 128, 96, PRIVATE),
    "broadcast": ("http://255.255.255.255/x.jpg", 128, 96, PRIVATE),
    "html_as_jpeg": ("/html", 128, 96, ("error", "not_an_image")),
    "text_as_jpeg": ("/img/text.jpg", 128, 96, ("error", "not_an_image")),
    "empty_body": ("/empty", 128, 96, ("error", "empty_body")),
    "too_large": ("/big", 128, 96, ("error", "too_large")),
    "too_large_no_length": ("/big-nolength", 128, 96, ("error", "too_large")),
    "too_large_declared": ("/big-declared", 128, 96, ("error", "too_large")),
    "trickle": ("/trickle", 128, 96, TIMEOUT),
    "trickle_chunked": ("/trickle-chunked", 128, 96, TIMEOUT),
    "stall": ("/stall", 128, 96, TIMEOUT),
    "slow": ("/slow", 128, 96, TIMEOUT),
    "closed_port": ("http://127.0.0.1:{closed}/a.jpg", 128, 96, ("error", "connection_error")),
    "truncated_jpeg": ("/img/trunc.jpg", 128, 96, ("error", "truncated")),
    "corrupt_png": ("/img/corrupt.png", 128, 96, ("error", "decode_error")),
    "pixel_bomb": ("/img/bomb.png", 128, 96, ("dropped", "too_many_pixels")),
    "cmyk_served": ("/img/cmyk.jpg", 128, 96, KEPT),
    "empty_url": ("", 128, 96, ("error", "empty_url")),
    "null_url": (None, 128, 96, ("error", "empty_url")),
    "whitespace_url": ("   ", 128, 96, ("error", "empty_url")),
    "malformed_ipv6": ("http://[::1/a.jpg", 128, 96, BAD),
    "port_out_of_range": ("http://127.0.0.1:99999/a.jpg", 128, 96, BAD),
    "no_host": ("https:///a.jpg", 128, 96, BAD),
    "ftp": ("ftp://127.0.0.1/x.jpg", 128, 96, SCHEME),
    "file": ("file:///etc/passwd", 128, 96, SCHEME),
    "data": ("data:image/png;base64,iVBORw0KGgo=", 128, 96, SCHEME),
    "javascript": ("javascript:alert(1)", 128, 96, SCHEME),
    "gopher": ("gopher://127.0.0.1:{port}/", 128, 96, SCHEME),
    "no_scheme": ("127.0.0.1/x.jpg", 128, 96, SCHEME),
    # requests percent-quotes the CR LF: the server sees an unknown path, no injected header
    "crlf_injection": ("/img/a.jpg\r\nX-Injected: 1", 128, 96, ("error", "http_404")),
    "very_long_url": ("/img/a.jpg?" + "x" * 100_000, 128, 96, ("error", "http_414")),
}


def _url(template: str | None, server: ImageServer, closed: int) -> str | None:
    if template is None:
        return None
    if template.startswith("/"):
        template = "http://127.0.0.1:{port}" + template
    return template.replace("{port}", str(server.port)).replace("{closed}", str(closed))


@pytest.fixture(scope="module")
def url_run(tmp_path_factory, photos):
    base = tmp_path_factory.mktemp("hostile_urls")
    pool = base / "pool"
    pool.mkdir()
    photo = photos["chelsea"]
    imgs = image_cases(photo)
    good = jpeg_bytes(small(photo))
    with ImageServer(slow_s=3.0, hang_limit_s=20.0) as server:
        for name in (
            "a.jpg",
            "c.jpg",
            "d.jpg",
            "e.jpg",
            "never.jpg",
            "never2.jpg",
            "caf%C3%A9.jpg",
        ):
            server.add_image(name, good, "image/jpeg")
        server.add_image("b.png", png_bytes(Image.open(io.BytesIO(good))), "image/png")
        server.add_image("strip.jpg", imgs["wide_strip.jpg"][0], "image/jpeg")
        server.add_image("text.jpg", imgs["text.jpg"][0], "image/jpeg")
        server.add_image("trunc.jpg", imgs["truncated.jpg"][0], "image/jpeg")
        server.add_image("corrupt.png", imgs["corrupt_pixels.png"][0], "image/png")
        server.add_image("bomb.png", bomb_png_header(), "image/png")
        server.add_image("cmyk.jpg", imgs["cmyk.jpg"][0], "image/jpeg")
        closed = free_port()
        urls = [_url(c[0], server, closed) for c in CASES.values()]
        table = pa.table(
            {
                "url": pa.array(urls, pa.string()),
                "text": list(CASES),
                "width": pa.array([c[1] for c in CASES.values()], pa.float64()),
                "height": pa.array([c[2] for c in CASES.values()], pa.float64()),
                "license": ["cc-by"] * len(CASES),
            }
        )
        pq.write_table(table, pool / "pool.parquet", row_group_size=40)
        run = run_curate(
            base,
            pool,
            "url_parquet",
            [
                "input.partition_size=40",
                "filters.min_side=32",
                "download.connect_timeout_s=2",
                "download.read_timeout_s=1",
                "download.total_timeout_s=3",
                "download.retries=1",
                "download.backoff_s=0.05",
                "download.allow_addresses=[127.0.0.1/32]",
                f"download.max_bytes={server.big_bytes // 2}",
            ],
        )
        run.extra.update(urls=urls, port=server.port, hits=dict(server.hits))
    return run


def test_urls_run_exits_cleanly(url_run):
    assert_clean_exit(url_run)


def test_urls_run_writes_nothing_outside_the_output(url_run):
    assert_nothing_else_touched(url_run)


def test_urls_run_connects_to_loopback_only(url_run):
    assert_only_loopback(url_run)
    # ...and the hook saw the downloads themselves (made in the Ray workers, not the driver)
    ports = {port for _, host, port in url_run.connects if host == "127.0.0.1"}
    assert url_run.extra["port"] in ports


def test_urls_every_row_has_exactly_one_ledger_row(url_run):
    assert sorted(r["text"] for r in url_run.rows) == sorted(CASES)
    assert len({r["id"] for r in url_run.rows}) == len(CASES)


def test_urls_refused_before_download_were_never_requested(url_run):
    hits = url_run.extra["hits"]
    assert hits.get("/img/never.jpg", 0) == 0 and hits.get("/img/never2.jpg", 0) == 0


@pytest.mark.parametrize("case", list(CASES))
def test_url_case(url_run, case):
    rows = [r for r in url_run.rows if r["text"] == case]
    assert len(rows) == 1, rows
    assert (rows[0]["status"], rows[0]["reason"]) == CASES[case][3], rows[0]
