"""The ``fake`` provider, for tests and demos, scripted by a row's ``config``: ``responses``
(cycled), ``sleep`` (seconds per answer), ``error`` (every call fails with `ConnectionError`).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import FakeListChatModel
from langchain_core.outputs import ChatGenerationChunk
from pydantic import BaseModel, ConfigDict, Field


class FakeChatModel(FakeListChatModel):
    """A scripted chat model: answers from ``responses`` in turn, or fails with ``error``."""

    model: str = "fake"
    responses: list[str] = Field(default_factory=lambda: ["This is a fake answer."])
    error: str | None = None

    @property
    def _llm_type(self) -> str:
        return "llmpool-fake"

    def _fail(self) -> None:
        if self.error is not None:
            raise ConnectionError(self.error)

    def _call(self, *args: Any, **kwargs: Any) -> str:
        self._fail()
        return super()._call(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self._fail()
        yield from super()._stream(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self._fail()
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Accept tools and ignore them: the scripted answers stay the same."""
        return self


class FakeEmbeddings(BaseModel, Embeddings):
    """Deterministic embeddings from a BLAKE2b digest of the model name and the text."""

    model_config = ConfigDict(extra="forbid")

    model: str = "fake"
    dimensions: int = Field(default=8, ge=1, le=4096)
    error: str | None = None
    sleep: float | None = None

    def _vector(self, text: str) -> list[float]:
        count = self.dimensions
        seed = f"{self.model}\x00{text}".encode("utf-8", "surrogatepass")
        digest = b"".join(
            hashlib.blake2b(seed, digest_size=64, salt=block.to_bytes(16, "big")).digest()
            for block in range(-(-4 * count // 64))  # 64 bytes, 16 numbers, per block
        )
        numbers = struct.unpack(f">{count}I", digest[: 4 * count])
        return [n / 2_147_483_648.0 - 1.0 for n in numbers]

    def _fail(self) -> None:
        if self.error is not None:
            raise ConnectionError(self.error)

    @property
    def timeout(self) -> float:
        """Seconds a call may wait: no I/O, only its ``sleep`` (what a deadline reads)."""
        return float(self.sleep or 0.0)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return one vector per text."""
        if self.sleep:
            time.sleep(self.sleep)
        self._fail()
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        """Return the text's vector."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of `embed_documents` (no thread: nothing blocks)."""
        if self.sleep:
            await asyncio.sleep(self.sleep)
        self._fail()
        return [self._vector(text) for text in texts]

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of `embed_query`."""
        return (await self.aembed_documents([text]))[0]
