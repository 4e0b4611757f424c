"""FallbackChatModel as a LangChain chat model: binding, parameters, usage, agents, types."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from servers.openai_compat import OpenAICompatServer, ServerDown
from test_conformance import BACKUP_MODEL, MODEL, POLICY, rows

from llmpool.errors import InvalidConfigError
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers.fake import FakeChatModel
from llmpool.repository.memory import InMemoryStore


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


class Forecast(BaseModel):
    """A weather forecast."""

    summary: str


@pytest.fixture
def servers() -> Iterator[tuple[OpenAICompatServer, OpenAICompatServer, ServerDown]]:
    """A healthy primary's server, the backup's, and a server answering HTTP 500."""
    with OpenAICompatServer() as primary, OpenAICompatServer() as backup, ServerDown() as down:
        yield primary, backup, down


def _pool(primary: OpenAICompatServer, backup: OpenAICompatServer) -> LLMPool:
    return LLMPool(
        repository=InMemoryStore(rows(primary.url, backup.url)), policy=POLICY, poll_interval=0
    )


@pytest.fixture
def healthy(
    servers: tuple[OpenAICompatServer, OpenAICompatServer, ServerDown],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LLMPool]:
    """Two OpenAI rows, both answering."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pool = _pool(servers[0], servers[1])
    yield pool
    pool.close()


@pytest.fixture(params=["healthy", "primary down"])
def either(
    request: pytest.FixtureRequest,
    servers: tuple[OpenAICompatServer, OpenAICompatServer, ServerDown],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LLMPool]:
    """Two OpenAI rows; the primary's server healthy, or answering HTTP 500."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    primary, backup, down = servers
    pool = _pool(primary if request.param == "healthy" else down, backup)
    yield pool
    pool.close()


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


# -- binding ------------------------------------------------------------------------------------


def test_bind_tools_again_replaces_the_tool_set(healthy: LLMPool, servers: Any) -> None:
    """Binding a bound model again sends only the new tools, as ChatOpenAI does."""
    llm = healthy.get_llm_with_fallback()
    rebound = llm.bind_tools([get_weather]).bind_tools([magic_function])  # type: ignore[attr-defined]
    answer = rebound.invoke("What is magic_function(3)?")
    assert answer.tool_calls[0]["name"] == "magic_function"
    assert _tool_names(servers[0].requests[-1]) == ["magic_function"]


def test_tool_choice_reaches_the_provider(healthy: LLMPool, servers: Any) -> None:
    """bind_tools takes tool_choice and hands it to every candidate's own bind_tools."""
    llm = healthy.get_llm_with_fallback()
    assert "tool_choice" in inspect.signature(FallbackChatModel.bind_tools).parameters
    answer = llm.bind_tools([magic_function, get_weather], tool_choice="get_weather").invoke("Hi")
    assert answer.tool_calls[0]["name"] == "get_weather"
    sent = servers[0].requests[-1]["tool_choice"]
    assert sent == {"type": "function", "function": {"name": "get_weather"}}


def test_invalid_tool_is_refused_at_bind_time_with_chatopenais_error(healthy: LLMPool) -> None:
    """bind_tools([123]) raises when bound, with the error ChatOpenAI itself raises."""
    with pytest.raises(ValueError, match="Unsupported function") as bare:
        ChatOpenAI(model=MODEL, api_key="sk-test").bind_tools([123])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Unsupported function") as pooled:
        healthy.get_llm_with_fallback().bind_tools([123])  # type: ignore[list-item]
    assert type(pooled.value) is type(bare.value)
    assert str(pooled.value) == str(bare.value)


def test_include_raw_message_carries_llmpool_metadata(either: LLMPool) -> None:
    """with_structured_output(include_raw=True): the raw message says which row answered."""
    structured = either.get_llm_with_fallback().with_structured_output(Forecast, include_raw=True)
    answer = structured.invoke("Forecast for Paris")
    assert isinstance(answer["parsed"], Forecast)
    meta = answer["raw"].response_metadata["llmpool"]
    assert meta["name"] in {"Primary", "Backup"}
    assert meta["attempts"][-1]["outcome"] == "ok"


# -- which model is this ------------------------------------------------------------------------


def test_model_identity_is_the_first_candidates(healthy: LLMPool) -> None:
    """model_name, _llm_type, _get_ls_params() and profile describe the row that answers first."""
    llm = healthy.get_llm_with_fallback()
    bare = ChatOpenAI(model=MODEL, api_key="sk-test")
    assert llm.model_name == MODEL
    assert llm._llm_type == bare._llm_type == "openai-chat"
    params = llm._get_ls_params()
    assert (params["ls_provider"], params["ls_model_name"]) == ("openai", MODEL)
    assert llm._get_ls_params(model="other")["ls_model_name"] == "other"
    assert llm.profile == bare.profile
    assert llm.profile is not None


def test_model_identity_skips_a_row_cooling_down(healthy: LLMPool) -> None:
    """With the primary's breaker open, the backup is the one that would answer first."""
    llm = healthy.get_llm_with_fallback()
    primary = next(c for c in llm._current().candidates if c.config.name == "Primary")
    for _ in range(3):
        healthy.breakers.failure(primary.key, threshold=1, cooldown=lambda n: 60.0)
    assert llm.model_name == BACKUP_MODEL
    assert llm._get_ls_params()["ls_model_name"] == BACKUP_MODEL


def test_token_counts_use_the_candidates_tokenizer() -> None:
    """get_num_tokens / get_num_tokens_from_messages / get_token_ids ask the first candidate."""

    def by_character(text: str) -> list[int]:
        return list(range(len(text)))

    model = FakeChatModel(responses=["hi"], custom_get_token_ids=by_character)
    llm = FallbackChatModel(fallbacks=(model,))
    assert llm.get_num_tokens("hello") == 5
    assert llm.get_token_ids("abc") == [0, 1, 2]
    messages = [HumanMessage("hello")]
    assert llm.get_num_tokens_from_messages(messages) == model.get_num_tokens_from_messages(
        messages
    )


# -- constructor arguments ----------------------------------------------------------------------


def test_unknown_constructor_argument_is_refused() -> None:
    """An argument that is neither a field nor a forwarded parameter raises, naming it."""
    with pytest.raises(InvalidConfigError, match="'temprature'") as info:
        FallbackChatModel(temprature=0.3)
    assert info.value.field == "temprature"
    with pytest.raises(InvalidConfigError, match="'api_key'"):
        FallbackChatModel(api_key="sk-test")


def test_standard_parameters_reach_every_candidate(
    servers: tuple[OpenAICompatServer, OpenAICompatServer, ServerDown],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """temperature, max_tokens and stop given to the constructor reach the primary and the
    backup it fails over to."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    _primary, backup, down = servers
    pool = _pool(down, backup)  # type: ignore[arg-type]
    try:
        live = pool.get_llm_with_fallback()
        llm = FallbackChatModel(
            chain=live.chain,
            breakers=live.breakers,
            policy=live.policy,
            temperature=0.3,
            max_tokens=7,
            stop=["you"],
        )
        answer = llm.invoke("Hello")
    finally:
        pool.close()
    assert answer.response_metadata["llmpool"]["name"] == "Backup"
    assert answer.content == "Hello! How can I help "
    for body in (down.requests[-1], backup.requests[-1]):
        assert body["temperature"] == 0.3
        assert body["max_completion_tokens"] == 7
        assert body["stop"] == ["you"]
    assert llm._get_ls_params()["ls_temperature"] == 0.3


# -- usage --------------------------------------------------------------------------------------


def test_generate_counts_usage_once(either: LLMPool) -> None:
    """generate() and agenerate() report the answer's tokens once to the usage callback."""
    llm = either.get_llm_with_fallback()
    with get_usage_metadata_callback() as usage:
        result = llm.generate([[HumanMessage("Hello")]])
    message = result.generations[0][0].message
    assert isinstance(message, AIMessage)
    assert message.usage_metadata is not None
    model = message.response_metadata["model_name"]
    assert usage.usage_metadata[model]["total_tokens"] == message.usage_metadata["total_tokens"]
    with get_usage_metadata_callback() as usage:
        result = asyncio.run(llm.agenerate([[HumanMessage("Hello")], [HumanMessage("Hey")]]))
    totals = sum(g[0].message.usage_metadata["total_tokens"] for g in result.generations)  # type: ignore[attr-defined]
    assert sum(u["total_tokens"] for u in usage.usage_metadata.values()) == totals


def test_stream_events_v3_reports_the_answer(either: LLMPool) -> None:
    """stream_events(version="v3") streams through the fallback and ends with the answer."""
    stream = either.get_llm_with_fallback().stream_events("Hello", version="v3")
    events = list(stream)
    assert events
    assert stream.output.text == "Hello! How can I help you today?"


# -- agents -------------------------------------------------------------------------------------


def test_create_agent_with_a_prebound_model(either: LLMPool) -> None:
    """langchain's create_agent runs a tool loop with a model already bound to its tools."""
    from langchain.agents import create_agent

    bound = either.get_llm_with_fallback().bind_tools([get_weather])
    agent = create_agent(bound, tools=[get_weather])
    messages = agent.invoke({"messages": [HumanMessage("What is the weather in Paris?")]})[
        "messages"
    ]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[-1].response_metadata["llmpool"]["name"] in {"Primary", "Backup"}


def test_langgraph_react_agent_with_a_prebound_model(either: LLMPool) -> None:
    """LangGraph's create_react_agent accepts a model already bound to its tools."""
    with warnings.catch_warnings():  # LangGraph 1.x points to create_agent; still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

        bound = either.get_llm_with_fallback().bind_tools([get_weather])
        agent = create_react_agent(bound, tools=[get_weather])
    messages = agent.invoke({"messages": [HumanMessage("What is the weather in Paris?")]})[
        "messages"
    ]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]


def test_create_agent_response_format_uses_native_structured_output(
    either: LLMPool, servers: tuple[OpenAICompatServer, OpenAICompatServer, ServerDown]
) -> None:
    """With the candidate's profile, create_agent asks the provider for a JSON schema answer."""
    from langchain.agents import create_agent

    agent = create_agent(either.get_llm_with_fallback(), tools=[], response_format=Forecast)
    state = agent.invoke({"messages": [HumanMessage("Forecast for Paris")]})
    assert isinstance(state["structured_response"], Forecast)
    sent = [body for server in servers[:2] for body in server.requests]
    assert any((body.get("response_format") or {}).get("type") == "json_schema" for body in sent)


# -- types --------------------------------------------------------------------------------------

_TYPED = """
from pydantic import BaseModel
from langchain_core.messages import AIMessage
from typing_extensions import assert_type
from llmpool import get_llm_with_fallback


class Forecast(BaseModel):
    summary: str


llm = get_llm_with_fallback()
assert_type(llm.invoke("hi"), AIMessage)
assert_type(llm.with_structured_output(Forecast).invoke("hi"), Forecast)
assert_type(llm.bind_tools([]).invoke("hi"), AIMessage)
reveal_type(llm.invoke("hi"))
reveal_type(llm.with_structured_output(Forecast).invoke("hi"))
"""


def test_type_checker_sees_messages_and_schemas(tmp_path: Path) -> None:
    """mypy --strict sees AIMessage from invoke and the schema from with_structured_output."""
    from mypy import api

    snippet = tmp_path / "typed.py"
    snippet.write_text(_TYPED)
    cache = Path(__file__).resolve().parent.parent / ".mypy_cache"
    out, err, status = api.run(["--strict", "--cache-dir", str(cache), str(snippet)])
    assert status == 0, out + err
    assert 'Revealed type is "langchain_core.messages.ai.AIMessage"' in out
    assert 'Revealed type is "typed.Forecast"' in out


def test_code_fallback_model_answers_with_its_own_identity() -> None:
    """A model given in code is the first candidate when no row is: its own name and type."""
    row = LLMConfig(id="1", name="Down", provider="fake", model_name="m")
    llm = FallbackChatModel(
        candidates=(Candidate(row, error=RuntimeError("missing secret")),),
        fallbacks=(FakeChatModel(model="local", responses=["hi"]),),
    )
    assert llm._llm_type == "llmpool-fake"
    assert llm.model_name == "local"
    assert llm.invoke("hello").content == "hi"


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_a_live_chain_serializes_as_a_reference_and_loads_onto_the_default_pool() -> None:
    """dumpd(get_llm_with_fallback()) holds the scope and forwarded parameters, nothing of the
    rows; load() with FallbackChatModel allowed gives that scope's chain on the default pool,
    which answers; a chain with code models or bound tools is not serializable."""
    import json

    from langchain_core.load import dumpd, load

    from llmpool import LLMPool, set_pool
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.providers.fake import FakeChatModel
    from llmpool.repository.memory import InMemoryStore

    store = InMemoryStore(
        [
            {"name": "A", "provider": "fake", "model_name": "m", "scope": "svc",
             "config": {"responses": ["from A"]}},
        ]
    )  # fmt: skip
    pool = LLMPool(repository=store, poll_interval=0)
    try:
        with set_pool(pool):
            model = FallbackChatModel(
                **{
                    k: getattr(pool.get_llm_with_fallback("svc"), k)
                    for k in ("chain", "breakers", "policy", "scope", "affinity")
                },
                temperature=0.0,
            )
            data = dumpd(model)
            assert data["kwargs"] == {"scope": "svc", "temperature": 0.0}
            assert "from A" not in json.dumps(data) and '"A"' not in json.dumps(data)
            loaded = load(data, valid_namespaces=["llmpool"], allowed_objects=[FallbackChatModel])
            assert isinstance(loaded, FallbackChatModel)
            assert loaded.invoke("hi").content == "from A"
            assert loaded.model_dump() == model.model_dump()
            plain = dumpd(pool.get_llm_with_fallback("svc"))
            assert plain["kwargs"] == {"scope": "svc"}
            with_code = pool.get_llm_with_fallback("svc", fallbacks=[FakeChatModel()])
            assert dumpd(with_code)["type"] == "not_implemented"
            bound = pool.get_llm_with_fallback("svc").bind_tools([get_weather])
            assert '"type": "not_implemented"' in json.dumps(dumpd(bound))
    finally:
        pool.close()
