"""A call's tags (run metadata ``llmpool_tags``): checked, listed in the answer's metadata, and
given to the admission checks at each of their hooks; a real
OpenAI client against a server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from servers import OpenAIServer

from llmpool.chain.builder import ScopeChain
from llmpool.contracts import Candidate, CheckBase
from llmpool.errors import InvalidOptionError
from llmpool.fallback.model import FallbackChatModel
from llmpool.models import LLMConfig
from llmpool.tags import Tags, tags_of


class Heard(CheckBase):
    """Notes the tags it is given at each of its hooks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str] | None]] = []

    def _note(self, hook: str, tags: Tags | None) -> None:
        self.seen.append((hook, None if tags is None else tags.as_dict()))

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        self._note("admit", tags)
        return None

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        self._note("record", tags)


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FallbackChatModel, Heard]]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as server:
        row = LLMConfig(id="1", name="A", provider="openai", model_name="local")
        client = ChatOpenAI(model="local", base_url=server.url + "/v1", max_retries=0)
        heard = Heard()
        candidate = Candidate(row, client)
        chain = ScopeChain(None, "chat", 0, (candidate,), checks=(heard,))
        yield FallbackChatModel(chain=chain), heard


TAGGED = {"metadata": {"llmpool_tags": {"tenant": "acme", "feature": "chat"}}}
EXPECTED = {"feature": "chat", "tenant": "acme"}


def test_every_way_of_calling_hands_the_tags_to_the_checks_and_the_answer(
    llm: tuple[FallbackChatModel, Heard],
) -> None:
    """invoke, ainvoke, stream and astream: the checks are given the tags at admit and record,
    and the answer lists them."""
    model, heard = llm
    answer = model.invoke("hi", TAGGED)
    assert answer.response_metadata["llmpool"]["tags"] == EXPECTED
    assert list(model.stream("hi", TAGGED))

    async def both() -> None:
        await model.ainvoke("hi", TAGGED)
        async for _ in model.astream("hi", TAGGED):
            pass

    asyncio.run(both())
    assert heard.seen == [("admit", EXPECTED), ("record", EXPECTED)] * 4


def test_an_untagged_call_has_no_tags(llm: tuple[FallbackChatModel, Heard]) -> None:
    model, heard = llm
    assert "tags" not in model.invoke("hi").response_metadata["llmpool"]
    assert heard.seen == [("admit", None), ("record", None)]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("tenant=acme", "llmpool_tags"),
        ({"Tenant": "acme"}, "llmpool_tags"),
        ({"tenant": "a,b"}, "llmpool_tags.tenant"),
        ({"tenant": ""}, "llmpool_tags.tenant"),
        ({"tenant": "x" * 129}, "llmpool_tags.tenant"),
        ({f"t{i}": "v" for i in range(9)}, "llmpool_tags"),
    ],
)
def test_bad_tags_are_refused_naming_the_tag(
    llm: tuple[FallbackChatModel, Heard], given: Any, named: str
) -> None:
    """The call is refused before any check or request, with the tag at fault named."""
    model, heard = llm
    with pytest.raises(InvalidOptionError) as caught:
        model.invoke("hi", {"metadata": {"llmpool_tags": given}})
    assert caught.value.option == named
    assert heard.seen == []


def test_tags_are_sorted_and_scalars_become_text() -> None:
    tags = tags_of({"user": 42, "beta": True, "tenant": "acme"})
    assert tags is not None
    assert tags.text == "beta=true,tenant=acme,user=42"
    assert tags_of({}) is None


def test_a_tag_set_seen_again_is_the_same_and_equal_numbers_stay_apart() -> None:
    """Text tags are checked once per set; 1 and True (equal in Python) stay '1' and 'true'."""
    first = tags_of({"tenant": "acme"})
    assert tags_of({"tenant": "acme"}) is first
    assert [tags_of({"n": v}).text for v in (1, True, "1", 1, True)] == [  # type: ignore[union-attr]
        "n=1", "n=true", "n=1", "n=1", "n=true"
    ]  # fmt: skip
    with pytest.raises(InvalidOptionError):
        tags_of({"tenant": ["a"]})
