"""Hostile providers: unreadable 200 answers fall back, hung attempts end at the deadline."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from servers import (
    AnthropicServer,
    Garbage,
    Hang,
    OllamaServer,
    OpenAIServer,
    ProviderServer,
    Stall,
)

from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.breakers import Admission, BreakerBoard
from llmpool.fallback.calls import client_timeout
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy, Outcome, classify_error
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

SECONDARY_ANSWER = "Hello from the local server."
SERVERS: dict[str, type[ProviderServer]] = {
    "openai": OpenAIServer,
    "anthropic": AnthropicServer,
    "ollama": OllamaServer,
}
MODES = ("invoke", "ainvoke", "stream", "astream")


def client(server: ProviderServer, timeout: float | None) -> Any:
    """A real LangChain client of the server's wire format, SDK retries off."""
    if isinstance(server, AnthropicServer):
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(  # type: ignore[call-arg]
            model="m", api_key="k", base_url=server.url, max_retries=0, timeout=timeout
        )
    if isinstance(server, OllamaServer):
        from langchain_ollama import ChatOllama

        return ChatOllama(model="m", base_url=server.url, client_kwargs={"timeout": timeout})
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="m", api_key="k", base_url=server.url + "/v1", max_retries=0, timeout=timeout
    )


def pair(
    primary: ProviderServer,
    secondary: ProviderServer,
    *,
    timeout: float | None = 10.0,
    breakers: BreakerBoard | None = None,
    **policy: Any,
) -> FallbackChatModel:
    """Primary then Secondary, each a real client of its server; the primary's timeout given."""
    rows = [
        LLMConfig(id="p", name="Primary", provider="x", model_name="m"),
        LLMConfig(id="s", name="Secondary", provider="x", model_name="m"),
    ]
    settings = {"attempts": 1, "backoff_initial": 0.001, "backoff_jitter": 0, **policy}
    return FallbackChatModel(
        candidates=[
            Candidate(rows[0], client(primary, timeout)),
            Candidate(rows[1], client(secondary, 10.0)),
        ],
        policy=FallbackPolicy(**settings),
        breakers=breakers or BreakerBoard(),
    )


def call(llm: Any, mode: str, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Run the call in ``mode``; return the text and the ``llmpool`` metadata."""

    async def collect() -> list[Any]:
        return [chunk async for chunk in llm.astream(*args, **kwargs)]

    if mode in ("invoke", "ainvoke"):
        if mode == "invoke":
            answer = llm.invoke(*args, **kwargs)
        else:
            answer = asyncio.run(llm.ainvoke(*args, **kwargs))
        return str(answer.content), answer.response_metadata["llmpool"]
    chunks = list(llm.stream(*args, **kwargs)) if mode == "stream" else asyncio.run(collect())
    meta = next(c.response_metadata["llmpool"] for c in chunks if c.response_metadata)
    return "".join(str(c.content) for c in chunks), meta


def outcomes(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The (name, outcome) of each attempt."""
    return [(a["name"], a["outcome"]) for a in meta["attempts"]]


# -- a 200 whose body the client cannot read ----------------------------------------------------

# The SDKs' pydantic models warn while they serialize a body of the wrong shape.
unexpected_shape = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

GARBAGE_ANSWERS = {
    "html-as-json": Garbage("<html><body>502 Bad Gateway</body></html>"),
    "text-plain": Garbage("upstream is warming up", content_type="text/plain"),
    "empty-object": Garbage("{}"),
    "null-choices": Garbage('{"choices": null}'),
    "wrong-shape": Garbage('{"choices": "none", "content": 5, "message": []}'),
}


@unexpected_shape
@pytest.mark.parametrize("body", GARBAGE_ANSWERS)
@pytest.mark.parametrize("provider", SERVERS)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_an_unreadable_answer_falls_back_to_the_secondary(
    mode: str, provider: str, body: str
) -> None:
    """A 200 the client cannot read is the primary's failure: the secondary answers."""
    with SERVERS[provider]() as primary, OpenAIServer() as secondary:
        primary.script(GARBAGE_ANSWERS[body])
        text, meta = call(pair(primary, secondary), mode, "hi")
        assert text == SECONDARY_ANSWER
        assert outcomes(meta) == [("Primary", "error"), ("Secondary", "ok")]
        assert (primary.count, secondary.count) == (1, 1)


GARBAGE_STREAMS = {
    "not-json-lines": Garbage("<html>\nnot an event\n<<>>"),
    "wrong-shape-lines": Garbage('{"choices": "none"}\n[1, 2]'),
}


@unexpected_shape
@pytest.mark.parametrize("body", GARBAGE_STREAMS)
@pytest.mark.parametrize("provider", SERVERS)
@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_an_unreadable_stream_falls_back_to_the_secondary(
    mode: str, provider: str, body: str
) -> None:
    """A stream of lines the client cannot read switches to the secondary before any text."""
    with SERVERS[provider]() as primary, OpenAIServer() as secondary:
        primary.script(GARBAGE_STREAMS[body])
        text, meta = call(pair(primary, secondary), mode, "hi")
        assert text == SECONDARY_ANSWER
        assert outcomes(meta) == [("Primary", "error"), ("Secondary", "ok")]


@pytest.mark.parametrize("mode", MODES)
def test_an_unreadable_answer_falls_back_under_the_deadline_bound(mode: str) -> None:
    """Without a client timeout (the attempt runs under the deadline) garbage still falls back."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Garbage("<html>proxy</html>"))
        text, meta = call(pair(primary, secondary, timeout=None), mode, "hi")
        assert text == SECONDARY_ANSWER
        assert meta["attempts"][0]["error"].startswith("JSONDecodeError")


def test_an_unreadable_answer_counts_against_the_breaker() -> None:
    """Garbage is the candidate's failure: with a threshold of one its breaker opens."""
    board = BreakerBoard()
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Garbage('{"choices": null}'))
        llm = pair(primary, secondary, breakers=board, failure_threshold=1)
        assert call(llm, "invoke", "hi")[0] == SECONDARY_ANSWER
        assert board.admit("p") is Admission.OPEN


# -- the caller's bugs still propagate ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_input_langchain_rejects_propagates(mode: str) -> None:
    """``invoke(123)`` is the caller's mistake: the ValueError is raised, nobody is called."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        with pytest.raises(ValueError, match="Invalid input type"):
            call(pair(primary, secondary), mode, 123)
        assert (primary.count, secondary.count) == (0, 0)


@pytest.mark.parametrize("provider", SERVERS)
@pytest.mark.parametrize("mode", MODES)
def test_an_unexpected_keyword_argument_propagates(mode: str, provider: str) -> None:
    """A keyword the provider's SDK does not take is a TypeError for the caller, no fallback."""
    with SERVERS[provider]() as primary, OpenAIServer() as secondary:
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus_option'"):
            call(pair(primary, secondary), mode, "hi", bogus_option=1)
        assert secondary.count == 0


class BuggyHandler(BaseCallbackHandler):
    """A callback handler with a bug, whose errors LangChain re-raises."""

    raise_error = True

    def __init__(self, where: str) -> None:
        self.where = where

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        if self.where == "start":
            raise TypeError("handler bug at start")

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        if self.where == "token":
            raise KeyError("handler bug on a token")

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        if self.where == "end":
            raise AttributeError("handler bug at the end")


@pytest.mark.parametrize(
    ("where", "error", "modes"),
    [
        ("start", TypeError, MODES),
        ("token", KeyError, ("stream", "astream")),
        ("end", AttributeError, ("invoke", "ainvoke")),
    ],
)
def test_a_bug_in_the_callers_callback_handler_propagates(
    where: str, error: type[Exception], modes: tuple[str, ...]
) -> None:
    """A handler's own error (raise_error=True) reaches the caller; the secondary is not tried."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        llm = pair(primary, secondary)
        for mode in modes:
            with pytest.raises(error, match="handler bug"):
                call(llm, mode, "hi", {"callbacks": [BuggyHandler(where)]})
        assert secondary.count == 0


INSTALLED_HANDLER = """
from langchain_core.callbacks import BaseCallbackHandler


class InstalledHandler(BaseCallbackHandler):
    raise_error = True

    def on_chat_model_start(self, *args, **kwargs):
        raise TypeError("installed handler bug")
"""


def test_a_bug_in_an_installed_callback_handler_propagates() -> None:
    """A handler from an installed package is still the caller's: LangChain called it."""
    namespace: dict[str, Any] = {"__name__": "acme_tracing.handlers"}
    code = compile(INSTALLED_HANDLER, "/venv/site-packages/acme_tracing/handlers.py", "exec")
    exec(code, namespace)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        llm = pair(primary, secondary)
        with pytest.raises(TypeError, match="installed handler bug"):
            llm.invoke("hi", {"callbacks": [namespace["InstalledHandler"]()]})
        assert secondary.count == 0


def test_plain_errors_without_a_provider_in_their_traceback_still_propagate() -> None:
    """A ValueError, TypeError or KeyError raised by the caller's own code is a bug."""
    for error in (ValueError("bad"), TypeError("bad"), KeyError("bad"), IndexError("bad")):
        with pytest.raises(type(error)) as info:
            raise error
        assert classify_error(info.value) is Outcome.PROPAGATE


# -- no attempt outlives the deadline -----------------------------------------------------------


@pytest.mark.parametrize("provider", SERVERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_hung_primary_without_a_client_timeout_ends_at_the_deadline(
    mode: str, provider: str
) -> None:
    """A 1 s deadline ends a call to a server hanging 10 s within 3 s, naming the deadline."""
    with SERVERS[provider]() as primary, OpenAIServer() as secondary:
        primary.script(Hang(10))
        llm = pair(primary, secondary, timeout=None, attempts=2, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(AllLLMsFailedError, match="deadline") as info:
            call(llm, mode, "hi")
        assert time.monotonic() - started < 3
        first, second = info.value.failures
        assert first.name == "Primary"
        assert first.reason.startswith("TimeoutError: no answer within the call's 1.0s deadline")
        assert second.reason == "not tried: the 1.0s deadline passed"
        assert secondary.count == 0


def test_an_abandoned_attempt_leaves_a_warning_naming_its_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator sees which row was given up on at the deadline."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Hang(10))
        llm = pair(primary, secondary, timeout=None, deadline=0.5)
        with caplog.at_level("WARNING", logger="llmpool"), pytest.raises(AllLLMsFailedError):
            llm.invoke("hi")
    # (the walk's own failover and all-failed records come from `llmpool.calls`)
    (record,) = [r for r in caplog.records if r.name == "llmpool.fallback.calls"]
    assert record.levelname == "WARNING"
    assert "LLM 'Primary' (id p)" in record.getMessage()
    assert (record.llm_id, record.llm_name, record.deadline) == ("p", "Primary", 0.5)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_that_stalls_mid_answer_ends_at_the_deadline(mode: str) -> None:
    """A stream that stops sending after its first words raises MidStreamError at the deadline."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Stall(after=2, seconds=10, text="one two three four five six"))
        # 2 s: the first words must arrive before the deadline, on a loaded machine too
        llm = pair(primary, secondary, timeout=None, deadline=2.0)
        received: list[str] = []

        async def consume() -> None:
            async for chunk in llm.astream("hi"):
                received.append(str(chunk.content))

        started = time.monotonic()
        with pytest.raises(MidStreamError, match="deadline") as info:
            if mode == "stream":
                received.extend(str(chunk.content) for chunk in llm.stream("hi"))
            else:
                asyncio.run(consume())
        assert time.monotonic() - started < 4
        assert info.value.partial_text == "".join(received)
        assert info.value.partial_text.startswith("one two")
        assert secondary.count == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_hung_probe_gives_its_slot_back_at_the_deadline(mode: str) -> None:
    """A half-open probe stuck in a hung call fails at the deadline and frees the probe slot."""
    now = [1_000_000.0]
    board = BreakerBoard(clock=lambda: now[0])
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Hang(10))
        board.failure("p", threshold=1, cooldown=lambda trips: 30.0 * trips)
        now[0] += 31  # the cooldown is over: this call probes the primary
        llm = pair(primary, secondary, timeout=None, breakers=board, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(AllLLMsFailedError, match="deadline"):
            call(llm, mode, "hi")
        assert time.monotonic() - started < 3
        state = board.store.get("p")
        assert state is not None
        assert state.probe_until == 0.0
        assert state.trips == 2  # the probe's failure reopened it with a longer cooldown
        now[0] += 61
        assert board.admit("p") is Admission.PROBE


def recording_threads(llm: FallbackChatModel) -> list[int]:
    """Make the primary's client note the thread each of its requests is sent from."""
    idents: list[int] = []
    model = llm.candidates[0].model
    generate, stream = model._generate, model._stream

    def noting_generate(*args: Any, **kwargs: Any) -> Any:
        idents.append(threading.get_ident())
        return generate(*args, **kwargs)

    def noting_stream(*args: Any, **kwargs: Any) -> Any:
        idents.append(threading.get_ident())
        return stream(*args, **kwargs)

    object.__setattr__(model, "_generate", noting_generate)
    object.__setattr__(model, "_stream", noting_stream)
    return idents


@pytest.mark.parametrize(
    ("timeout", "in_caller_thread"), [(5.0, True), (None, False), (300.0, False)]
)
def test_only_an_attempt_that_could_outlive_the_deadline_runs_bounded(
    timeout: float | None, in_caller_thread: bool
) -> None:
    """A client that gives up before the deadline runs in the caller's thread, as before."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        llm = pair(primary, secondary, timeout=timeout, deadline=120.0)
        idents = recording_threads(llm)
        llm.invoke("hi")
        list(llm.stream("hi"))
    assert len(idents) == 2
    assert all((i == threading.get_ident()) is in_caller_thread for i in idents)


def test_the_fast_path_is_kept_for_a_client_that_gives_up_in_time() -> None:
    """A primary whose timeout fits the deadline is called directly, not in a thread."""

    def first_call(llm: FallbackChatModel) -> str:
        return type(next(llm._walk()).call).__name__

    with OpenAIServer() as primary, OpenAIServer() as secondary:
        assert first_call(pair(primary, secondary, timeout=5.0, deadline=120.0)) == "ChatCall"
        assert first_call(pair(primary, secondary, timeout=None, deadline=120.0)) == "Bounded"
        assert first_call(pair(primary, secondary, timeout=None, deadline=None)) == "ChatCall"


# -- reading a client's own timeout -------------------------------------------------------------


def build(kind: str, settings: dict[str, Any]) -> Any:
    """A chat model of ``kind`` with ``settings``; a ``timeout`` given as a dict becomes a
    ``Timeout`` of the HTTP library that kind's SDK is built on (`sdk_timeout`)."""
    from langchain_anthropic import ChatAnthropic
    from langchain_core.language_models import FakeListChatModel
    from langchain_ollama import ChatOllama
    from langchain_openai import ChatOpenAI

    settings = with_sdk_timeouts(kind, settings)
    if kind == "openai":
        return ChatOpenAI(model="m", api_key="k", **settings)
    if kind == "anthropic":
        return ChatAnthropic(model="m", api_key="k", **settings)
    if kind == "ollama":
        return ChatOllama(model="m", **settings)
    return FakeListChatModel(responses=["x"], **settings)


def sdk_timeout(kind: str) -> Any:
    """The ``Timeout`` class the client of ``kind`` accepts: the openai SDK's (``httpx.Timeout``
    before openai 3, ``httpx2.Timeout`` since), else ``httpx.Timeout`` (ollama's)."""
    if kind == "openai":
        import openai

        return openai.Timeout
    import httpx

    return httpx.Timeout


def with_sdk_timeouts(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with each ``timeout`` dict, at any depth, made into the SDK's Timeout."""
    made: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "timeout" and isinstance(value, dict):
            value = sdk_timeout(kind)(**value)
        elif isinstance(value, dict):
            value = with_sdk_timeouts(kind, value)
        made[key] = value
    return made


TIMEOUTS = {
    "openai": ("openai", {"timeout": 7}, 7.0),
    "openai-unset": ("openai", {}, math.inf),
    "openai-pair": ("openai", {"timeout": (3, 9)}, 9.0),
    "openai-sdk-timeout": ("openai", {"timeout": {"timeout": 5, "read": 30}}, 30.0),
    "openai-sdk-timeout-no-read": (
        "openai",
        {"timeout": {"timeout": 5, "read": None}},
        math.inf,
    ),
    "anthropic": ("anthropic", {"timeout": 8}, 8.0),
    "anthropic-unset": ("anthropic", {}, math.inf),
    "ollama": ("ollama", {"client_kwargs": {"timeout": 4}}, 4.0),
    "ollama-async-longer": (
        "ollama",
        {"client_kwargs": {"timeout": 4}, "async_client_kwargs": {"timeout": 40}},
        40.0,
    ),
    "ollama-sdk-timeout": ("ollama", {"client_kwargs": {"timeout": {"timeout": 6}}}, 6.0),
    "ollama-unset": ("ollama", {}, math.inf),
    "fake": ("fake", {}, 0.0),
    "fake-sleeping": ("fake", {"sleep": 2}, 2.0),
}


@pytest.mark.parametrize("case", TIMEOUTS)
def test_the_client_timeout_is_read_from_the_built_model(case: str) -> None:
    """Each client keeps its timeout in its own field; unset means unbounded."""
    kind, settings, seconds = TIMEOUTS[case]
    assert client_timeout(build(kind, settings)) == seconds


def test_rows_built_by_the_providers_never_take_the_bounded_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The providers' default timeout (60 s) fits the default deadline (120 s)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    rows = [
        {"name": name, "provider": name, "model_name": "m", "priority": i}
        | ({"auth_meta": {"api_key_env": env}} if env else {})
        for i, (name, env) in enumerate(
            [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("ollama", None)]
        )
    ]
    pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
    try:
        llm = pool.get_llm_with_fallback()
        candidates = llm._current().candidates
        assert [c.config.name for c in candidates] == ["openai", "anthropic", "ollama"]
        deadline = FallbackPolicy().deadline
        assert deadline is not None
        assert all(llm._call(c).timeout <= deadline for c in candidates)
    finally:
        pool.close()
