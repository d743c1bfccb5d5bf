"""Fetch the images of URL rows (``url_parquet`` inputs) over http(s).

A URL pool (COYO, LAION) is the open web: a few percent of hosts are dead, slow, hostile, or
answer with an HTML error page and a 200. This stage exists so that each such URL costs at
most ``total_timeout_s`` of one worker thread and one ledger row with a reason, never a crashed
partition or a hung job. Every check is therefore done by us rather than trusted to the server
or to the HTTP library's defaults:

* only ``http``/``https``, checked on the input URL *and on every redirect hop* (a client that
  follows redirects itself would happily go to any scheme it has an adapter for, and a pool may
  contain ``file://`` URLs);
* only public addresses, checked where each socket is opened (:mod:`curation.address_gate`):
  a row or a redirect pointing at a cloud metadata service, a private network or loopback is
  ``private_address``, never connected to and never retried;
* the body is streamed and cut as soon as it exceeds ``max_bytes`` (a declared Content-Length
  is refused before reading);
* one deadline covers the whole URL (all hops, attempts and backoff sleeps). A socket's
  read timeout only bounds the silence *between* bytes, so a server sending one byte a second
  would otherwise hold a worker forever;
* the first bytes are sniffed: a Content-Type header says nothing reliable.

A failed row is marked ``error`` with a reason (``http_404``, ``timeout``, ``too_large``...)
and passes on, so ``inputs in == ledger rows out`` still holds.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple
from urllib.parse import urljoin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import urllib3

from curation.address_gate import (
    REDIRECT_STATUSES,
    REFUSED,
    AddressGate,
    AddressRefused,
    check_url,
)
from curation.config import DownloadConfig
from manifests.marks import alive, errors_to, set_column

log = logging.getLogger(__name__)


#: Enough leading bytes to tell every format :func:`sniff_image_ext` knows (WEBP needs 12).
SNIFF_BYTES = 12
#: Upper bound of one read. ``read1`` returns whatever has arrived, so this is not a wait.
READ_CHUNK = 256 * 1024


def sniff_image_ext(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes (``jpg``, ``png``...), else None.

    Servers mislabel freely (an HTML "not found" page served as ``image/jpeg`` is common), so
    the bytes decide, not the Content-Type. This only recognises a header; the decode stage
    still has to prove the rest of the file is sound.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


class _Failed(Exception):
    """One attempt failed: the ledger reason, and whether trying again could help."""

    def __init__(self, reason: str, retry: bool = False, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait_s = wait_s  # the server's Retry-After, when it gave one


class _Fetched(NamedTuple):
    """The outcome for one URL: the body and its format, or the reason there is none."""

    data: bytes | None
    ext: str | None
    reason: str | None


class _Watch:
    """One response under the watch of :class:`_Deadlines`: shut at its deadline unless done.

    ``urllib3.HTTPResponse.shutdown()`` (urllib3 >= 2.3) wakes a blocked read, so the body
    phase ends at the deadline whatever the server does. The lock makes "done" and "shut"
    exclusive: a response whose connection went back to the pool is never shut."""

    __slots__ = ("_lock", "done", "fired", "raw")

    def __init__(self, raw: urllib3.HTTPResponse) -> None:
        self.raw = raw
        self.fired = False
        self.done = False
        self._lock = threading.Lock()

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.done = True

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            shutdown = getattr(self.raw, "shutdown", None)
            if shutdown is None:  # urllib3 < 2.3: the check between reads still bounds it
                return
            # ValueError/RuntimeError: the response was closed meanwhile, nothing left to cut
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                shutdown()


class _Deadlines:
    """One thread per process that shuts every response still reading at its deadline.

    The deadline check between reads is not enough on its own: one ``read1`` may block for up
    to the read timeout, and chunked framing is parsed inside http.client with its own reads.
    A timer thread per request would do, but starting one costs about as much CPU as the
    whole fetch of a small image; here a request costs a heap push.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, raw: urllib3.HTTPResponse, deadline: float) -> _Watch:
        """Watch ``raw`` until its ``with`` block ends; shut it at ``deadline`` (monotonic)."""
        w = _Watch(raw)
        with self._cv:
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(
                    target=self._run, name="download-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._seq), w))
            if self._heap[0][2] is w:  # the earliest now: the thread sleeps too long
                self._cv.notify()
        return w

    def _run(self) -> None:
        while True:
            due: list[_Watch] = []
            with self._cv:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._cv.wait(self._heap[0][0] - now if self._heap else None)
            for w in due:
                w.fire()  # a no-op for the done ones


_DEADLINES = _Deadlines()


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) in seconds from now, or None
    when absent or unreadable. Honoured on 429 and 503 so that a rate-limited host is not
    hammered again before it said it would answer."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


#: per worker process and download config: the fetching threads and their connection pools
_THREADS: dict[str, tuple[ThreadPoolExecutor, urllib3.PoolManager]] = {}
_THREADS_LOCK = threading.Lock()


def _retryable_status(code: int) -> bool:
    """429 and 5xx are often transient (rate limits, overloaded origins); other 4xx are not."""
    return code == 429 or 500 <= code <= 599


@dataclass(frozen=True)
class Download:
    """Download the image of every live URL row whose image is still missing.

    Rows that are not kept, that already hold image bytes, or whose ``url`` is null (rows of a
    folder or tar source) pass through untouched; an empty ``url`` string (the url_parquet
    source's stand-in for a missing URL) becomes ``error``/``empty_url``. On success ``image``,
    ``bytes`` and ``ext`` (the sniffed format) are set. The output has the input's schema and
    row order: the stage only fills and marks, it never adds or removes a row.
    """

    cfg: DownloadConfig
    name: str = "download"
    #: the runner fetches the next chunk of a partition while this one decodes
    io_bound: bool = True

    def __call__(self, batch: pa.Table) -> pa.Table:
        todo = np.flatnonzero(self._wanted(batch))
        if todo.size == 0:
            return batch
        urls = batch["url"].to_pylist()
        results = self._fetch_all([urls[i] for i in todo])

        images = batch["image"].to_pylist()
        exts = batch["ext"].to_pylist()
        sizes = batch["bytes"].to_pylist()
        reasons: list[str | None] = [None] * batch.num_rows
        for i, res in zip(todo.tolist(), results, strict=True):
            if res.reason is not None:
                reasons[i] = res.reason
            else:
                images[i], exts[i], sizes[i] = res.data, res.ext, len(res.data or b"")
        batch = set_column(batch, "image", images)
        batch = set_column(batch, "ext", exts)
        batch = set_column(batch, "bytes", sizes)
        failed = sum(r is not None for r in reasons)
        log.debug("%s: %d fetched, %d failed", self.name, len(results) - failed, failed)
        return errors_to(batch, reasons, stage=self.name)

    @staticmethod
    def _wanted(batch: pa.Table) -> np.ndarray:
        """Rows to fetch: still kept, no image yet, and a URL row (``url`` not null)."""
        no_image = pc.is_null(batch["image"]).to_numpy(zero_copy_only=False)
        url_row = pc.is_valid(batch["url"]).to_numpy(zero_copy_only=False)
        return alive(batch) & no_image & url_row

    def _fetch_all(self, urls: list[str | None]) -> list[_Fetched]:
        """Fetch ``urls`` with ``concurrency`` threads, results in input order.

        The threads and their connection pools live as long as the worker process (one set
        per config), not one batch: a partition arrives in chunks of a few dozen rows, and a
        fresh pool per chunk would pay thread starts and new TCP/TLS connections each time.
        One urllib3 ``PoolManager`` (thread-safe) serves all threads, with room for one
        connection per thread to each host.
        """
        pool, manager = self._threads()
        return list(pool.map(partial(self._fetch, manager), urls))

    def _threads(self) -> tuple[ThreadPoolExecutor, urllib3.PoolManager]:
        key = repr(self.cfg)
        with _THREADS_LOCK:
            if key not in _THREADS:
                pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix=self.name)
                _THREADS[key] = (pool, self._new_manager())
            return _THREADS[key]

    def _new_manager(self) -> urllib3.PoolManager:
        # identity: a compressed body would have to be inflated by urllib3, whose decoder can
        # loop over many network reads (e.g. a trickled gzip header) between our deadline
        # checks; images are compressed already, so nothing is lost.
        return AddressGate.allowing(self.cfg.allow_addresses).pool_manager(
            num_pools=max(64, 2 * self.cfg.concurrency),  # hosts kept; a web pool has many
            maxsize=self.cfg.concurrency,
            headers={
                "User-Agent": self.cfg.user_agent,
                "Accept": "image/*,*/*;q=0.8",
                "Accept-Encoding": "identity",
            },
        )

    def _fetch(self, manager: urllib3.PoolManager, url: str | None) -> _Fetched:
        """One URL, with retries and exponential backoff, within one overall deadline."""
        reason = check_url(url)
        if reason is not None:
            log.debug("%s: %r refused: %s", self.name, url, reason)
            return _Fetched(None, None, reason)
        assert url is not None
        url = url.strip()
        deadline = time.monotonic() + self.cfg.total_timeout_s
        attempt = 0
        while True:
            try:
                data, ext = self._attempt(manager, url, deadline)
                return _Fetched(data, ext, None)
            except _Failed as e:
                failure = e
            except Exception:  # a bug or an odd library error: cost one row, not the batch
                log.warning("%s: unexpected error fetching %r", self.name, url, exc_info=True)
                failure = _Failed("download_error")
            delay = self.cfg.backoff_s * 2**attempt
            if failure.wait_s is not None:  # the server said when: not before, and if that is
                delay = max(delay, failure.wait_s)  # past the deadline, give up now
            if (
                not failure.retry
                or attempt >= self.cfg.retries
                or time.monotonic() + delay >= deadline
            ):
                log.debug(
                    "%s: %s failed after %d attempt(s): %s",
                    self.name,
                    url,
                    attempt + 1,
                    failure.reason,
                )
                return _Fetched(None, None, failure.reason)
            time.sleep(delay)
            attempt += 1

    def _attempt(
        self, manager: urllib3.PoolManager, url: str, deadline: float
    ) -> tuple[bytes, str]:
        """GET ``url``, following up to ``max_redirects`` redirects, each target checked."""
        hops = 0
        while True:
            resp = self._get(manager, url, deadline)
            try:
                code = resp.status
                if code in REDIRECT_STATUSES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _Failed(f"http_{code}")
                    if hops >= self.cfg.max_redirects:
                        raise _Failed("too_many_redirects")
                    try:
                        url = urljoin(url, location.strip())
                    except ValueError:
                        raise _Failed("bad_url") from None
                    reason = check_url(url)
                    if reason is not None:
                        raise _Failed(reason)
                    hops += 1
                    continue
                if not 200 <= code <= 299:
                    wait = (
                        retry_after_s(resp.headers.get("Retry-After"))
                        if code in (429, 503)
                        else None
                    )
                    raise _Failed(f"http_{code}", retry=_retryable_status(code), wait_s=wait)
                body = self._read_body(resp, deadline)
                resp.release_conn()  # read to its end: the connection serves the next URL
                return body
            finally:
                resp.close()  # a no-op once released; else the half-read connection is dropped

    def _get(self, manager: urllib3.PoolManager, url: str, deadline: float) -> urllib3.HTTPResponse:
        """Send the request and read the headers; map urllib3's errors to ledger reasons."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failed("timeout")
        timeout = urllib3.Timeout(
            connect=min(self.cfg.connect_timeout_s, remaining),
            read=min(self.cfg.read_timeout_s, remaining),
        )
        try:
            return manager.urlopen(
                "GET",
                url,
                redirect=False,
                retries=False,  # ours, above, within the one deadline
                preload_content=False,
                decode_content=False,
                timeout=timeout,
            )
        except AddressRefused as exc:
            log.debug("%s: %s", self.name, exc)
            raise _Failed(REFUSED) from None
        except urllib3.exceptions.SSLError:  # a bad certificate stays bad
            raise _Failed("connection_error") from None
        except urllib3.exceptions.NewConnectionError:  # before TimeoutError: it subclasses it
            raise _Failed("connection_error", retry=True) from None
        except urllib3.exceptions.TimeoutError:
            raise _Failed("timeout", retry=True) from None
        except (urllib3.exceptions.LocationValueError, urllib3.exceptions.URLSchemeUnknown):
            raise _Failed("bad_url") from None
        except (urllib3.exceptions.HTTPError, OSError):
            raise _Failed("connection_error", retry=True) from None

    def _read_body(self, resp: urllib3.HTTPResponse, deadline: float) -> tuple[bytes, str]:
        """Stream the body within ``max_bytes`` and the deadline; sniff it as soon as we can."""
        declared = resp.headers.get("Content-Length")
        declared = (declared or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > self.cfg.max_bytes:
            raise _Failed("too_large")
        read = _reader(resp)
        body = bytearray()
        ext: str | None = None
        with _DEADLINES.watch(resp, deadline) as dog:
            try:
                while True:
                    if time.monotonic() >= deadline:
                        raise _Failed("timeout")
                    chunk = read()
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > self.cfg.max_bytes:
                        raise _Failed("too_large")
                    if ext is None and len(body) >= SNIFF_BYTES:
                        ext = sniff_image_ext(bytes(body[:SNIFF_BYTES]))
                        if ext is None:
                            raise _Failed("not_an_image")
            except urllib3.exceptions.TimeoutError:
                raise _Failed("timeout", retry=True) from None
            except (urllib3.exceptions.HTTPError, OSError):  # reset, truncated, cut by the dog
                if dog.fired:
                    raise _Failed("timeout") from None
                raise _Failed("connection_error", retry=True) from None
            if dog.fired:  # a shut socket reads as a clean end of the body
                raise _Failed("timeout")
        if not body:
            raise _Failed("empty_body")
        ext = ext or sniff_image_ext(bytes(body))
        if ext is None:
            raise _Failed("not_an_image")
        return bytes(body), ext


def _reader(raw: urllib3.HTTPResponse) -> Callable[[], bytes]:
    """A call returning the next bytes of the raw (undecoded) body, b"" at the end.

    Not ``Response.iter_content(n)``: that blocks until ``n`` bytes have arrived, so a server
    trickling a byte at a time is never interrupted by the socket's read timeout and never
    reaches our deadline check. ``read1`` returns what one socket read delivered.
    """
    if hasattr(raw, "read1"):  # urllib3 >= 2.1
        return lambda: raw.read1(READ_CHUNK, decode_content=False)
    return lambda: raw.read(1024, decode_content=False)  # small, so deadline checks come often
