"""Local embeddings servers on 127.0.0.1: OpenAI's ``/v1/embeddings`` and Ollama's ``/api/embed``.

Each answers with deterministic vectors, a function of its ``space`` (by default the model the
request names), its dimensions and the text, so a test can tell which space every vector came
from. A server can be told to answer 500 from its Nth request on (`fail_from`), or on given
requests only (`fail_on`); it records the size of every batch it was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def vector(space: str, text: str, dimensions: int) -> list[float]:
    """The vector a server of ``space`` answers for ``text``: float32-exact numbers."""
    digest = b""
    block = 0
    while len(digest) < 2 * dimensions:
        digest += hashlib.sha256(f"{space}\x00{block}\x00{text}".encode()).digest()
        block += 1
    # Multiples of 1/32768: exact in float32, so base64 float32 answers decode to these.
    return [n / 32768.0 - 1.0 for n in struct.unpack(f">{dimensions}H", digest[: 2 * dimensions])]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.owner.handle(self, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Concurrent tests open many connections at once; the default backlog of 5 can refuse
    # some under load, which a client counts as a failed attempt the server never saw.
    request_queue_size = 128
    owner: EmbeddingServer


class EmbeddingServer:
    """A local embeddings server; use as a context manager.

    Args:
        space: The space its vectors are in; by default the model each request names.
        dimensions: Numbers per vector when the request does not ask for a number.
    """

    path = "/"

    def __init__(self, *, space: str | None = None, dimensions: int = 8) -> None:
        self.space = space
        self.dimensions = dimensions
        self.batches: list[int] = []
        self.failed: list[int] = []
        self._fail_from: int | None = None
        self._fail_on: set[int] = set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def requests(self) -> int:
        """How many requests it received (answered or failed)."""
        return len(self.batches) + len(self.failed)

    def fail_from(self, number: int) -> EmbeddingServer:
        """Answer 500 to the ``number``-th request (1 for the first) and every later one."""
        self._fail_from = number
        return self

    def fail_on(self, *numbers: int) -> EmbeddingServer:
        """Answer 500 to these requests only (1 for the first)."""
        self._fail_on = set(numbers)
        return self

    def handle(self, handler: _Handler, body: dict[str, Any]) -> None:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        with self._lock:
            number = self.requests + 1
            failing = number in self._fail_on or (
                self._fail_from is not None and number >= self._fail_from
            )
            (self.failed if failing else self.batches).append(len(texts))
        if failing:
            self._send(handler, 500, self.error_body())
            return
        model = str(body.get("model"))
        dimensions = int(body.get("dimensions") or self.dimensions)
        space = self.space or model
        vectors = [vector(space, str(text), dimensions) for text in texts]
        self._send(handler, 200, self.answer(body, model, vectors))

    def answer(self, body: dict[str, Any], model: str, vectors: list[list[float]]) -> Any:
        raise NotImplementedError

    def error_body(self) -> Any:
        return {"error": {"message": "the server had an error", "type": "server_error"}}

    @staticmethod
    def _send(handler: _Handler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


class OpenAIEmbeddingServer(EmbeddingServer):
    """OpenAI's ``POST /v1/embeddings`` (float or base64 float32 encoding)."""

    def answer(self, body: dict[str, Any], model: str, vectors: list[list[float]]) -> Any:
        encoded = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": (
                    base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if encoded else v
                ),
            }
            for index, v in enumerate(vectors)
        ]
        tokens = sum(len(v) for v in vectors)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


class OllamaEmbeddingServer(EmbeddingServer):
    """Ollama's ``POST /api/embed``."""

    def answer(self, body: dict[str, Any], model: str, vectors: list[list[float]]) -> Any:
        return {
            "model": model,
            "embeddings": vectors,
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": len(vectors),
        }

    def error_body(self) -> Any:
        return {"error": "the server had an error"}
