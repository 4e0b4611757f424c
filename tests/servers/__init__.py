"""Small HTTP servers on 127.0.0.1 that speak real providers' wire formats, with a fault script.

Real LangChain clients are pointed at them through ``base_url``::

    with OpenAIServer() as server:
        server.script(Status(500), Reply("hello"))   # first request fails, second answers
        llm = ChatOpenAI(model="gpt-4", api_key="sk-test", base_url=server.url + "/v1",
                         max_retries=0)
        llm.invoke("hi").content                      # raises on the 500
        server.wait_for_requests(1)

- `OpenAIServer`: ``POST /v1/chat/completions`` (also ChatFireworks, and Azure's
  ``/openai/deployments/{d}/chat/completions``), JSON or SSE ending in ``data: [DONE]``.
- `AnthropicServer`: ``POST /v1/messages``, JSON or the SSE event sequence.
- `OllamaServer`: ``POST /api/chat``, JSON or NDJSON lines.

Behaviours, consumed one per request, then the default (`Reply`):
`Reply(text, tool_call=None)`, `Status(code, message=None, headers=None, context_length=False)`
(the provider's own error body), `Hang(seconds)` (a read timeout for the client), `Cut(after)`
(a stream that breaks after ``after`` chunks), `Empty()` (a stream with no content),
`StreamError(after, kind)` (a stream that sends ``after`` chunks, then the provider's own
in-stream error event, e.g. Anthropic's ``overloaded_error``, and ends cleanly),
`Garbage(body, content_type)` (a 200 whose body the client cannot use: not JSON, ``{}``,
``{"choices": null}``; a stream of such lines, each framed as the provider's events),
`Stall(after, seconds)` (a stream that sends ``after`` chunks, then nothing for ``seconds``),
`Trickle(every, idle, text)` (a stream whose events come ``every`` seconds, the first ``idle``
of them without content).

`closed_port_url()` gives a URL where nothing listens. Streams use chunked transfer encoding so
that `Cut` is a real protocol error for the client, not a clean end of file.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "AnthropicServer",
    "Cut",
    "Empty",
    "Garbage",
    "Hang",
    "OllamaServer",
    "OpenAIServer",
    "ProviderServer",
    "Reply",
    "Request",
    "Stall",
    "Status",
    "StreamError",
    "Trickle",
    "closed_port_url",
]


@dataclass(frozen=True)
class Reply:
    """Answer with ``text`` (or a tool call ``(name, arguments)``), ending with the finish reason
    ``finish`` instead of the usual one (OpenAI only: ``"content_filter"``...)."""

    text: str = "Hello from the local server."
    tool_call: tuple[str, dict[str, Any]] | None = None
    finish: str | None = None


@dataclass(frozen=True)
class Status:
    """Fail with an HTTP status and the provider's error body."""

    code: int
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    context_length: bool = False


@dataclass(frozen=True)
class Hang:
    """Accept the request and answer nothing for ``seconds``."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Cut:
    """Stream ``after`` chunks, then drop the connection mid-body."""

    after: int = 2
    text: str = "This answer will be cut off before it ends."


@dataclass(frozen=True)
class Empty:
    """A stream (or answer) with no content at all."""


@dataclass(frozen=True)
class StreamError:
    """Stream ``after`` chunks, then the provider's in-stream error event of type ``kind``."""

    after: int = 0
    kind: str = "server_error"
    text: str = "This answer stops with an error event."


@dataclass(frozen=True)
class Garbage:
    """Answer 200 with ``body``, which no client can read as an answer.

    A plain request gets ``body`` as is, with ``content_type`` (``application/json`` unless
    given). A stream gets each line of ``body`` framed as one of the provider's events (an SSE
    ``data:`` line, an NDJSON line), with the provider's stream content type unless given.
    """

    body: str = "<html>upstream proxy error</html>"
    content_type: str | None = None


@dataclass(frozen=True)
class Stall:
    """Stream ``after`` chunks, then send nothing more for ``seconds`` (a hung stream)."""

    after: int = 2
    seconds: float = 30.0
    text: str = "This answer stops halfway and never ends."


@dataclass(frozen=True)
class Trickle:
    """Stream slowly: one event every ``every`` seconds, the first ``idle`` of them opening
    events repeated (no content), then the answer's."""

    every: float = 0.1
    idle: int = 0
    text: str = "A slow answer, word by word."


Behaviour = Reply | Status | Hang | Cut | Empty | StreamError | Garbage | Stall | Trickle


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return bool(self.body.get("stream"))


def closed_port_url() -> str:
    """Return ``http://127.0.0.1:PORT`` where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def words(text: str, size: int = 2) -> list[str]:
    """Split ``text`` into chunks of ``size`` words, keeping the spaces."""
    parts = text.split(" ")
    return [
        " ".join(parts[i : i + size]) + (" " if i + size < len(parts) else "")
        for i in range(0, len(parts), size)
    ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        request = Request("POST", self.path, dict(self.headers.items()), body)
        owner = self.server.owner
        owner._record(request)
        behaviour = owner._next()
        owner._respond(self, request, behaviour)

    do_GET = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Concurrent tests open many connections at once; the default backlog of 5 can refuse
    # some under load, which a client counts as a failed attempt the server never saw.
    request_queue_size = 128
    owner: ProviderServer


class ProviderServer:
    """Base of the wire-format servers: lifecycle, fault script, recorded requests."""

    def __init__(self) -> None:
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        # A short poll interval: shutdown() waits for the serving loop to notice it.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *behaviours: Behaviour) -> ProviderServer:
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._script.extend(behaviours)
        return self

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def count(self) -> int:
        """How many requests arrived."""
        with self._lock:
            return len(self.requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Request]:
        """Poll until ``n`` requests arrived (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                msg = f"expected {n} requests, got {self.count}"
                raise AssertionError(msg)
            time.sleep(0.005)
        return list(self.requests)

    # -- responding --------------------------------------------------------------------------

    def _respond(self, handler: _Handler, request: Request, behaviour: Behaviour) -> None:
        if isinstance(behaviour, Hang):
            self.stopping.wait(behaviour.seconds)
            handler.close_connection = True
            return
        if isinstance(behaviour, Status):
            self._send_json(handler, behaviour.code, self.error_body(behaviour), behaviour.headers)
            return
        if isinstance(behaviour, Garbage):
            self._send_garbage(handler, request, behaviour)
            return
        if not request.stream:
            text = "" if isinstance(behaviour, Empty) else getattr(behaviour, "text", "")
            tool = behaviour.tool_call if isinstance(behaviour, Reply) else None
            answer = self.answer(request, text, tool)
            if isinstance(behaviour, Reply) and behaviour.finish:
                answer["choices"][0]["finish_reason"] = behaviour.finish
            self._send_json(handler, 200, answer)
            return
        handler.send_response(200)
        handler.send_header("content-type", self.stream_type)
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        text = "" if isinstance(behaviour, Empty) else behaviour.text  # type: ignore[union-attr]
        tool = behaviour.tool_call if isinstance(behaviour, Reply) else None
        events = list(self.stream_events(request, words(text) if text else [], tool))
        if isinstance(behaviour, Reply) and behaviour.finish:
            finish = f'"finish_reason": "{behaviour.finish}"'.encode()
            events = [event.replace(b'"finish_reason": "stop"', finish) for event in events]
        if isinstance(behaviour, StreamError):
            for event in events[: self.opening_events + behaviour.after]:
                self._chunk(handler, event)
            self._chunk(handler, self.error_event(behaviour.kind))
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            return
        if isinstance(behaviour, Trickle):
            opening = events[: self.opening_events]
            slow = [*opening, *opening[-1:] * behaviour.idle, *events[self.opening_events :]]
            for event in slow:
                if self.stopping.wait(behaviour.every):
                    break
                self._chunk(handler, event)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            return
        if isinstance(behaviour, Stall):
            for event in events[: self.opening_events + behaviour.after]:
                self._chunk(handler, event)
            self.stopping.wait(behaviour.seconds)
            handler.close_connection = True
            return
        if isinstance(behaviour, Cut):
            # the opening event(s) plus `after` content chunks, then the connection drops
            keep = self.opening_events + behaviour.after
            for event in events[:keep]:
                self._chunk(handler, event)
            handler.wfile.write(b"ff\r\npartial")  # a chunk that never completes
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        for event in events:
            self._chunk(handler, event)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    def _send_garbage(self, handler: _Handler, request: Request, garbage: Garbage) -> None:
        if not request.stream:
            payload = garbage.body.encode()
            handler.send_response(200)
            handler.send_header("content-type", garbage.content_type or "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
            return
        handler.send_response(200)
        handler.send_header("content-type", garbage.content_type or self.stream_type)
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        for line in garbage.body.splitlines():
            self._chunk(handler, self.frame(line))
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _chunk(handler: _Handler, data: bytes) -> None:
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _send_json(
        handler: _Handler, code: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    # -- the wire format, per provider -------------------------------------------------------

    stream_type = "text/event-stream"
    opening_events = 1

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        """The non-streaming response body."""
        raise NotImplementedError

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        """The streamed events, already framed."""
        raise NotImplementedError

    def error_body(self, status: Status) -> Any:
        """The provider's error body."""
        raise NotImplementedError

    def error_event(self, kind: str) -> bytes:
        """The provider's in-stream error event, already framed."""
        raise NotImplementedError

    def frame(self, line: str) -> bytes:
        """One raw line framed as a streamed event (an SSE ``data:`` line by default)."""
        return f"data: {line}\n\n".encode()


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {body}\n\n".encode()


class OpenAIServer(ProviderServer):
    """OpenAI chat completions (also Azure OpenAI and Fireworks)."""

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if tool is not None:
            name, arguments = tool
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments)},
                    }
                ],
            }
            finish = "tool_calls"
        return {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": 1700000000,
            "model": request.body.get("model", "local"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }

    def _chunk_body(self, request: Request, delta: dict[str, Any], finish: str | None) -> Any:
        return {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": request.body.get("model", "local"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        yield _sse(self._chunk_body(request, {"role": "assistant", "content": ""}, None))
        for chunk in chunks:
            yield _sse(self._chunk_body(request, {"content": chunk}, None))
        yield _sse(self._chunk_body(request, {}, "stop"))
        yield _sse("[DONE]")

    def error_body(self, status: Status) -> Any:
        if status.context_length:
            return {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        kinds = {401: "invalid_api_key", 403: "permission_denied", 429: "rate_limit_exceeded"}
        return {
            "error": {
                "message": status.message or f"Local server error {status.code}",
                "type": "server_error" if status.code >= 500 else "invalid_request_error",
                "param": None,
                "code": kinds.get(status.code),
            }
        }

    def error_event(self, kind: str) -> bytes:
        return _sse({"error": {"message": f"Local stream error ({kind})", "type": kind}})


class AnthropicServer(ProviderServer):
    """Anthropic Messages."""

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        stop = "end_turn"
        if tool is not None:
            name, arguments = tool
            content = [{"type": "tool_use", "id": "toolu_1", "name": name, "input": arguments}]
            stop = "tool_use"
        return {
            "id": "msg_local",
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", "local"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }

    opening_events = 2

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        model = request.body.get("model", "local")
        yield _sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_local",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 3, "output_tokens": 0},
                },
            },
            "message_start",
        )
        yield _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        for chunk in chunks:
            yield _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                },
                "content_block_delta",
            )
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
            "message_delta",
        )
        yield _sse({"type": "message_stop"}, "message_stop")

    def error_body(self, status: Status) -> Any:
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        message = status.message or f"Local server error {status.code}"
        if status.context_length:
            message = "prompt is too long: 210000 tokens > 200000 maximum"
        return {
            "type": "error",
            "error": {"type": kinds.get(status.code, "api_error"), "message": message},
        }

    def error_event(self, kind: str) -> bytes:
        body = {"type": "error", "error": {"type": kind, "message": f"Local stream error ({kind})"}}
        return _sse(body, "error")


class OllamaServer(ProviderServer):
    """Ollama's chat API."""

    stream_type = "application/x-ndjson"

    def _message(self, request: Request, content: str, done: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.body.get("model", "local"),
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": done,
        }
        if done:
            body.update(
                done_reason="stop",
                total_duration=1000,
                load_duration=10,
                prompt_eval_count=3,
                prompt_eval_duration=10,
                eval_count=5,
                eval_duration=10,
            )
        return body

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        body = self._message(request, text, done=True)
        if tool is not None:
            name, arguments = tool
            body["message"]["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
        return body

    opening_events = 0

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        for chunk in chunks:
            yield (json.dumps(self._message(request, chunk, done=False)) + "\n").encode()
        yield (json.dumps(self._message(request, "", done=True)) + "\n").encode()

    def error_body(self, status: Status) -> Any:
        message = status.message or f"Local server error {status.code}"
        if status.context_length:
            message = "input is too long for the model's context length"
        return {"error": message}

    def error_event(self, kind: str) -> bytes:
        return (json.dumps({"error": f"Local stream error ({kind})"}) + "\n").encode()

    def frame(self, line: str) -> bytes:
        return (line + "\n").encode()
