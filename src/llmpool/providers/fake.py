"""The ``fake`` provider: an offline model that behaves like a provider's, scripted by a row's
``config``.

Answers: ``responses`` (cycled); with tools bound, tool calls (`FakeChatModel.bind_tools`); with
a schema, a valid instance of it (`FakeChatModel.with_structured_output`); ``usage_metadata``
estimated as one token per 4 characters. Failures: ``sleep``, ``error``, ``error_rate`` and
``seed``, as `llmpool.providers.failures` says. LangChain's standard parameters are accepted;
``stop``, ``max_tokens``, ``timeout`` and ``max_retries`` act as they do on a real client.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
    get_buffer_string,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from llmpool.providers.failures import Failures
from llmpool.providers.samples import sample


def _tool_name(choice: Any) -> str | None:
    # "get_weather" or {"type": "function", "function": {"name": "get_weather"}} -> its name.
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name") or choice.get("name") or "") or None
    if isinstance(choice, str) and choice not in ("auto", "any", "required", "none"):
        return choice
    return None


class FakeChatModel(Failures, BaseChatModel):
    """An offline chat model: scripted answers, tool calls, structured output, token usage and
    a provider's failures, all deterministic (error draws: with a ``seed``)."""

    responses: list[str] = Field(default_factory=lambda: ["This is a fake answer."], min_length=1)
    tool_calls: list[dict[str, Any]] | None = None
    structured_output: dict[str, Any] | None = None

    # LangChain's standard parameters.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    streaming: bool = False
    stream_usage: bool = True
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    _turns: Iterator[int] = PrivateAttr(default_factory=itertools.count)

    @field_validator("tool_calls")
    @classmethod
    def _tool_call_shape(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for call in value or ():
            if not isinstance(call.get("name"), str) or not isinstance(call.get("args", {}), dict):
                msg = 'each tool call is {"name": "tool", "args": {...}}, not ' + repr(call)[:80]
                raise ValueError(msg)
        return value

    @property
    def _llm_type(self) -> str:
        return "llmpool-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def get_token_ids(self, text: str) -> list[int]:
        """One token per 4 characters (or ``custom_get_token_ids``): no tokenizer to download."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return [zlib.crc32(text[i : i + 4].encode()) % 100_000 for i in range(0, len(text), 4)]

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Bind tools: the model calls them, as the module docstring's rule says.

        Example:
            >>> def get_weather(city: str) -> str:
            ...     '''The weather in a city.'''
            >>> FakeChatModel().bind_tools([get_weather]).invoke("Paris?").tool_calls[0]["args"]
            {'city': 'fake city'}
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        named = _tool_name(tool_choice)
        names = [tool["function"]["name"] for tool in formatted]
        if named is not None and named not in names:
            msg = f"tool_choice names {named!r}, which is not among the bound tools {names}"
            raise ValueError(msg)
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, Any]:
        """Answer with an instance of ``schema`` (pydantic, TypedDict or JSON schema), through a
        tool call or JSON content as ``method`` says.

        Example:
            >>> from pydantic import BaseModel
            >>> class Joke(BaseModel):
            ...     setup: str
            ...     rating: int = 5
            >>> FakeChatModel().with_structured_output(Joke).invoke("a joke")
            Joke(setup='fake setup', rating=5)
        """
        if kwargs:
            msg = f"Received unsupported arguments {kwargs}"
            raise ValueError(msg)
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        shown = {"kwargs": {"method": method}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            if schema is None:
                msg = "schema must be given for method='function_calling'"
                raise ValueError(msg)
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=shown
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_mode", "json_schema"):
            spec = None if schema is None else convert_to_openai_tool(schema)["function"]
            response_format: dict[str, Any] = {"type": "json_object"} if spec is None else {
                "type": "json_schema",
                "json_schema": {"name": spec["name"], "schema": spec.get("parameters", {})},
            }  # fmt: skip
            llm = self.bind(response_format=response_format, ls_structured_output_format=shown)
            parser = JsonOutputParser()
            if pydantic:
                parser = PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
        else:
            msg = f"method is 'function_calling', 'json_mode' or 'json_schema', not {method!r}"
            raise ValueError(msg)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parsed

    # -- answers ---------------------------------------------------------------------------

    def _value(self, schema: Mapping[str, Any], given: Mapping[str, Any] | None) -> Any:
        value = sample(schema)
        if isinstance(value, dict) and given:
            value.update(given)
        return value

    def _calls(self, tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
        named = _tool_name(choice)
        schemas = {t["function"]["name"]: t["function"].get("parameters", {}) for t in tools}
        wanted = [named] if named else list(schemas)
        configured = [c for c in self.tool_calls or () if c["name"] in wanted]
        # a named tool is how structured output asks: the row's object sets its fields
        chosen = configured or [
            {"name": wanted[0], "args": self.structured_output if named else None}
        ]
        calls = []
        for index, call in enumerate(chosen):
            args = self._value(schemas[call["name"]], call.get("args"))
            seed = (
                f"{self.model}\x00{call['name']}\x00{json.dumps(args, sort_keys=True)}\x00{index}"
            )
            digest = hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()
            calls.append({"name": call["name"], "args": args, "id": f"call_{digest}"})
        return calls

    def _text(self, stop: list[str] | None) -> tuple[str, str]:
        text = self.responses[next(self._turns) % len(self.responses)]
        reason = "stop"
        cut = min((i for s in stop or () if s and (i := text.find(s)) >= 0), default=None)
        if cut is not None:
            text = text[:cut]
        if self.max_tokens is not None and self.get_num_tokens(text) > self.max_tokens:
            text, reason = text[: 4 * self.max_tokens], "length"
        return text, reason

    def _reply(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        tools, choice = kwargs.get("tools") or [], kwargs.get("tool_choice")
        response_format = kwargs.get("response_format") or {}
        answered_tool = bool(messages) and isinstance(messages[-1], ToolMessage)
        forced = choice in ("any", "required", True) or _tool_name(choice) is not None
        calls: list[dict[str, Any]] = []
        if response_format:
            schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
            content, reason = json.dumps(self._value(schema, self.structured_output)), "stop"
        elif tools and choice != "none" and (forced or not answered_tool):
            content, reason = "", "tool_calls"
            calls = self._calls(tools, choice)
        else:
            content, reason = self._text(stop if stop is not None else self.stop)
        said = content + "".join(json.dumps(c["args"]) for c in calls)
        input_tokens = self.get_num_tokens(get_buffer_string(messages))
        output_tokens = self.get_num_tokens(said)
        return AIMessage(
            content=content,
            tool_calls=calls,
            response_metadata={
                "model_name": kwargs.get("model") or self.model,
                "finish_reason": reason,
                "model_provider": "fake",
            },
            usage_metadata={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        )

    def _chunks(self, message: AIMessage) -> Iterator[ChatGenerationChunk]:
        # Word by word, then the tool calls; usage and finish reason on the last chunk.
        words = re.findall(r"\s*\S+\s*", str(message.content)) or [""]
        parts: list[AIMessageChunk] = [AIMessageChunk(content=word) for word in words]
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(message.tool_calls)
        ]
        if calls:
            parts.append(AIMessageChunk(content="", tool_call_chunks=calls))
        usage = message.usage_metadata if self.stream_usage else None
        parts.append(
            AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata=message.response_metadata,
                chunk_position="last",
            )
        )
        for part in parts:
            yield ChatGenerationChunk(message=part)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._fail()
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, stop, kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self._afail()
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, stop, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._fail()
        for chunk in self._chunks(self._reply(messages, stop, kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self._afail()
        for chunk in self._chunks(self._reply(messages, stop, kwargs)):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


class FakeEmbeddings(Failures, Embeddings):
    """Deterministic embeddings from a BLAKE2b digest of the model name and the text."""

    model_config = ConfigDict(extra="forbid")

    dimensions: int = Field(default=8, ge=1, le=4096)

    def _vector(self, text: str) -> list[float]:
        count = self.dimensions
        seed = f"{self.model}\x00{text}".encode("utf-8", "surrogatepass")
        digest = b"".join(
            hashlib.blake2b(seed, digest_size=64, salt=block.to_bytes(16, "big")).digest()
            for block in range(-(-4 * count // 64))  # 64 bytes, 16 numbers, per block
        )
        numbers = struct.unpack(f">{count}I", digest[: 4 * count])
        return [n / 2_147_483_648.0 - 1.0 for n in numbers]

    @property
    def timeout(self) -> float:
        """Seconds a call may wait: no I/O, only its ``sleep`` (what a deadline reads)."""
        return float(self.sleep or 0.0)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return one vector per text."""
        self._fail()
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        """Return the text's vector."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of `embed_documents` (no thread: nothing blocks)."""
        await self._afail()
        return [self._vector(text) for text in texts]

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of `embed_query`."""
        return (await self.aembed_documents([text]))[0]


__all__ = ["FakeChatModel", "FakeEmbeddings"]
