"""An OpenAI-compatible chat completions server on 127.0.0.1 that answers what it is asked.

Unlike the scripted `OpenAIServer`, it reads each request and answers in kind, so LangChain's
standard chat model tests can run against it with a real ``ChatOpenAI``:

- text: a short greeting, cut before the first ``stop`` sequence;
- SSE streaming (``stream: true``), with a final usage chunk when
  ``stream_options.include_usage`` is set;
- tools: when ``tool_choice`` forces a call (``"required"`` or a named function), or the last
  message is the user's, it calls the named (else the first) tool, with arguments read from the
  last user message (its first integer, its first quoted text), streamed as argument deltas;
  after a tool result it answers in text;
- structured output: ``response_format`` ``json_schema`` gets an object filling the schema;
- usage metadata on every answer (word counts).

``ServerDown`` answers every request with HTTP 500 and OpenAI's error body.

Example::

    with OpenAICompatServer() as server:
        llm = ChatOpenAI(model="gpt-local", api_key="sk-test", base_url=server.url + "/v1")
        llm.invoke("Hello").content     # 'Hello! How can I help you today?'
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["GREETING", "OpenAICompatServer", "ServerDown"]

GREETING = "Hello! How can I help you today?"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        self.server.owner.handle(self, body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Concurrent tests open many connections at once; the default backlog of 5 can refuse
    # some under load, which a client counts as a failed attempt the server never saw.
    request_queue_size = 128
    owner: OpenAICompatServer


class OpenAICompatServer:
    """``POST /v1/chat/completions``, answering each request from its own content."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (clients append ``/v1``)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> OpenAICompatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def count(self) -> int:
        """How many requests arrived."""
        with self._lock:
            return len(self.requests)

    # -- answering ---------------------------------------------------------------------------

    def handle(self, handler: _Handler, body: dict[str, Any]) -> None:
        """Record the request and answer it."""
        with self._lock:
            self.requests.append(body)
        message, finish = self.reply(body)
        usage = _usage(body, message)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_stream(handler, body, message, finish, usage if include_usage else None)
            return
        _send_json(
            handler,
            200,
            {
                "id": "chatcmpl-compat",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", "local"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )

    def reply(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The assistant message for a request, and its finish reason."""
        messages = body.get("messages") or []
        prompt = _last_user_text(messages)
        tool = _tool_to_call(body, messages, prompt)
        if tool is not None:
            name, parameters = tool
            arguments = json.dumps(_fill(parameters, prompt), ensure_ascii=False)
            call = {"id": "call_compat_1", "type": "function"}
            call["function"] = {"name": name, "arguments": arguments}  # type: ignore[assignment]
            return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            content = json.dumps(_fill(schema, prompt, optional=True))
            return {"role": "assistant", "content": content}, "stop"
        if response_format.get("type") == "json_object":
            content = json.dumps({"setup": "Why did the cat sit?", "punchline": "To stay put."})
            return {"role": "assistant", "content": content}, "stop"
        text = GREETING
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text = text[: text.index(stop)] or text
        return {"role": "assistant", "content": text}, "stop"

    def _send_stream(
        self,
        handler: _Handler,
        body: dict[str, Any],
        message: dict[str, Any],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        for event in _stream_events(body, message, finish, usage):
            handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


class ServerDown(OpenAICompatServer):
    """Every request fails with HTTP 500 and OpenAI's error body."""

    def handle(self, handler: _Handler, body: dict[str, Any]) -> None:
        """Record the request and fail it."""
        with self._lock:
            self.requests.append(body)
        error = {"message": "The server had an error", "type": "server_error", "code": None}
        _send_json(handler, 500, {"error": {**error, "param": None}})


# -- the request's content --------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _tool_to_call(
    body: dict[str, Any], messages: list[dict[str, Any]], prompt: str
) -> tuple[str, dict[str, Any]] | None:
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    forced = choice == "required" or isinstance(choice, dict)
    last = messages[-1].get("role") if messages else None
    if not forced and last != "user":
        return None  # a tool result came back: answer in text
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        chosen = next((t for t in tools if t["name"] == wanted), tools[0])
    else:
        named = [t for t in tools if t["name"] in prompt]
        chosen = max(named, key=lambda t: len(t["name"])) if named else tools[0]
    return chosen["name"], chosen.get("parameters") or {}


def _fill(schema: dict[str, Any], prompt: str, *, optional: bool = False) -> Any:
    """A value for ``schema``: integers from the prompt, quoted text from it, else words."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or properties)
        return {
            name: _fill(sub, prompt, optional=optional)
            for name, sub in properties.items()
            if optional or name in required
        }
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "anyOf" in schema:
        first = next((s for s in schema["anyOf"] if s.get("type") != "null"), {"type": "string"})
        return _fill(first, prompt, optional=optional)
    if kind == "integer":
        number = re.search(r"-?\d+", prompt)
        return int(number.group()) if number else 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [_fill(schema.get("items") or {"type": "string"}, prompt)]
    quoted = re.search(r"'([^']+)'", prompt)
    if quoted:
        return quoted.group(1)
    description = schema.get("description") or schema.get("title") or "a cat"
    return f"About {description}: {prompt.split('.')[0] or 'cats'}"


def _usage(body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(_text(m.get("content")).split()) for m in body.get("messages") or [])
    answer = message.get("content") or json.dumps(message.get("tool_calls"))
    completion = len(str(answer).split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _stream_events(
    body: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, Any] | None
) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        data = {
            "id": "chatcmpl-compat",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body.get("model", "local"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        return _sse(data)

    yield chunk({"role": "assistant", "content": ""})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        head = {"index": 0, "id": call["id"], "type": "function"}
        head["function"] = {"name": function["name"], "arguments": ""}
        yield chunk({"tool_calls": [head]})
        arguments = function["arguments"]
        for start in range(0, len(arguments), 8):
            part = {"index": 0, "function": {"arguments": arguments[start : start + 8]}}
            yield chunk({"tool_calls": [part]})
    content = message.get("content") or ""
    words = content.split(" ")
    for i, word in enumerate(words):
        yield chunk({"content": word + (" " if i < len(words) - 1 else "")})
    yield chunk({}, finish)
    if usage is not None:
        yield _sse(
            {
                "id": "chatcmpl-compat",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body.get("model", "local"),
                "choices": [],
                "usage": usage,
            }
        )
    yield _sse("[DONE]")


def _sse(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _send_json(handler: _Handler, code: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
    handler.wfile.flush()
