"""Server-side request forgery: a URL row, or a redirect, pointing at a non-public address is
refused with a ledger reason before any connection is made.

Every socket this process opens is seen by an audit hook (``socket.connect``), so "not
connected to" is observed, not inferred from the reason. Only literal addresses and
``localhost`` are used: nothing here asks a DNS server.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pyarrow as pa
import pytest

from curation.address_gate import REFUSED, AddressGate, parse_networks
from curation.config import CurateConfig, DownloadConfig
from curation.download import Download
from manifests.configs import ConfigError, load_config
from manifests.schema import ERROR, KEPT, new_rows
from tests.http_server import ImageServer

_seen: list[tuple] = []
_watching = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and _watching.is_set():
        _seen.append(args[1])


sys.addaudithook(_audit)  # for the life of the process; records only inside watch()


@contextmanager
def connections() -> Iterator[list[tuple]]:
    """The addresses every ``connect`` in this process went to inside the block."""
    _seen.clear()
    _watching.set()
    try:
        yield _seen
    finally:
        _watching.clear()


CFG = dict(concurrency=4, connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=3.0)
CFG.update(retries=2, backoff_s=0.05)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200


def _rows(urls: list[str]) -> pa.Table:
    ids = [f"urls.parquet#0:{i}" for i in range(len(urls))]
    return new_rows("url_parquet:/pool/urls.parquet", 0, urls, id_keys=ids, url=urls)


def _fetch(urls: list[str], **cfg) -> list[tuple[str, str | None]]:
    out = Download(DownloadConfig(**CFG, **cfg))(_rows(urls))
    return list(zip(out["status"].to_pylist(), out["reason"].to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("169.254.169.254", False),  # cloud metadata
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.251", False),  # multicast
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1%eth0", False),  # link-local with a zone
        ("fc00::1", False),  # unique local
        ("::ffff:10.0.0.1", False),  # IPv4-mapped private
        ("ff02::1", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert AddressGate().permits(address) is public


def test_the_allow_list_opens_exactly_its_networks() -> None:
    gate = AddressGate.allowing(["127.0.0.1/32", "10.0.0.0/8"])
    assert gate.permits("127.0.0.1") and gate.permits("10.9.9.9")
    assert not gate.permits("127.0.0.2") and not gate.permits("::1")
    assert not gate.permits("169.254.169.254")
    with pytest.raises(ValueError, match="'nonsense' is not an IP network"):
        parse_networks(["nonsense"])


def test_a_bad_allow_list_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"download\.allow_addresses") as err:
        load_config(
            CurateConfig,
            "configs/curate_local.yaml",
            ["download.allow_addresses=[10.0.0.0/33]"],
        )
    assert "e.g." in str(err.value)


def test_urls_naming_private_hosts_are_refused_without_a_connection(
    image_server: ImageServer,
) -> None:
    image_server.add_image("a.jpg", JPEG, "image/jpeg")
    port = image_server.port
    urls = [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.jpg",
        "http://192.168.0.1/a.jpg",
        "http://[fe80::1]/a.jpg",
        "http://[fd00::1]/a.jpg",
        f"http://localhost:{port}/img/a.jpg",
        f"http://127.0.0.1:{port}/img/a.jpg",
        f"http://2130706433:{port}/img/a.jpg",  # 127.0.0.1 as one integer
        f"http://127.1:{port}/img/a.jpg",  # 127.0.0.1, short form
        f"http://0x7f.0.0.1:{port}/img/a.jpg",  # hex octet
        f"http://[::ffff:127.0.0.1]:{port}/img/a.jpg",
        f"http://0.0.0.0:{port}/img/a.jpg",
    ]
    with connections() as seen:
        got = _fetch(urls)
    assert got == [(ERROR, REFUSED)] * len(urls)
    assert seen == []  # not one socket connected, not even a retry
    assert sum(image_server.hits.values()) == 0


def test_a_redirect_to_a_private_address_is_refused_on_that_hop(
    image_server: ImageServer,
) -> None:
    """The allow-list opens the test server (127.0.0.1) and nothing else: each redirect's
    target is judged on its own, whatever the first hop was."""
    image_server.add_image("a.jpg", JPEG, "image/jpeg")
    port = image_server.port
    targets = [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.1/a.jpg",
        f"http://[::1]:{port}/img/a.jpg",  # the same server over IPv6 loopback: not allowed
        f"http://127.0.0.2:{port}/img/a.jpg",
    ]
    urls = [image_server.url("/redirect-to?" + quote(t, safe="")) for t in targets]
    urls.append(image_server.url("/redirect-to?" + quote(image_server.url("/img/a.jpg"))))
    with connections() as seen:
        got = _fetch(urls, allow_addresses=["127.0.0.1/32"])
    assert got == [(ERROR, REFUSED)] * len(targets) + [(KEPT, None)]
    assert {addr[0] for addr in seen} == {"127.0.0.1"}
    assert image_server.hits["/redirect-to"] == len(urls)  # one request each: no retry
    assert image_server.hits["/img/a.jpg"] == 1


def test_unfetchable_aesthetic_weights_are_a_config_error_before_any_work(tmp_path) -> None:
    """Resolved in the driver by check_runnable: one error naming the field and the offline
    fix, not a model actor dying with a network traceback on every worker."""
    cfg = load_config(
        CurateConfig,
        "configs/syn7m_filters.yaml",
        [
            f"input.path={tmp_path}",
            f"output={tmp_path / 'out'}",
            "aesthetic.weights=http://169.254.169.254/latest/head.pth",
        ],
    )
    with connections() as seen, pytest.raises(ConfigError, match=r"aesthetic\.weights") as err:
        cfg.check_runnable()
    assert "non-public" in str(err.value) and "aesthetic.weights=/path/to/it.pth" in str(err.value)
    assert seen == []
    assert not (tmp_path / "out").exists()
