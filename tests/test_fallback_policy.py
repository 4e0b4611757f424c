"""The fallback policy on real clients: deadlines, Retry-After, and error events inside streams."""

from __future__ import annotations

import importlib
import threading
import time
from email.utils import formatdate
from types import ModuleType
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from servers import AnthropicServer, OllamaServer, OpenAIServer, ProviderServer, Status, StreamError

from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy, Outcome, classify_error, retry_after
from llmpool.models import LLMConfig
from llmpool.providers.fake import FakeChatModel


def client(server: ProviderServer, **config: Any) -> Any:
    """A real LangChain client of the server's wire format, SDK retries off."""
    if isinstance(server, AnthropicServer):
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model="m", api_key="k", base_url=server.url, max_retries=0, **config)  # type: ignore[call-arg]
    if isinstance(server, OllamaServer):
        from langchain_ollama import ChatOllama

        return ChatOllama(model="m", base_url=server.url, **config)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0, **config)


def pair(primary: ProviderServer, secondary: ProviderServer, **policy: Any) -> FallbackChatModel:
    """Primary then Secondary, each a real client of its server."""
    rows = [
        LLMConfig(id="p", name="Primary", provider="x", model_name="m"),
        LLMConfig(id="s", name="Secondary", provider="x", model_name="m"),
    ]
    settings = {"attempts": 1, "backoff_initial": 0.001, "backoff_jitter": 0, **policy}
    return FallbackChatModel(
        candidates=[Candidate(rows[0], client(primary)), Candidate(rows[1], client(secondary))],
        policy=FallbackPolicy(**settings),
    )


SERVERS = {
    "openai": (OpenAIServer, "server_error"),
    "anthropic": (AnthropicServer, "overloaded_error"),
    "ollama": (OllamaServer, "server_error"),
}


@pytest.mark.parametrize("provider", SERVERS)
def test_an_error_event_before_the_first_chunk_falls_back(provider: str) -> None:
    """A provider's in-stream error event before any content switches to the next candidate."""
    cls, kind = SERVERS[provider]
    with cls() as primary, OpenAIServer() as secondary:
        primary.script(StreamError(after=0, kind=kind))
        llm = pair(primary, secondary)
        text = "".join(str(chunk.content) for chunk in llm.stream("hi"))
        assert text == "Hello from the local server."
        assert (primary.count, secondary.count) == (1, 1)


@pytest.mark.parametrize("provider", SERVERS)
async def test_an_error_event_after_chunks_raises_mid_stream_error(provider: str) -> None:
    """A provider's in-stream error event after content raises MidStreamError, no switch."""
    cls, kind = SERVERS[provider]
    with cls() as primary, OpenAIServer() as secondary:
        primary.script(StreamError(after=2, kind=kind, text="one two three four five six"))
        llm = pair(primary, secondary)
        received: list[str] = []
        with pytest.raises(MidStreamError) as info:
            async for chunk in llm.astream("hi"):
                received.append(str(chunk.content))
        assert info.value.partial_text == "".join(received)
        assert info.value.partial_text.startswith("one two")
        assert secondary.count == 0


def test_an_invalid_request_event_falls_back_without_retrying() -> None:
    """An in-stream error that blames the request is not retried on the same candidate."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(StreamError(kind="invalid_request_error"))
        llm = pair(primary, secondary, attempts=3)
        assert "".join(str(c.content) for c in llm.stream("hi"))
        assert primary.count == 1


def test_retry_after_longer_than_the_backoff_cap_falls_back_at_once() -> None:
    """A 429 asking for 30 s, with a 4 s cap: no early retry, the next candidate answers."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(429, headers={"retry-after": "30"}))
        llm = pair(primary, secondary, attempts=3, backoff_max=4)
        started = time.monotonic()
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Secondary"
        assert time.monotonic() - started < 4
        assert primary.count == 1


def test_retry_after_within_the_cap_is_waited_for() -> None:
    """A 429 asking for 0.4 s is retried on the same candidate no sooner than asked."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(429, headers={"retry-after-ms": "400"}))
        llm = pair(primary, secondary, attempts=2, backoff_max=4)
        started = time.monotonic()
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Primary"
        assert time.monotonic() - started >= 0.4
        assert (primary.count, secondary.count) == (2, 0)


def test_retry_after_is_read_as_seconds_milliseconds_or_a_date() -> None:
    """Retry-After in seconds or as an HTTP date, and retry-after-ms, are all understood."""

    def error_with(headers: dict[str, str]) -> Exception:
        response = type("Response", (), {"headers": headers})()
        error = Exception("rate limited")
        error.response = response  # type: ignore[attr-defined]
        return error

    assert retry_after(error_with({"retry-after": "7"})) == 7.0
    assert retry_after(error_with({"retry-after-ms": "250"})) == 0.25
    in_20s = retry_after(error_with({"retry-after": formatdate(time.time() + 20, usegmt=True)}))
    assert in_20s is not None and 15 < in_20s <= 20
    assert retry_after(error_with({"retry-after": "soon"})) is None
    assert retry_after(error_with({})) is None


def test_a_retry_that_would_end_past_the_deadline_falls_back_instead() -> None:
    """With 2 s left and a 5 s backoff, the next candidate answers at once (2 s: room for a
    cold client's first request on a busy machine)."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(500))
        llm = pair(primary, secondary, attempts=3, backoff_initial=5, deadline=2.0)
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Secondary"
        assert primary.count == 1


class Slow(FakeChatModel):
    """Fails after ``delay`` seconds, like a provider that times out."""

    delay: float = 0.0
    calls: int = 0

    def _fail(self) -> None:
        self.calls += 1
        time.sleep(self.delay)
        raise TimeoutError("took too long")


def test_the_deadline_counts_the_first_attempt() -> None:
    """A first attempt that outlasts the deadline leaves no time for any other attempt."""
    first, second = Slow(delay=0.4), Slow()
    llm = FallbackChatModel(
        candidates=[
            Candidate(LLMConfig(id="a", name="A", provider="x", model_name="m"), first),
            Candidate(LLMConfig(id="b", name="B", provider="x", model_name="m"), second),
        ],
        policy=FallbackPolicy(attempts=3, deadline=0.2, backoff_initial=0.001),
    )
    with pytest.raises(AllLLMsFailedError, match="deadline passed"):
        llm.invoke("hi")
    assert (first.calls, second.calls) == (1, 0)


def test_batch_with_return_exceptions_returns_each_inputs_outcome() -> None:
    """batch(return_exceptions=True) gives the answer or the all-failed error per input."""
    row = LLMConfig(id="a", name="A", provider="x", model_name="m")
    llm = FallbackChatModel(
        candidates=[Candidate(row, FakeChatModel(error="down"))],
        policy=FallbackPolicy(attempts=1),
    )
    results = llm.batch(["one", "two"], return_exceptions=True)
    assert all(isinstance(result, AllLLMsFailedError) for result in results)


def sdk_request(sdk: ModuleType) -> Any:
    """A request of the HTTP library ``sdk`` is built on, the one whose ``Timeout`` it exports:
    httpx for openai 2 and anthropic 0.x, httpx2 for openai 3 and anthropic 2.17."""
    for name in ("httpx2", "httpx"):
        try:
            http = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(http, "Timeout", None) is sdk.Timeout:
            return http.Request("POST", "http://127.0.0.1/v1/chat/completions")
    pytest.fail(f"{sdk.__name__} exports a Timeout of neither httpx nor httpx2")


@pytest.mark.parametrize("sdk_name", ["openai", "anthropic"])
def test_the_sdk_error_without_a_status_is_a_provider_error_not_a_bug(sdk_name: str) -> None:
    """An SDK error class with no HTTP status is retried; a plain ValueError still propagates."""
    sdk = importlib.import_module(sdk_name)
    error = sdk.APIError("stream broke", sdk_request(sdk), body={"type": "server_error"})
    assert classify_error(error) is Outcome.RETRY
    assert classify_error(ValueError("stream broke")) is Outcome.PROPAGATE


class Parents(BaseCallbackHandler):
    """Records every run's parent, and the chat model runs in order."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}
        self.chat_runs: list[Any] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self.parent[run_id] = parent_run_id
        self.chat_runs.append(run_id)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self.parent[run_id] = parent_run_id

    def ancestors(self, run_id: Any) -> list[Any]:
        """The run's parents, nearest first."""
        chain = []
        while (run_id := self.parent.get(run_id)) is not None:
            chain.append(run_id)
        return chain


def test_generate_is_one_chat_model_run_per_prompt() -> None:
    """Called through generate(), each prompt is one chat-model run, whichever candidate
    answered: its attempts open no run of their own (usage is reported once)."""
    parents = Parents()
    row = LLMConfig(id="a", name="A", provider="x", model_name="m")
    llm = FallbackChatModel(candidates=[Candidate(row, FakeChatModel())])
    result = llm.generate([[HumanMessage("hi")], [HumanMessage("ho")]], callbacks=[parents])
    assert result.run is not None
    assert sorted(parents.chat_runs) == sorted(run.run_id for run in result.run)
    assert all(parents.parent[run] is None for run in parents.chat_runs)


def _ran_in(readers: Any, idle_after: int) -> threading.Thread:
    """Run one read in ``readers`` and return its reader thread, once it is idle again."""
    ran: list[threading.Thread] = []
    readers.run(lambda: ran.append(threading.current_thread()))
    end = time.monotonic() + 5
    while not (ran and len(readers._idle) == idle_after) and time.monotonic() < end:
        time.sleep(0.001)
    assert ran and len(readers._idle) == idle_after
    return ran[0]


def test_bounded_reads_reuse_idle_reader_threads_and_never_one_held_by_an_abandoned_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync attempt cut at the deadline is read in a reader thread: the next read takes an
    idle one; a read still held by an abandoned call gets a new thread; an idle one ends."""
    from llmpool.fallback import bounded

    monkeypatch.setattr(bounded, "_IDLE", 0.5)
    readers = bounded._Readers()
    first = _ran_in(readers, 1)
    assert _ran_in(readers, 1) is first
    release = threading.Event()
    readers.run(release.wait)  # an abandoned call: it holds its thread
    second = _ran_in(readers, 1)
    assert second is not first and second.name == "llmpool-read" and second.daemon
    release.set()
    first.join(5)
    second.join(5)  # idle for 0.5 s: both end
    assert not first.is_alive() and not second.is_alive() and not readers._idle
    assert _ran_in(readers, 1) not in (first, second)
