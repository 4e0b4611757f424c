"""The ``fake`` provider as an offline model: tool calls, structured output, token usage,
LangChain's standard parameters and a provider's failures, built from rows as any provider."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import date, datetime
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

from llmpool.errors import UnsupportedParameterError
from llmpool.fallback.policy import FallbackPolicy, Outcome, classify_error
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers import ProviderRegistry
from llmpool.providers.failures import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    RateLimitError,
    ServiceUnavailableError,
)
from llmpool.providers.fake import FakeChatModel
from llmpool.providers.samples import sample
from llmpool.repository.memory import InMemoryStore


def build(**config: Any) -> Any:
    """A fake row's model, built by the registry as every row's is."""
    row = LLMConfig(id="r1", name="Fake", provider="fake", model_name="m", config=config)
    return ProviderRegistry().build(row)


def get_weather(city: str, days: int = 1) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def get_time(zone: str) -> str:
    """The time in a zone."""
    return "noon"


class Joke(BaseModel):
    """A joke."""

    setup: str
    punchline: str
    rating: int | None = None


class JokeDict(TypedDict):
    """A joke, as a TypedDict."""

    setup: str
    stars: int


JOKE_SCHEMA = {
    "title": "Joke",
    "type": "object",
    "properties": {"setup": {"type": "string"}, "stars": {"type": "integer", "minimum": 1}},
    "required": ["setup", "stars"],
}


def test_bound_tools_are_called_then_the_result_is_answered() -> None:
    """With tools bound the first is called, its arguments built from its schema; after a
    tool result the model answers in text, so an agent loop ends."""
    llm = build(responses=["It is sunny."]).bind_tools([get_weather, get_time])
    call = llm.invoke("Weather in Paris?")
    assert call.content == ""
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("get_weather", {"city": "fake city", "days": 1})
    ]
    assert call.response_metadata["finish_reason"] == "tool_calls"
    assert call.tool_calls == llm.invoke("Weather in Paris?").tool_calls  # deterministic ids too
    result = ToolMessage("sunny", tool_call_id=call.tool_calls[0]["id"])
    answer = llm.invoke([HumanMessage("Weather in Paris?"), call, result])
    assert (answer.content, answer.tool_calls) == ("It is sunny.", [])


def test_tool_choice_and_configured_tool_calls_decide_which_tool_and_arguments() -> None:
    """A named tool_choice picks the tool; a row's ``tool_calls`` sets arguments over the
    schema's; "none" answers in text; a tool_choice naming no bound tool is refused."""
    model = build(tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}}])
    named = model.bind_tools([get_weather, get_time], tool_choice="get_time").invoke("hi")
    assert [(c["name"], c["args"]) for c in named.tool_calls] == [
        ("get_time", {"zone": "fake zone"})
    ]
    configured = model.bind_tools([get_time, get_weather]).invoke("hi")
    assert configured.tool_calls[0]["args"] == {"city": "Oslo", "days": 1}
    assert model.bind_tools([get_weather], tool_choice="none").invoke("hi").tool_calls == []
    with pytest.raises(ValueError, match="'get_news', which is not among the bound tools"):
        model.bind_tools([get_weather], tool_choice="get_news")


def test_streamed_tool_calls_and_text_add_up_to_the_invoked_answer() -> None:
    """A stream gives the same tool call and text as invoke, word by word, usage last."""
    llm = build(responses=["one two three"])
    chunks = list(llm.stream("hi"))
    assert [c.content for c in chunks] == ["one ", "two ", "three", ""]
    assert chunks[-1].usage_metadata == llm.invoke("hi").usage_metadata
    tools = llm.bind_tools([get_weather])
    whole: AIMessageChunk | None = None
    for chunk in tools.stream("weather?"):
        whole = chunk if whole is None else whole + chunk
    assert whole is not None
    assert whole.tool_calls == tools.invoke("weather?").tool_calls


@pytest.mark.parametrize("method", ["function_calling", "json_mode", "json_schema"])
@pytest.mark.parametrize(
    "schema", [Joke, JokeDict, JOKE_SCHEMA], ids=["pydantic", "typeddict", "json"]
)
def test_structured_output_is_a_valid_instance_of_the_schema(method: str, schema: Any) -> None:
    """Each schema kind and method gives an instance (pydantic) or a dict that fits it."""
    answer = build().with_structured_output(schema, method=method).invoke("a joke")
    if schema is Joke:
        assert answer == Joke(setup="fake setup", punchline="fake punchline")
    elif schema is JokeDict:
        assert answer == {"setup": "fake setup", "stars": 0}
    else:
        assert answer == {"setup": "fake setup", "stars": 1}  # the schema's minimum


def test_a_rows_structured_output_sets_fields_and_include_raw_keeps_the_message() -> None:
    """``structured_output`` in the row's config overrides the generated fields (and is the
    whole object of a JSON mode without schema); with include_raw the message and parsed value
    both come back, and async works alike."""
    model = build(structured_output={"setup": "Why did the row fail over?"})
    joke = model.with_structured_output(Joke).invoke("a joke")
    assert joke == Joke(setup="Why did the row fail over?", punchline="fake punchline")
    raw = asyncio.run(model.with_structured_output(Joke, include_raw=True).ainvoke("a joke"))
    assert raw["parsed"] == joke and raw["parsing_error"] is None
    assert raw["raw"].tool_calls[0]["name"] == "Joke"
    as_json = model.with_structured_output(Joke, method="json_mode").invoke("a joke")
    assert as_json == joke
    free = model.with_structured_output(None, method="json_mode").invoke("a joke")  # any object
    assert free == {"setup": "Why did the row fail over?"}


def test_structured_output_and_tools_work_through_the_fallback_chain() -> None:
    """get_llm_with_fallback() gives a fake row's tools and schemas to the row that answers."""
    store = InMemoryStore(
        [
            {"name": "Down", "provider": "fake", "model_name": "m", "priority": 1,
             "config": {"error": 503}},
            {"name": "Up", "provider": "fake", "model_name": "m", "priority": 2},
        ]
    )  # fmt: skip
    with LLMPool(store, poll_interval=0, policy=FallbackPolicy(attempts=1)) as pool:
        llm = pool.get_llm_with_fallback()
        assert llm.with_structured_output(Joke).invoke("joke").punchline == "fake punchline"
        call = llm.bind_tools([get_weather]).invoke("weather?")
        assert call.tool_calls[0]["name"] == "get_weather"
        assert call.response_metadata["llmpool"]["name"] == "Up"


def test_usage_is_one_token_per_four_characters() -> None:
    """input: the prompt as LangChain prints it; output: the answer (with any tool call)."""
    answer = build(responses=["x" * 10]).invoke("hello")  # "Human: hello": 12 characters
    assert answer.usage_metadata == {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
    assert build().get_num_tokens("abcdefghi") == 3


def test_tpm_limits_and_prices_read_the_fake_rows_tokens() -> None:
    """A tpm limit counts the fake answers' tokens, and the row's price gives them a cost."""
    store = InMemoryStore(
        [
            {"name": "Small", "provider": "fake", "model_name": "m", "priority": 1, "tpm": 20,
             "config": {"responses": ["x" * 80], "output_cost_per_million_tokens": 1000.0}},
            {"name": "Big", "provider": "fake", "model_name": "m", "priority": 2},
        ]
    )  # fmt: skip
    with LLMPool(store, poll_interval=0) as pool:
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Small"  # 23 tokens
        second = llm.invoke("hi").response_metadata["llmpool"]
        assert second["name"] == "Big"
        assert second["attempts"][0]["reason"].startswith("rate limited: tpm 23/20")
        pool.flush_usage()
        (small,) = [row for row in pool.usage() if row.name == "Small"]
    assert (small.input_tokens, small.output_tokens) == (3, 20)
    assert float(small.cost) == pytest.approx(0.02)


def test_standard_parameters_are_accepted_and_stop_and_max_tokens_act() -> None:
    """temperature, top_p, seed, penalties, timeout, max_retries... build; ``stop`` cuts the
    answer; ``max_tokens`` truncates it with finish_reason "length"."""
    model = build(
        responses=["First sentence. Second sentence."],
        temperature=0.2, top_p=0.9, seed=7, frequency_penalty=0.5, presence_penalty=0.1,
        timeout=5, max_retries=1, streaming=False, model_kwargs={"user": "me"},
    )  # fmt: skip
    assert (model.temperature, model.max_retries) == (0.2, 1)
    assert model.invoke("hi", stop=["."]).content == "First sentence"
    short = build(responses=["First sentence. Second sentence."], max_tokens=2).invoke("hi")
    assert (short.content, short.response_metadata["finish_reason"]) == ("First se", "length")


@pytest.mark.parametrize(
    ("error", "cls", "outcome"),
    [
        (429, RateLimitError, Outcome.RETRY),
        ("rate_limit", RateLimitError, Outcome.RETRY),
        (503, ServiceUnavailableError, Outcome.RETRY),
        ("auth", AuthenticationError, Outcome.FALLBACK),
        (404, Exception, Outcome.FALLBACK),
        ("timeout", APITimeoutError, Outcome.RETRY),
        ("connection refused", APIConnectionError, Outcome.RETRY),
    ],
)
def test_an_error_is_a_provider_like_exception_classified_as_a_real_ones(
    error: Any, cls: type[Exception], outcome: Outcome
) -> None:
    """``error`` as a status code, a kind or a message raises what an SDK would, and the
    fallback policy classifies it as it does that SDK's error."""
    with pytest.raises(cls) as info:
        build(error=error).invoke("hi")
    assert classify_error(info.value) is outcome


def test_an_error_rate_with_a_seed_fails_the_same_calls_every_run() -> None:
    """``error_rate`` fails that share of calls; with ``seed`` the same ones each time."""

    def run(model: Any) -> list[bool]:
        failed = []
        for _ in range(40):
            try:
                model.invoke("hi")
                failed.append(False)
            except ServiceUnavailableError:
                failed.append(True)
        return failed

    first = run(build(error_rate=0.5, seed=3, error="unavailable"))
    assert first == run(build(error_rate=0.5, seed=3, error="unavailable"))
    assert 5 < sum(first) < 35
    assert not any(run(build(error_rate=0.0, error=503)))


def test_max_retries_retries_a_transient_error_as_a_client_would() -> None:
    """With a seed whose first draw fails and second succeeds, one retry turns the failure
    into an answer; without retries the call fails."""
    seed = next(s for s in range(1000) if _draws(s) == (True, False))
    with pytest.raises(ServiceUnavailableError):
        build(error_rate=0.5, error=503, seed=seed, max_retries=0).invoke("hi")
    assert build(error_rate=0.5, error=503, seed=seed, max_retries=1).invoke("hi").content


def _draws(seed: int) -> tuple[bool, bool]:
    draws = random.Random(seed)
    return draws.random() < 0.5, draws.random() < 0.5


def test_sleep_longer_than_the_timeout_times_out_after_the_timeout() -> None:
    """A row's ``sleep`` is its latency; beyond its ``timeout`` the call fails as a timeout."""
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        build(sleep=30, timeout=0.05).invoke("hi")
    assert time.monotonic() - started < 5
    started = time.monotonic()
    assert asyncio.run(build(sleep=0.05).ainvoke("hi")).content
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"error": 200}, "error"),
        ({"error": ""}, "error"),
        ({"sleep": -1}, "sleep"),
        ({"temperature": 9}, "temperature"),
        ({"tool_calls": [{"args": {}}]}, "tool_calls"),
        ({"responses": []}, "responses"),
    ],
)
def test_a_bad_config_value_is_refused_naming_the_row_and_the_field(
    config: dict[str, Any], field: str
) -> None:
    """A value out of range is an UnsupportedParameterError naming the row and the field."""
    with pytest.raises(UnsupportedParameterError, match=rf"LLM 'Fake' \(id r1\).* config\.{field}"):
        build(**config)


def test_sample_honours_the_schema_s_constraints() -> None:
    """Formats, bounds, lengths, references, unions and arrays give values that validate."""
    schema = {
        "$defs": {"Unit": {"enum": ["C", "F"]}},
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "code": {"type": "string", "minLength": 8, "maxLength": 9},
            "count": {"type": "integer", "exclusiveMinimum": 3},
            "ratio": {"type": "number", "maximum": -1},
            "unit": {"$ref": "#/$defs/Unit"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}]},
        },
    }
    assert sample(schema) == {
        "when": "2026-01-01T00:00:00Z",
        "code": "fake code",
        "count": 4,
        "ratio": -1.0,
        "unit": "C",
        "maybe": True,
        "tags": ["fake tags", "fake tags"],
        "pair": [0, "x"],
    }


_FIELDS = st.sampled_from(
    [
        (str, ...),
        (int, Field(ge=5)),
        (int, Field(gt=-3, lt=0)),
        (float, Field(le=-2.5)),
        (bool, ...),
        (list[str], Field(min_length=2)),
        (Literal["a", "b"], ...),
        (int | None, None),
        (date, ...),
        (datetime, ...),
        (str, Field(min_length=12, max_length=12)),
        (dict[str, int], ...),
        (tuple[int, str], ...),
    ]
)


_NAMES = st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda n: not hasattr(BaseModel, n))


@settings(max_examples=40, deadline=None)
@given(fields=st.dictionaries(_NAMES, _FIELDS, max_size=6))
def test_structured_output_validates_for_any_model_of_these_field_types(
    fields: dict[str, Any],
) -> None:
    """Any pydantic model built from these constrained fields, nested one level too, gets a
    valid instance, through a tool call and as JSON."""
    inner = create_model("Inner", **fields)
    outer = create_model("Outer", inner=(inner, ...), items=(list[inner], ...))  # type: ignore[valid-type]
    model = FakeChatModel()
    for schema in (inner, outer):
        for method in ("function_calling", "json_schema"):
            answer = model.with_structured_output(schema, method=method).invoke("hi")
            assert isinstance(answer, schema)


class TestFakeChatModelUnit(ChatModelUnitTests):
    """LangChain's standard unit tests for chat models, on the fake model."""

    @property
    def chat_model_class(self) -> type[FakeChatModel]:
        return FakeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "fake-model", "responses": ["hello"]}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


_READS_THE_PROMPT = pytest.mark.xfail(
    reason="the test expects arguments read from the prompt's words (magic_function(3), a "
    "customer's name in Chinese); the fake's arguments come from the schema",
    strict=True,
    raises=AssertionError,
)


class TestFakeChatModelIntegration(ChatModelIntegrationTests):
    """LangChain's standard integration tests for chat models, on the fake model."""

    @property
    def chat_model_class(self) -> type[FakeChatModel]:
        return FakeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "fake-model"}

    @property
    def model_override_value(self) -> str:
        return "fake-other-model"

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @_READS_THE_PROMPT
    def test_tool_calling(self, model: Any) -> None:
        """Expected to fail: the test wants the argument the prompt names."""
        super().test_tool_calling(model)

    @_READS_THE_PROMPT
    async def test_tool_calling_async(self, model: Any) -> None:
        """Expected to fail: the test wants the argument the prompt names."""
        await super().test_tool_calling_async(model)

    @_READS_THE_PROMPT
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        """Expected to fail: the test wants the name the prompt gives."""
        super().test_unicode_tool_call_integration(model, *args, **kwargs)
