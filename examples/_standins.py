"""Offline stand-ins for OpenAI and Anthropic, so the examples that call them run without keys.

A small HTTP server on 127.0.0.1 answers OpenAI's ``POST /v1/chat/completions`` and Anthropic's
``POST /v1/messages`` in their wire formats (non-streaming), with an answer that says it comes
from the stand-in. The real LangChain clients talk to it: only the base URL and the key differ.
`start_standins` starts it for the providers whose key is unset and points their variables at
it; a provider whose key is set is left alone (real service, or your own compatible server).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: provider -> (its key variable, its base URL variable, the path suffix of the base URL)
PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "OPENAI_API_BASE", "/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", ""),
}


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # Anthropic's content blocks
                return " ".join(str(block.get("text", "")) for block in content)
            return str(content)
    return ""


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the example's output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        model = str(body.get("model", "model"))
        text = f"(offline stand-in for {model}) You said: {_last_user_text(body)}"
        if body.get("stream"):
            self._send(400, {"error": {"message": "the stand-in does not stream"}})
        elif self.path.endswith("/chat/completions"):
            self._send(200, {
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 0,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })  # fmt: skip
        elif self.path.endswith("/messages"):
            self._send(200, {
                "id": "msg_standin", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            })  # fmt: skip
        else:
            self._send(404, {"error": {"message": f"the stand-in has no {self.path}"}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_standins(*providers: str) -> list[str]:
    """Serve the providers whose key is unset from a local stand-in; return those providers.

    Sets, for each of them, the key variable to a placeholder and the base URL variable to the
    stand-in. Prints one note per provider on stderr.
    """
    missing = [p for p in providers if not os.environ.get(PROVIDERS[p][0])]
    if not missing:
        return []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for provider in missing:
        key, base, suffix = PROVIDERS[provider]
        os.environ[key] = "standin-placeholder-key"
        os.environ[base] = url + suffix
        print(
            f"note: {key} is unset: {provider} answers from a local stand-in at {url} "
            "(examples/_standins.py)",
            file=sys.stderr,
        )
    return missing
