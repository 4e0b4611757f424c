"""A unique secret in OPENAI_API_KEY never shows up anywhere llmpool writes or raises."""

from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any

import pytest
from helpers import row
from servers import OpenAIServer, Status

from llmpool.errors import AllLLMsFailedError
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.models import LLMConfig
from llmpool.providers import ProviderRegistry


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A unique API key set in the environment."""
    value = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", value)
    return value


def test_canary_never_leaks(canary: str, store: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Not in configs' repr/str/dump, DEBUG logs, a forced 401's message or traceback, audit."""
    with OpenAIServer() as server, caplog.at_level(logging.DEBUG):
        server.script(Status(401, "Incorrect API key provided"))
        added = store.add(
            row(
                auth_meta={"api_key_env": "OPENAI_API_KEY"}, config={"base_url": server.url + "/v1"}
            )
        )
        config = store.get(added.id)
        model = ProviderRegistry().build(config)
        llm = FallbackChatModel(candidates=[Candidate(config, model)])
        with pytest.raises(AllLLMsFailedError) as info:
            llm.invoke("hello")
        request = server.wait_for_requests(1)[0]
    # the key did reach the provider, and only the provider
    headers = {key.lower(): value for key, value in request.headers.items()}
    assert headers["authorization"] == f"Bearer {canary}"
    assert "401" in str(info.value)
    texts = [
        repr(config),
        str(config),
        str(config.model_dump()),
        config.model_dump_json(),
        repr(model),
        str(info.value),
        "".join(traceback.format_exception(info.value)),
        caplog.text,
        repr([entry.model_dump() for entry in store.audit_log()]),
    ]
    for text in texts:
        assert canary not in text


def test_missing_key_error_names_the_variable_not_a_value(
    canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build error for one variable never prints the value of another."""
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    config = LLMConfig.from_row(
        row(id="x1", auth_meta={"api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_API_BASE"})
    )
    with pytest.raises(Exception, match="OPENAI_API_BASE") as info:
        ProviderRegistry().build(config)
    assert canary not in "".join(traceback.format_exception(info.value))


def echoed_key_failure(
    canary: str, store: Any, caplog: pytest.LogCaptureFixture
) -> AllLLMsFailedError:
    """Call a row whose provider answers 401 with a body that repeats the key it was sent."""
    with OpenAIServer() as server, caplog.at_level(logging.DEBUG):
        server.script(Status(401, f"Incorrect API key provided: {canary}. Find your key at ..."))
        added = store.add(
            row(
                auth_meta={"api_key_env": "OPENAI_API_KEY"}, config={"base_url": server.url + "/v1"}
            )
        )
        config = store.get(added.id)
        model = ProviderRegistry().build(config)
        llm = FallbackChatModel(candidates=[Candidate(config, model)])
        with pytest.raises(AllLLMsFailedError) as info:
            llm.invoke("hello")
        server.wait_for_requests(1)
    return info.value


def test_a_provider_error_echoing_the_key_is_masked_in_the_error_and_logs(
    canary: str, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 body that repeats the key: masked in str(AllLLMsFailedError) and DEBUG logs."""
    error = echoed_key_failure(canary, store, caplog)
    assert "401" in str(error)
    assert "Incorrect API key provided" in str(error)
    assert canary not in str(error)
    assert canary not in caplog.text


def test_a_provider_error_echoing_the_key_is_masked_in_the_traceback(
    canary: str, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The traceback of AllLLMsFailedError, causes included, never shows the echoed key."""
    error = echoed_key_failure(canary, store, caplog)
    assert canary not in "".join(traceback.format_exception(error))


def test_llmpool_check_never_prints_a_key_the_provider_echoes(
    canary: str, migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``llmpool check`` reports the 401 with the echoed key masked, in text and in JSON."""
    from llmpool.cli.main import main
    from llmpool.repository.sql.store import SQLStore

    with OpenAIServer() as server:
        server.script(*[Status(401, f"Incorrect API key provided: {canary}.")] * 2)
        store = SQLStore(migrated_url)
        try:
            store.add(
                row(
                    auth_meta={"api_key_env": "OPENAI_API_KEY"},
                    config={"base_url": server.url + "/v1"},
                )
            )
        finally:
            store.engine.dispose()
        codes = [
            main(["check", "--database-url", migrated_url]),
            main(["check", "--json", "--database-url", migrated_url]),
        ]
        server.wait_for_requests(2)
    out, err = capsys.readouterr()
    assert codes == [1, 1]
    assert "401" in out
    assert canary not in out + err


def test_the_failures_an_error_carries_never_show_an_echoed_key(
    canary: str, store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``repr(error.failures)``, each failure's ``error`` and its text are masked too."""
    error = echoed_key_failure(canary, store, caplog)
    failure = error.failures[0]
    assert failure.error is not None
    texts = [repr(error.failures), repr(failure), str(failure.error), repr(failure.error)]
    texts += ["".join(traceback.format_exception(failure.error))]
    for text in texts:
        assert canary not in text
    assert "Incorrect API key provided" in str(failure.error)
    assert type(failure.error).__name__.endswith("AuthenticationError")
    assert getattr(failure.error, "status_code", None) == 401
