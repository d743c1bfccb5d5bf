"""Connect only to public addresses: the guard against server-side request forgery.

A URL pool is written by strangers. A row saying ``http://169.254.169.254/latest/meta-data/``
(a cloud's credential service), ``http://10.0.0.7:8265/`` (the cluster's own dashboard) or a
public page that redirects to one of them would otherwise make every worker of the job a proxy
into the network it runs in. So the address is checked where the socket is opened, not where
the URL is parsed: the host is resolved once, every resolved address is checked, and the
connection goes to an address that passed, so neither a second DNS answer (rebinding), an
integer or short IPv4 form (``2130706433``, ``127.1``), an IPv4-mapped IPv6 address nor a
redirect hop can slip past. Refused: loopback, private, link-local, multicast, reserved,
unspecified and every other non-global range, unless a network is in the allow-list (tests
and benchmarks serve from 127.0.0.1; off by default).

The gate is a urllib3 ``PoolManager`` (the URL downloader's: requests would add about half a
millisecond of CPU per image) or a ``requests`` session (the weight fetch), whose connection
pools open their sockets through :meth:`AddressGate.connect`; neither reads proxy environment
variables, since through a proxy the address that matters is resolved by the proxy, out of our
sight.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: The ledger reason of a URL whose host is (or resolves to) a non-public address.
REFUSED = "private_address"
ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The host resolves only to addresses the gate refuses. Not an ``OSError``, so urllib3
    and requests let it through unwrapped and nothing retries it."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        super().__init__(f"{host} resolves only to non-public addresses: {', '.join(addresses)}")
        self.host = host
        self.addresses = addresses


def check_url(url: str | None) -> str | None:
    """The ledger reason a URL must not be fetched at all (``empty_url``, ``bad_url``,
    ``bad_url_scheme``), or None when it is a plausible http(s) URL.

    Checked before any request, and again for every redirect target, so that neither the pool
    nor a server can make us read ``file:///etc/passwd`` or talk ftp.
    """
    if url is None or not url.strip():
        return "empty_url"
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        return "bad_url"
    if scheme not in ALLOWED_SCHEMES:
        return "bad_url_scheme"
    if not host:
        return "bad_url"
    return None


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1/32", "::1"]`` as networks; ValueError names the first bad item."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP network ({exc})") from None
    return tuple(nets)


def _plain(ip: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) judged as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class AddressGate:
    """Which addresses a connection may go to: global unicast ones, plus ``allow``."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, items: Iterable[str] = ()) -> AddressGate:
        return cls(parse_networks(items))

    def permits(self, address: str) -> bool:
        ip = _plain(ipaddress.ip_address(address.split("%", 1)[0]))  # drop an IPv6 zone
        if any(ip.version == net.version and ip in net for net in self.allow):
            return True
        return ip.is_global and not ip.is_multicast

    def connect(self, host: str, port: int, **kwargs) -> socket.socket:
        """Resolve ``host``, then connect to the first permitted address that answers.

        Raises :class:`AddressRefused` when every address is refused, before any packet is
        sent; ``socket.gaierror``/``OSError`` as ``socket.create_connection`` would.
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        permitted = [info for info in infos if self.permits(info[4][0])]
        if not permitted:
            raise AddressRefused(host, sorted({info[4][0] for info in infos}))
        last: OSError | None = None
        for _family, _type, _proto, _name, sockaddr in permitted:
            try:
                return urllib3.util.connection.create_connection((sockaddr[0], port), **kwargs)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    def session(self) -> requests.Session:
        """A ``requests`` session whose every connection goes through :meth:`connect`."""
        session = requests.Session()
        session.trust_env = False  # no proxies from the environment: see the module docstring
        adapter = _GatedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def pool_manager(self, **kwargs) -> urllib3.PoolManager:
        """A urllib3 ``PoolManager`` (thread-safe: one serves every fetching thread of a
        process) whose every connection goes through :meth:`connect`; ``kwargs`` go to it."""
        manager = urllib3.PoolManager(**kwargs)
        manager.pool_classes_by_scheme = _gated_pool_classes(self)
        return manager


def _gated_new_conn(conn: HTTPConnection, gate: AddressGate) -> socket.socket:
    """urllib3's ``_new_conn`` with the gate's resolve-check-connect in place of its own, and
    its error mapping kept (so timeouts and refusals read as they always did)."""
    try:
        sock = gate.connect(
            conn._dns_host,
            conn.port,
            timeout=conn.timeout,
            source_address=conn.source_address,
            socket_options=conn.socket_options,
        )
    except socket.gaierror as e:
        raise urllib3.exceptions.NameResolutionError(conn.host, conn, e) from e
    except TimeoutError as e:
        raise urllib3.exceptions.ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from e
    except OSError as e:
        raise urllib3.exceptions.NewConnectionError(
            conn, f"Failed to establish a new connection: {e}"
        ) from e
    return sock


def _gated_pool_classes(gate: AddressGate) -> dict[str, type[HTTPConnectionPool]]:
    """Connection-pool classes (by scheme) whose connections open their sockets through
    ``gate``: what both the pool manager and the requests adapter mount."""
    new_conn = partial(_gated_new_conn, gate=gate)

    class _HTTP(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class _HTTPS(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTP

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPS

    return {"http": _HTTPPool, "https": _HTTPSPool}


class _GatedAdapter(HTTPAdapter):
    """Mounts connection pools whose connections open their sockets through the gate."""

    def __init__(self, gate: AddressGate) -> None:
        self._gate = gate
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _gated_pool_classes(self._gate)
