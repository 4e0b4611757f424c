"""The fallback chat model's contract, with scripted models: what falls back and what does not."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from pydantic import BaseModel
from servers import OpenAIServer, Reply, Status

from llmpool.chain.builder import ScopeChain, ensure_buildable
from llmpool.errors import AllLLMsFailedError, AllLLMsFailedToInitializeError, MissingSecretError
from llmpool.fallback.breakers import Admission, BreakerBoard
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy, Outcome, classify_error
from llmpool.models import LLMConfig
from llmpool.providers.failures import APIConnectionError, APIError
from llmpool.providers.fake import FakeChatModel

FAST = FallbackPolicy(attempts=1)


def row(name: str, priority: int = 10) -> LLMConfig:
    """A fake row."""
    return LLMConfig(id=f"id-{name}", name=name, provider="fake", model_name="m", priority=priority)


class Raising(FakeChatModel):
    """A model that raises a given exception."""

    exc: Any = None

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc


def test_a_bug_in_the_candidate_propagates_instead_of_falling_back() -> None:
    """A TypeError is a bug, not an outage: it is raised, the next candidate is not tried."""
    second = FakeChatModel(responses=["should not answer"])
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), Raising(exc=TypeError("bad argument"))),
            Candidate(row("b"), second),
        ],
        policy=FAST,
    )
    with pytest.raises(TypeError, match="bad argument"):
        llm.invoke("hi")


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_propagate_at_once(exc: BaseException) -> None:
    """KeyboardInterrupt and SystemExit are never swallowed or retried."""
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), Raising(exc=exc)),
            Candidate(row("b"), FakeChatModel()),
        ]
    )
    with pytest.raises(type(exc)):
        llm.invoke("hi")


async def test_cancellation_propagates_at_once() -> None:
    """Cancelling an ainvoke cancels it; no other candidate is started."""
    started = asyncio.Event()

    class Slow(FakeChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            started.set()
            await asyncio.sleep(30)

    second = FakeChatModel(responses=["no"])
    llm = FallbackChatModel(candidates=[Candidate(row("a"), Slow()), Candidate(row("b"), second)])
    task = asyncio.create_task(llm.ainvoke("hi"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_unbuildable_candidates_are_skipped_with_their_reason() -> None:
    """A row that could not be built is skipped; the answer says why in its attempts."""
    missing = MissingSecretError("OPENAI_API_KEY is not set", variable="OPENAI_API_KEY")
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), error=missing),
            Candidate(row("b"), FakeChatModel(responses=["b answers"])),
        ]
    )
    answer = llm.invoke("hi")
    attempts = answer.response_metadata["llmpool"]["attempts"]
    assert attempts[0]["outcome"] == "skipped"
    assert "OPENAI_API_KEY" in attempts[0]["reason"]


def test_nothing_buildable_raises_all_llms_failed_to_initialize() -> None:
    """No buildable candidate: "All LLMs failed to initialize", listing every row and why."""
    candidates = [
        Candidate(
            row("GPT-4"),
            error=MissingSecretError("OPENAI_API_KEY is not set", variable="OPENAI_API_KEY"),
        ),
        Candidate(row("Claude"), error=ImportError("langchain-anthropic missing")),
    ]
    with pytest.raises(AllLLMsFailedToInitializeError) as info:
        ensure_buildable(candidates, scope="global")
    message = str(info.value)
    assert message.startswith("All LLMs failed to initialize")
    assert "GPT-4" in message
    assert "OPENAI_API_KEY" in message
    assert "Claude" in message
    assert isinstance(info.value, RuntimeError)


def test_all_failing_at_runtime_lists_every_candidate_in_order() -> None:
    """One AllLLMsFailedError lists each candidate and its error, originals kept."""
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), FakeChatModel(error="a is down")),
            Candidate(row("b"), FakeChatModel(error="b is down")),
        ],
        policy=FAST,
    )
    with pytest.raises(AllLLMsFailedError) as info:
        llm.invoke("hi")
    assert [f.name for f in info.value.failures] == ["a", "b"]
    assert [str(f.error) for f in info.value.failures] == ["a is down", "b is down"]
    assert "1. LLM 'a'" in str(info.value)
    assert "2. LLM 'b'" in str(info.value)


def test_code_supplied_fallbacks_come_after_the_database_rows() -> None:
    """The seed's main.py pattern: a model from the environment after every row."""
    local = FakeChatModel(model="llama2", responses=["local answer"])
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), FakeChatModel(error="down"))],
        fallbacks=[local],
        policy=FAST,
    )
    answer = llm.invoke("hi")
    assert answer.content == "local answer"
    assert answer.response_metadata["llmpool"]["name"] == "code:FakeChatModel(llama2)"


class Live:
    """A live chain source over a list of candidates the test changes."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates

    def current(self) -> ScopeChain:
        return ScopeChain(None, "chat", 0, tuple(self.candidates))


def test_live_source_is_read_at_every_call() -> None:
    """A runnable built once follows its source: a new first candidate answers next call."""
    chain = [Candidate(row("a"), FakeChatModel(responses=["a"]))]
    llm = FallbackChatModel(chain=Live(chain))
    assert llm.invoke("x").content == "a"
    chain.insert(0, Candidate(row("b", 1), FakeChatModel(responses=["b"])))
    assert llm.invoke("x").content == "b"


def test_batch_and_abatch_fall_back_per_input() -> None:
    """batch and abatch go through the same failover."""
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), FakeChatModel(error="down")),
            Candidate(row("b"), FakeChatModel(responses=["ok"])),
        ],
        policy=FallbackPolicy(attempts=1, failure_threshold=100),
    )
    assert [m.content for m in llm.batch(["1", "2", "3"])] == ["ok", "ok", "ok"]
    assert [m.content for m in asyncio.run(llm.abatch(["1", "2"]))] == ["ok", "ok"]


def test_it_is_a_chat_model_for_code_that_requires_one() -> None:
    """isinstance checks for BaseChatModel pass, and generate() works."""
    llm = FallbackChatModel(candidates=[Candidate(row("a"), FakeChatModel(responses=["g"]))])
    assert isinstance(llm, BaseChatModel)
    result = llm.generate([[AIMessage(content="hi")]])
    assert result.generations[0][0].text == "g"


@tool
def get_weather(city: str) -> str:
    """Return the weather of a city."""
    return f"sunny in {city}"


def test_bind_tools_applies_to_every_candidate_and_skips_one_that_cannot() -> None:
    """bind_tools binds each candidate; a model without tool support is skipped, recorded."""
    from langchain_openai import ChatOpenAI

    with OpenAIServer() as server:
        server.script(Status(500), Reply(tool_call=("get_weather", {"city": "Paris"})))
        openai_row = LLMConfig(id="o", name="OpenAI", provider="openai", model_name="gpt-4")
        llm = FallbackChatModel(
            candidates=[
                Candidate(row("no-tools"), FakeListChatModel(responses=["x"])),
                Candidate(
                    openai_row.model_copy(update={"id": "o1", "name": "Flaky"}),
                    ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
                ),
                Candidate(
                    openai_row,
                    ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
                ),
            ],
            policy=FAST,
        )
        answer = llm.bind_tools([get_weather]).invoke("weather in Paris?")
        assert answer.tool_calls[0]["name"] == "get_weather"
        assert answer.tool_calls[0]["args"] == {"city": "Paris"}
        attempts = answer.response_metadata["llmpool"]["attempts"]
        assert [(a["name"], a["outcome"]) for a in attempts] == [
            ("no-tools", "skipped"),
            ("Flaky", "error"),
            ("OpenAI", "ok"),
        ]
        assert "tools" in server.requests[-1].body


class Weather(BaseModel):
    """Structured answer."""

    city: str


def test_with_structured_output_falls_back() -> None:
    """with_structured_output is applied to each candidate and still falls back."""
    from langchain_openai import ChatOpenAI

    with OpenAIServer() as down, OpenAIServer() as up:
        down.script(Status(503))
        up.script(Reply(tool_call=("Weather", {"city": "Oslo"})))
        llm = FallbackChatModel(
            candidates=[
                Candidate(
                    row("down"),
                    ChatOpenAI(model="m", api_key="k", base_url=down.url + "/v1", max_retries=0),
                ),
                Candidate(
                    row("up"),
                    ChatOpenAI(model="m", api_key="k", base_url=up.url + "/v1", max_retries=0),
                ),
            ],
            policy=FAST,
        )
        structured = llm.with_structured_output(Weather, method="function_calling")
        assert structured.invoke("weather?") == Weather(city="Oslo")


def test_create_agent_accepts_it_and_runs_a_tool_call() -> None:
    """langchain's create_agent takes the fallback model and runs a tool through it."""
    from langchain.agents import create_agent
    from langchain_openai import ChatOpenAI

    with OpenAIServer() as server:
        server.script(
            Status(500),
            Reply(tool_call=("get_weather", {"city": "Rome"})),
            Reply("It is sunny in Rome."),
        )
        llm = FallbackChatModel(
            candidates=[
                Candidate(row("down"), FakeChatModel(error="down")),
                Candidate(
                    row("openai"),
                    ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
                ),
            ],
            policy=FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_jitter=0),
        )
        agent = create_agent(llm, tools=[get_weather])
        result = agent.invoke({"messages": [("user", "Weather in Rome?")]})
        assert result["messages"][-1].content == "It is sunny in Rome."
        assert any(m.type == "tool" and "sunny in Rome" in m.content for m in result["messages"])


class Recorder(BaseCallbackHandler):
    """Records chain and chat model runs with their parents."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, UUID | None]] = []

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append(("chain", kwargs.get("name") or "", parent_run_id))

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append(("chat", kwargs.get("name") or "", parent_run_id))


def test_callbacks_see_one_chat_model_run_whichever_row_answered() -> None:
    """With callbacks, a call that failed over is one chat-model run, as a bare model's call
    is; its attempts are in the answer's metadata."""
    recorder = Recorder()
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("GPT-4"), FakeChatModel(error="down")),
            Candidate(row("Ollama"), FakeChatModel(responses=["ok"])),
        ],
        policy=FAST,
    )
    answer = llm.invoke("hi", {"callbacks": [recorder]})
    assert [kind for kind, _, _ in recorder.runs] == ["chat"]
    assert recorder.runs[0][2] is None
    attempts = answer.response_metadata["llmpool"]["attempts"]
    assert [(a["name"], a["outcome"]) for a in attempts] == [("GPT-4", "error"), ("Ollama", "ok")]


def test_only_one_half_open_probe_goes_out_at_a_time() -> None:
    """After the cooldown, of many concurrent callers exactly one gets the probe."""
    now = [0.0]
    board = BreakerBoard(clock=lambda: now[0])
    board.failure("k", threshold=1, cooldown=lambda trips: 10.0)
    assert board.admit("k") is Admission.OPEN
    now[0] = 11.0
    results: list[Admission] = []
    barrier = threading.Barrier(20)

    def admit() -> None:
        barrier.wait()
        results.append(board.admit("k"))

    threads = [threading.Thread(target=admit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(Admission.PROBE) == 1
    board.success("k")
    assert board.admit("k") is Admission.CLOSED


class Flaky(FakeChatModel):
    """A model that fails while its ``down`` flag is set."""

    down: bool = False

    def _drawn_error(self) -> APIError | None:
        return APIConnectionError("down") if self.down else None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_success_clears_earlier_failures_so_only_consecutive_ones_open_the_breaker(
    mode: str,
) -> None:
    """Fail, answer, fail: with a threshold of two the breaker stays closed."""
    flaky = Flaky(responses=["primary"])
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), flaky), Candidate(row("b"), FakeChatModel())],
        policy=FallbackPolicy(attempts=1, failure_threshold=2),
    )

    def call() -> Any:
        return llm.invoke("hi") if mode == "sync" else asyncio.run(llm.ainvoke("hi"))

    for down in (True, False, True):
        flaky.down = down
        answer = call()
        assert answer.response_metadata["llmpool"]["name"] == ("b" if down else "a")
    assert llm.breakers.admit("id-a") is Admission.CLOSED
    flaky.down = True
    call()
    assert llm.breakers.admit("id-a") is Admission.OPEN


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ConnectionRefusedError(), Outcome.RETRY),
        (TimeoutError(), Outcome.RETRY),
        (TypeError(), Outcome.PROPAGATE),
        (KeyError("x"), Outcome.PROPAGATE),
        (ValueError("bad"), Outcome.PROPAGATE),
    ],
)
def test_classification_of_plain_errors(error: BaseException, outcome: Outcome) -> None:
    """Connection errors and timeouts retry; programming errors propagate."""
    assert classify_error(error) is outcome


def test_policy_refuses_nonsense() -> None:
    """A policy with zero attempts is a configuration error."""
    with pytest.raises(ValueError, match="attempts"):
        FallbackPolicy(attempts=0)
    assert FallbackPolicy(cooldown=10, cooldown_multiplier=2, max_cooldown=25).cooldown_for(3) == 25
