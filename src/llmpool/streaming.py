"""Streaming through the fallback walk: an attempt stays switchable until real content is out.

A provider may send a role header or empty deltas before it fails (an error event at the start
of a stream). `StreamGate` holds such chunks back until the first content (text or a tool call)
arrives, so an error before it still falls back to the next candidate, and an error after it
becomes a `MidStreamError` carrying exactly the text the caller received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmpool.candidates import tag

if TYPE_CHECKING:
    from llmpool.candidates import Attempt, Walk

__all__ = ["StreamGate", "has_content", "text_of"]


class StreamGate:
    """One streamed attempt's chunks: held back until the first content, then passed on.

    A provider may send a role header or empty deltas before it fails (an error event at the
    start of a stream). Those chunks carry nothing the caller could have used, so holding them
    back keeps the attempt switchable until real content (text or a tool call) is out.
    """

    def __init__(self, walk: Walk, attempt: Attempt) -> None:
        self.walk = walk
        self.attempt = attempt
        self.open = False
        self._held: list[Any] = []
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """The text passed on so far."""
        return "".join(self._parts)

    def push(self, chunk: Any) -> list[Any]:
        """Take one chunk; return the chunks to pass on now."""
        if self.open:
            self._parts.append(text_of(chunk))
            return [chunk]
        self._held.append(chunk)
        return self._release() if has_content(chunk) else []

    def finish(self) -> list[Any]:
        """The stream ended cleanly: return what is still held back (possibly nothing)."""
        if self.open:
            return []
        return self._release()

    def _release(self) -> list[Any]:
        self.open = True
        held, self._held = self._held, []
        metadata = self.walk.succeeded(self.attempt)
        if held:
            held[0] = tag(held[0], metadata)
        self._parts.extend(text_of(chunk) for chunk in held)
        return held


def has_content(chunk: Any) -> bool:
    """Whether a streamed chunk carries anything the caller could use."""
    content = getattr(chunk, "content", chunk)
    if content:
        return True
    return bool(
        getattr(chunk, "tool_call_chunks", None)
        or getattr(chunk, "additional_kwargs", None)
        or getattr(chunk, "invalid_tool_calls", None)
    )


def text_of(chunk: Any) -> str:
    content = getattr(chunk, "content", chunk)
    return content if isinstance(content, str) else str(content)
