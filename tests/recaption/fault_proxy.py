"""A misbehaving proxy in front of a real OpenAI-compatible server, for the retry tests.

A real server never answers 503 or 429 on cue, so this one does, per instruction: each request's
prompt picks a *plan*, a list of actions taken on its successive attempts (the last one repeats).
Actions: ``"ok"`` forwards to the real server and relays its answer; ``"503"``, ``"429"``,
``"400"``, ... answer that status (429 and 503 with ``Retry-After: 1``); ``"hang"`` waits
``hang_s`` before forwarding (longer than the client's timeout); ``"drop"`` closes the connection
without answering; ``"canned"`` answers a fixed caption at once, without the model (for tests
whose timing must not depend on how fast this machine runs it).
Setting :attr:`FaultProxy.models` replaces the server's model list. Every
forwarded request is held ``delay_s`` first, so concurrent clients overlap and
:attr:`FaultProxy.max_in_flight` shows how many were in flight at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CANNED_CAPTION = "a canned caption"
CANNED = json.dumps(
    {
        "id": "canned",
        "object": "chat.completion",
        "created": 0,
        "model": "canned",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CANNED_CAPTION},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        models = self.server.owner.models
        if self.path.endswith("/models") and models is not None:
            listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
            self._send(200, json.dumps(listing).encode())
        else:
            self._forward(b"")

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = owner._next_action(_prompt_of(body))
        with owner._track():
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(2)  # no status line at all: a connection error
                return
            if action.isdigit():
                self._send(
                    int(action), b'{"error": {"message": "injected ' + action.encode() + b'"}}'
                )
                return
            if action == "canned":
                self._send(200, CANNED)
                return
            owner.stopping.wait(owner.hang_s if action == "hang" else owner.delay_s)
            self._forward(body)

    def _forward(self, body: bytes) -> None:
        owner = self.server.owner
        req = urllib.request.Request(
            owner.upstream + self.path,
            data=body or None,
            headers={"Content-Type": "application/json"},
            method=self.command,
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                self._send(resp.status, resp.read())
        except urllib.error.HTTPError as err:
            self._send(err.code, err.read())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)

    def _send(self, code: int, payload: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if code in (429, 503):
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _prompt_of(body: bytes) -> str:
    """The text part of the request's last message."""
    try:
        content = json.loads(body)["messages"][-1]["content"]
    except (ValueError, KeyError, IndexError):
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


class FaultProxy:
    """The proxy on a free port of 127.0.0.1 for the ``with`` block. ``plans`` maps a prompt to
    its actions; other prompts are forwarded. :attr:`hits` counts chat requests per prompt."""

    def __init__(
        self,
        upstream: str,
        plans: dict[str, list[str]] | None = None,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
    ) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.plans = plans or {}
        self.delay_s = delay_s
        self.hang_s = hang_s
        self.hits: Counter[str] = Counter()
        self.models: list[str] | None = None  # set: ``/v1/models`` lists these instead
        self.in_flight = 0
        self.max_in_flight = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _next_action(self, prompt: str) -> str:
        with self._lock:
            self.hits[prompt] += 1
            plan = self.plans.get(prompt, ["ok"])
            return plan[min(self.hits[prompt], len(plan)) - 1]

    @contextlib.contextmanager
    def _track(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def __enter__(self) -> FaultProxy:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()
