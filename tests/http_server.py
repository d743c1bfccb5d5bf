"""A real HTTP server on 127.0.0.1 that misbehaves on request, for the download tests.

The failure modes of a web-scale URL pool (dead links, 5xx, rate limits, hosts that hang or
trickle, redirect loops, HTML served as ``image/jpeg``, huge bodies) are reproduced on loopback,
so the download stage is tested against real sockets and real ``requests`` behaviour, not mocks.

Routes (``GET`` only; every hit is counted per path in :attr:`ImageServer.hits`):

==========================  ===================================================================
``/img/<name>``             the bytes registered with :meth:`ImageServer.add_image`
``/404``, ``/429``, ``/500``  that status, always
``/429-after/<value>``       429 with ``Retry-After: <value>``
``/gate/<name>``             the image, once :attr:`ImageServer.gate` is set (held till then)
``/flaky/<name>``           500 on its first hit, then image ``<name>`` (proves retries)
``/slow``                   waits ``slow_s`` before answering (longer than a read timeout)
``/stall``                  headers and 4 bytes of a JPEG, then silence
``/trickle``                a JPEG header, then one byte every ``trickle_every_s``, forever
``/trickle-chunked``        the same inside chunked framing: the chunk-size line never ends
``/loop``                   302 to itself (relative Location)
``/redirect-ftp``           302 to ``ftp://...``
``/redirect-file``          302 to ``file:///etc/passwd``
``/redirect-ok/<name>``     302 (absolute Location) to ``/img/<name>``
``/html``                   an HTML page labelled ``image/jpeg``
``/big``                    ``big_bytes`` of body, with Content-Length
``/big-nolength``           the same, without Content-Length (ends when the connection closes)
``/big-declared``           declares a huge Content-Length, then stalls: only a client that
                            checks the header up front answers quickly
``/empty``                  200 with an empty body
==========================  ===================================================================

The hanging handlers give up after ``hang_limit_s`` or as soon as the server stops, and handler
threads are daemons, so leaving the ``with`` block never waits on a stuck client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
HTML_PAGE = b"<!DOCTYPE html><html><head><title>404</title></head><body>gone</body></html>\n"
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a sleep must not block shutdown
    # socketserver's default backlog of 5 drops SYNs when a batch connects at once; the client
    # then retransmits after 1 s, which eats the tight test deadlines
    request_queue_size = 128
    owner: ImageServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-body is the point of several routes: no tracebacks."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection; a missing length ends on close

    def log_message(self, format: str, *args: object) -> None:
        """Keep pytest's output clean."""

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        path = parts.path
        hit = owner._hit(path)
        with contextlib.suppress(_GONE):  # the client gave up (timeout, too_large...)
            if path == "/redirect-to":  # /redirect-to?<any URL>: a hop chosen by the test
                self._redirect(unquote(parts.query))
            else:
                self._route(owner, path, hit)

    def _route(self, owner: ImageServer, path: str, hit: int) -> None:
        if path.startswith("/img/") and path[5:] in owner.images:
            self._send(200, *owner.images[path[5:]])
        elif path in ("/404", "/429", "/500"):
            self._send(int(path[1:]), b"error\n", "text/plain")
        elif path.startswith("/gate/") and path[6:] in owner.images:
            owner.gate.wait(owner.hang_limit_s)  # held until the test opens the gate
            self._send(200, *owner.images[path[6:]])
        elif path.startswith("/429-after/"):  # a rate limit that says when to come back
            self.send_response(429)
            self.send_header("Retry-After", path[len("/429-after/") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/flaky/") and path[7:] in owner.images:
            if hit == 1:
                self._send(500, b"try again\n", "text/plain")
            else:
                self._send(200, *owner.images[path[7:]])
        elif path == "/slow":
            if not owner.stopping.wait(owner.slow_s):
                self._send(200, JPEG_MAGIC + b"\x00" * 100, "image/jpeg")
        elif path == "/stall":
            self._headers(200, "image/jpeg", length=10_000)
            self.wfile.write(JPEG_MAGIC[:4])
            self.wfile.flush()
            owner.stopping.wait(owner.hang_limit_s)
        elif path == "/trickle":
            self._trickle(owner)
        elif path == "/trickle-chunked":
            self._trickle_chunked(owner)
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/redirect-ftp":
            self._redirect("ftp://127.0.0.1/astronaut.jpg")
        elif path == "/redirect-file":
            self._redirect("file:///etc/passwd")
        elif path.startswith("/redirect-ok/"):
            self._redirect(owner.url("/img/" + path[len("/redirect-ok/") :]))
        elif path == "/html":
            self._send(200, HTML_PAGE, "image/jpeg")
        elif path in ("/big", "/big-nolength"):
            self._big(owner, with_length=path == "/big")
        elif path == "/big-declared":
            self._headers(200, "image/jpeg", length=10**12)
            self.wfile.write(JPEG_MAGIC)
            self.wfile.flush()
            owner.stopping.wait(owner.hang_limit_s)
        elif path == "/empty":
            self._send(200, b"", "image/jpeg")
        else:
            self._send(404, b"no such route\n", "text/plain")

    def _headers(self, code: int, content_type: str, length: int | None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self._headers(code, content_type, len(body))
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self, owner: ImageServer) -> None:
        self._headers(200, "image/jpeg", length=None)
        self.wfile.write(JPEG_MAGIC)
        self.wfile.flush()
        give_up = time.monotonic() + owner.hang_limit_s
        while time.monotonic() < give_up and not owner.stopping.wait(owner.trickle_every_s):
            self.wfile.write(b"\x00")
            self.wfile.flush()

    def _trickle_chunked(self, owner: ImageServer) -> None:
        """One honest chunk, then a chunk-size line trickled as leading zeros: http.client reads
        that line with ``readline`` inside a single ``read1``, so only cutting the socket ends it.
        """
        self.protocol_version = "HTTP/1.1"  # chunked framing is HTTP/1.1
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(JPEG_MAGIC), JPEG_MAGIC))
        self.wfile.flush()
        give_up = time.monotonic() + owner.hang_limit_s
        while time.monotonic() < give_up and not owner.stopping.wait(owner.trickle_every_s):
            self.wfile.write(b"0")
            self.wfile.flush()

    def _big(self, owner: ImageServer, with_length: bool) -> None:
        size = owner.big_bytes
        self._headers(200, "image/jpeg", length=size if with_length else None)
        self.wfile.write(JPEG_MAGIC)
        block = b"\x00" * 65536
        left = size - len(JPEG_MAGIC)
        while left > 0 and not owner.stopping.is_set():
            self.wfile.write(block[: min(left, len(block))])
            left -= len(block)


class ImageServer:
    """The server, started on a free port in a daemon thread for the ``with`` block.

    ``slow_s``, ``hang_limit_s``, ``trickle_every_s`` and ``big_bytes`` tune the misbehaving
    routes; :meth:`url` builds an absolute URL for a route; :attr:`hits` counts requests.
    """

    def __init__(
        self,
        slow_s: float = 3.0,
        hang_limit_s: float = 10.0,
        trickle_every_s: float = 0.2,
        big_bytes: int = 2_000_000,
    ) -> None:
        self.slow_s = slow_s
        self.hang_limit_s = hang_limit_s
        self.trickle_every_s = trickle_every_s
        self.big_bytes = big_bytes
        self.images: dict[str, tuple[bytes, str]] = {}
        self.hits: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.gate = threading.Event()  # /gate/ routes answer once it is set
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def add_image(self, name: str, data: bytes, content_type: str) -> str:
        """Serve ``data`` at ``/img/<name>``; returns its URL."""
        self.images[name] = (data, content_type)
        return self.url(f"/img/{name}")

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running: use it as a context manager")
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _hit(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def __enter__(self) -> ImageServer:
        self.stopping.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-http-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # wakes every slow/stall/trickle handler
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
