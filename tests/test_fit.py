"""A row that cannot take a call (prompt too long, answer too long, a capability it lacks) is
skipped before it is called: real clients against servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from servers import OpenAIServer, Reply

from llmpool.contracts import Observer
from llmpool.errors import AllLLMsFailedError, InvalidConfigError
from llmpool.observe.events import AttemptEvent
from llmpool.pool.facade import LLMPool
from llmpool.providers.fit import Prompt, model_entry
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.store import SQLStore

KEY = {"api_key_env": "OPENAI_API_KEY"}


class Weather(BaseModel):
    """The weather in a city."""

    city: str


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    """A small model's server and a large one's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as small, OpenAIServer() as large:
        yield small, large


def rows(small: str, large: str, **model_info: Any) -> list[dict[str, Any]]:
    """ "Small" (priority 1, declaring ``model_info``) and "Large" (priority 2, declaring none)."""

    def row(name: str, priority: int, url: str, info: dict[str, Any] | None) -> dict[str, Any]:
        config: dict[str, Any] = {"base_url": url + "/v1", "max_retries": 0}
        if info is not None:
            config["model_info"] = info
        return {"name": name, "provider": "openai", "model_name": "local", "priority": priority,
                "auth_meta": KEY, "config": config}  # fmt: skip

    return [row("Small", 1, small, model_info), row("Large", 2, large, None)]


def pool_of(rows: list[dict[str, Any]], **options: Any) -> LLMPool:
    return LLMPool(InMemoryStore(rows), poll_interval=0, track_usage=False, **options)


def test_a_prompt_longer_than_the_window_skips_the_row_without_calling_it(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Small's 100-token window holds "hi" but not 1,000 characters: that call goes to Large,
    and Small's server never hears it; the answer's attempts say why."""
    small, large = servers
    llm = pool_of(rows(small.url, large.url, context_window=100)).get_llm_with_fallback()
    assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Small"
    answer = llm.invoke("x" * 1000)
    meta = answer.response_metadata["llmpool"]
    assert meta["name"] == "Large"
    assert (small.count, large.count) == (1, 1)
    skipped = meta["attempts"][0]
    assert skipped["name"] == "Small"
    assert "(~254 tokens) does not fit its 100-token context window" in skipped["reason"]


def test_max_tokens_counts_against_the_window_and_the_longest_answer(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """The call's max_tokens (keyword or bound) is added to the prompt, and may not exceed the
    row's longest answer."""
    small, large = servers
    info = {"context_window": 1000, "max_output_tokens": 500}
    llm = pool_of(rows(small.url, large.url, **info)).get_llm_with_fallback()
    assert llm.invoke("hi", max_tokens=400).response_metadata["llmpool"]["name"] == "Small"
    assert llm.invoke("x" * 2800, max_tokens=400).response_metadata["llmpool"]["name"] == "Large"
    meta = llm.bind(max_tokens=600).invoke("hi").response_metadata["llmpool"]
    assert meta["name"] == "Large"
    assert (
        "max_tokens 600 is more than its longest answer (500 tokens)"
        in meta["attempts"][0]["reason"]
    )
    assert small.count == 1


def test_a_client_configured_max_tokens_counts_too(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """A row whose client is configured with max_tokens 900 cannot fit a 200-token window."""
    small, large = servers
    table = rows(small.url, large.url, context_window=200)
    table[0]["config"]["max_tokens"] = 900
    llm = pool_of(table).get_llm_with_fallback()
    assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Large"
    assert small.count == 0


def test_tools_structured_output_and_images_need_the_capability(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Small declares only streaming: plain calls go to it, calls with bound tools, structured
    output or an image skip it."""
    small, large = servers
    llm = pool_of(rows(small.url, large.url, capabilities=["streaming"])).get_llm_with_fallback()

    def get_weather(city: str) -> str:
        """Return the weather in ``city``."""
        return city

    assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Small"
    tooled = llm.bind_tools([get_weather]).invoke("weather?")
    assert tooled.response_metadata["llmpool"]["name"] == "Large"
    assert (
        "needs: tools (its model_info.capabilities: streaming)"
        in (tooled.response_metadata["llmpool"]["attempts"][0]["reason"])
    )
    large.script(Reply(tool_call=("Weather", {"city": "Paris"})))
    structured = llm.with_structured_output(Weather, method="function_calling").invoke("x")
    assert structured == Weather(city="Paris")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    seen = llm.invoke([("user", [{"type": "text", "text": "what is it?"}, image])])
    assert seen.response_metadata["llmpool"]["name"] == "Large"
    assert "needs: vision" in seen.response_metadata["llmpool"]["attempts"][0]["reason"]
    assert small.count == 1


def test_a_row_that_does_not_stream_answers_a_stream_whole(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Declared without "streaming", a row is asked without ``stream`` and its answer is the
    stream's one chunk."""
    small, large = servers
    llm = pool_of(rows(small.url, large.url, capabilities=["tools"])).get_llm_with_fallback()
    chunks = list(llm.stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "Hello from the local server."
    assert [r.stream for r in small.requests] == [False]


def test_when_no_row_fits_the_error_lists_each_reason_and_events_say_why(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Both rows too small: `AllLLMsFailedError` names each and why, no request was sent, and
    the failover events carry the reasons."""
    small, large = servers
    table = rows(small.url, large.url, context_window=50)
    table[1]["config"]["model_info"] = {"context_window": 60}
    events: list[AttemptEvent] = []

    class Attempts(Observer):
        def on_attempt(self, event: AttemptEvent) -> None:
            events.append(event)

    pool = pool_of(table, observers=[Attempts()])
    with pytest.raises(AllLLMsFailedError) as info:
        pool.get_llm_with_fallback().invoke("y" * 400)
    text = str(info.value)
    assert "'Small'" in text and "50-token context window" in text
    assert "'Large'" in text and "60-token context window" in text
    assert (small.count, large.count) == (0, 0)
    assert [(e.llm_name, e.outcome) for e in events] == [("Small", "skipped"), ("Large", "skipped")]
    assert all("context window" in str(e.reason) for e in events)


def test_the_provider_table_declares_known_models(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """gpt-4 (8,192 tokens) is skipped for a 40,000-character prompt without declaring anything;
    a dated snapshot of gpt-4o finds gpt-4o's entry, and a row's own value wins."""
    small, large = servers
    table = rows(small.url, large.url)
    del table[0]["config"]["model_info"]
    table[0]["model_name"] = "gpt-4"
    llm = pool_of(table).get_llm_with_fallback()
    assert llm.invoke("z" * 40_000).response_metadata["llmpool"]["name"] == "Large"
    assert small.count == 0
    from llmpool.providers.builtin import OPENAI

    assert model_entry(OPENAI.models, "gpt-4o-2024-08-06") == OPENAI.models["gpt-4o"]
    assert model_entry(OPENAI.models, "gpt-4.5-preview") is None  # not gpt-4's snapshot
    assert model_entry(OPENAI.models, "gpt-4-0613") == OPENAI.models["gpt-4"]


def test_the_estimate_counts_text_blocks_images_and_messages() -> None:
    """A quarter of the characters rounded up, 4 per message, 85 per image."""
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    from langchain_core.messages import HumanMessage, SystemMessage

    prompt = Prompt(
        [SystemMessage("abcd" * 10), HumanMessage([{"type": "text", "text": "abcde"}, image])], {}
    )
    assert (prompt.tokens, prompt.images) == (4 + 10 + 4 + 2 + 85, True)


@pytest.mark.parametrize(
    ("info", "field"),
    [
        ("big", "config.model_info"),
        ({"window": 5}, "config.model_info.window"),
        ({"context_window": 0}, "config.model_info.context_window"),
        ({"max_output_tokens": "many"}, "config.model_info.max_output_tokens"),
        ({"capabilities": ["telepathy"]}, "config.model_info.capabilities"),
        ({"capabilities": "tools"}, "config.model_info.capabilities"),
    ],
)
def test_a_bad_model_info_is_refused_naming_the_field_and_nothing_is_written(
    sql_store: SQLStore, info: Any, field: str
) -> None:
    """On SQLite and PostgreSQL, the store's checks refuse the row; the table stays empty."""
    row = rows("http://127.0.0.1:9", "http://127.0.0.1:9", context_window=10)[0]
    row["config"]["model_info"] = info
    with pytest.raises(InvalidConfigError) as error:
        sql_store.add(row)
    assert error.value.field == field
    assert "LLM 'Small'" in str(error.value)
    assert sql_store.list_llms(scope=None) == []


def test_model_info_is_stored_and_never_reaches_the_client(sql_store: SQLStore) -> None:
    """A good model_info is stored with the row; the built client has no such parameter."""
    info = {"context_window": 4096, "max_output_tokens": 512, "capabilities": ["tools"]}
    row = rows("http://127.0.0.1:9", "http://127.0.0.1:9", **info)[0]
    added = sql_store.add(row)
    assert added.config["model_info"] == info
    from llmpool.providers import get_registry

    client = get_registry().build(added, environ={"OPENAI_API_KEY": "sk-test"})
    assert "model_info" not in client.model_kwargs


def test_explain_with_a_prompt_says_which_rows_it_does_not_fit(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """`explain(prompt=...)` skips the rows a call of that prompt would skip, with the same
    reason, and sends nothing; without a prompt both would be tried."""
    small, large = servers
    pool = pool_of(rows(small.url, large.url, context_window=100))
    assert [s.status for s in pool.explain()] == ["would be tried", "would be tried"]
    steps = pool.explain(prompt=[("system", "be brief"), ("user", "x" * 1000)])
    assert [(s.name, s.status) for s in steps] == [
        ("Small", "skipped"),
        ("Large", "would be tried"),
    ]
    assert steps[0].reason == "the prompt (~260 tokens) does not fit its 100-token context window"
    assert pool.explain(prompt="hi")[0].status == "would be tried"
    assert (small.count, large.count) == (0, 0)
