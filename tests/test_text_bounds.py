"""Text from callers and rows is bounded: no argument, name or message makes output huge or slow."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import fake

from llmpool import api as functions
from llmpool.cli.main import main
from llmpool.cli.output import cell, mask_passwords, one_line
from llmpool.errors import (
    ArgumentTooLongError,
    InvalidConfigError,
    LLMNotFoundError,
    LLMPoolError,
    describe_row,
)
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.schema import RowParser

MB = 10**6

ADVERSARIAL = {
    "scheme-then-colons": "a://" + ":" * MB,
    "colon-pairs-then-at": "x:" * (MB // 2) + "@",
    "letters": "a" * MB,
    "schemes": "a://" * (MB // 4),
    "credentials-then-colons": "a://u:p@" + ":" * MB,
    "digit-led-runs": "0-" * (MB // 2) + "a",
    "escape-sequences": "\x1b[31m" * (MB // 5),
    "lines": "x:\n" * (MB // 3),
}

TEXT_FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "one_line": one_line,
    "cell": cell,
    "mask_passwords": mask_passwords,
    "describe_row": lambda text: describe_row(text, text),
}


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """Return what ``call`` returns and the seconds it took."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


@pytest.mark.parametrize("function", TEXT_FUNCTIONS)
@pytest.mark.parametrize("text", ADVERSARIAL)
def test_text_functions_handle_a_megabyte_of_adversarial_text_in_well_under_a_second(
    function: str, text: str
) -> None:
    """one_line, cell, the password masking and describe_row are linear in their input."""
    _, seconds = timed(lambda: TEXT_FUNCTIONS[function](ADVERSARIAL[text]))
    assert seconds < 1.0


def test_a_100_kb_name_is_masked_at_once() -> None:
    """A long run of letters (a 100 KB name) used to take 20 s to scan for URL passwords."""
    line, seconds = timed(lambda: one_line(f"LLM {'n' * 100_000} (postgresql://u:pw@db/x)"))
    assert seconds < 1.0
    assert line.endswith("(postgresql://u:***@db/x)")


def test_the_masking_finds_the_same_urls_as_before() -> None:
    """Passwords are masked wherever a URL holds one, and nothing else changes."""
    cases = {
        "see postgresql+psycopg://app:s3cret@db:5432/app?x=1.": (
            "see postgresql+psycopg://app:***@db:5432/app?x=1."
        ),
        "(mysql://u:p:q@h/d), redis://:pw@cache/0;": "(mysql://u:***@h/d), redis://:***@cache/0;",
        "9+.://u:pw@h and 1+a://u:pw@h": "9+.://u:pw@h and 1+a://u:***@h",
        "http://host/path?q=a@b https://u@h ftp://u:@h": "http://host/path?q=a@b https://u@h ftp://u:@h",
        "a://u:pw@h..: b://u:***@h": "a://u:***@h..: b://u:***@h",
    }
    for text, masked in cases.items():
        assert mask_passwords(text) == masked


def test_the_row_parser_handles_a_megabyte_name_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A row named with a megabyte of text is a bad row whose name and error are short."""
    row = {
        "id": "11111111-1111-1111-1111-111111111111",
        "name": "x:" * (MB // 2) + "@",
        "provider": "fake",
        "model_name": "m",
        "scope": "global",
        "priority": 1,
        "enabled": 1,
        "is_default": 0,
        "auth_meta": "{}",
        "config": "{}",
        "created_at": "2024-01-01 00:00:00",
        "updated_at": "2024-01-01 00:00:00",
        "version": 1,
        "kind": "chat",
        "space": None,
        "weight": 1,
        "rpm": None,
        "tpm": None,
    }
    with caplog.at_level(logging.WARNING, logger="llmpool.repository"):
        (configs, bad), seconds = timed(lambda: RowParser().parse([row]))
    assert seconds < 1.0
    assert configs == [] and len(bad) == 1
    assert bad[0].name is not None and len(bad[0].name) <= 81
    assert "name" in bad[0].error and len(bad[0].error) < 500
    assert len(caplog.text) < 1000


def test_messages_quote_at_most_80_characters_of_a_name_or_an_id() -> None:
    """describe_row and the not-found errors shorten what they quote."""
    huge = "x" * (10 * MB)
    assert len(describe_row(huge, huge)) < 200
    store = InMemoryStore([fake("A", 1, "a")])
    with pytest.raises(LLMNotFoundError) as info:
        store.get("y" * 64)
    assert "y" * 80 not in str(info.value) and len(str(info.value)) < 100
    with pytest.raises(InvalidConfigError) as config_error:
        store.add({**fake("B", 1, "b"), "k" * MB: 1})
    assert len(str(config_error.value)) < 300
    with pytest.raises(InvalidConfigError) as config_error:
        store.add(fake("n" * (10 * MB), 1, "b"))
    assert len(str(config_error.value)) < 300


@pytest.fixture
def memory_pool() -> Iterator[LLMPool]:
    """A pool over one row in memory."""
    store = InMemoryStore([fake("A", 1, "a", is_default=True)])
    with LLMPool(repository=store, poll_interval=0) as pool:
        yield pool


def assert_too_long(error: pytest.ExceptionInfo[Any], argument: str) -> None:
    """The error is the typed refusal of ``argument``, short, and catchable as ValueError."""
    assert isinstance(error.value, ArgumentTooLongError)
    assert isinstance(error.value, LLMPoolError) and isinstance(error.value, ValueError)
    assert error.value.argument == argument
    assert len(str(error.value)) < 200


HUGE = "s" * MB


def test_the_pool_refuses_over_long_scopes_and_ids(memory_pool: LLMPool) -> None:
    """Every pool lookup taking a scope or an id refuses one longer than a row can hold."""
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("scope", lambda: memory_pool.get_llm_with_fallback(HUGE)),
        ("scope", lambda: memory_pool.get_llms_from_db(scope=HUGE)),
        ("scope", lambda: memory_pool.get_default_llm_config(HUGE)),
        ("scope", lambda: memory_pool.get_llm(scope=HUGE)),
        ("llm_id", lambda: memory_pool.get_llm(HUGE)),
        ("scope", lambda: asyncio.run(memory_pool.aget_llm_with_fallback(HUGE))),
        ("scope", lambda: asyncio.run(memory_pool.aget_default_llm_config(HUGE))),
        ("scope", lambda: asyncio.run(memory_pool.aget_llms_from_db(scope=HUGE))),
        ("llm_id", lambda: asyncio.run(memory_pool.aget_llm(HUGE))),
    ]
    for argument, call in calls:
        with pytest.raises(ArgumentTooLongError) as info:
            call()
        assert_too_long(info, argument)
    assert memory_pool.get_llms_from_db(scope="s" * 100) == []


def test_the_module_functions_refuse_before_building_the_default_pool() -> None:
    """get_llm_with_fallback(scope=<1 MB>) opens no database: the default pool is not built."""
    with functions.set_pool(None):
        for call in (
            lambda: functions.get_llm_with_fallback(HUGE),
            lambda: functions.get_llm(HUGE),
            lambda: functions.get_default_llm_config(HUGE),
            lambda: functions.get_llms_from_db(scope=HUGE),
            lambda: asyncio.run(functions.aget_llm(scope=HUGE)),
        ):
            with pytest.raises(ArgumentTooLongError):
                call()
        assert functions._pool is None


def test_stores_refuse_over_long_filters_and_ids(store: Any) -> None:
    """list, get, get_default and the writes by id refuse text no row could hold."""
    added = store.add(fake("A", 1, "a"))
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("scope", lambda: store.list_llms(scope=HUGE)),
        ("provider", lambda: store.list_llms(provider=HUGE)),
        ("search", lambda: store.list_llms(search=HUGE)),
        ("llm_id", lambda: store.get(HUGE)),
        ("scope", lambda: store.get_default(HUGE)),
        ("llm_id", lambda: store.update(HUGE, {"priority": 1})),
        ("llm_id", lambda: store.delete([added.id, HUGE])),
    ]
    for argument, call in checks:
        with pytest.raises(ArgumentTooLongError) as info:
            call()
        assert_too_long(info, argument)
    assert store.list_llms(search="a" * 200) == []
    assert store.get(added.id) == added


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--scope", HUGE),
        ("list", "--search", HUGE),
        ("list", "--provider", HUGE),
        ("show", HUGE),
        ("delete", "--yes", HUGE),
        ("enable", HUGE),
        ("chain", "--scope", HUGE),
        ("audit", "--llm", HUGE),
        ("list", HUGE),
        ("add", "--name", "a", "--provider", "fake", "--model", "m", "--config", "[" * 100_000),
        ("audit", "--since", "999999999w"),
        ("audit", "--since", "9" * MB + "d"),
    ],
    ids=lambda args: " ".join(a[:12] for a in args),
)
def test_the_cli_refuses_over_long_arguments_in_one_short_line(
    sqlite_url: str, args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A huge or absurd argument is a usage error (exit 2) of one short line, no traceback."""
    assert main(["--database-url", sqlite_url, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmpool: error: ") and err.count("\n") == 1
    assert len(err) < 4200


def test_the_cli_quotes_a_missing_name_shortened_and_escaped(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` of a name no row has names it in 80 characters, escape sequences made visible."""
    from llmpool.repository.sql.migrate import migrate

    migrate(sqlite_url)  # a read creates nothing: the table must exist for show to look in
    ref = "\x1b[31m" + "q" * 190
    assert main(["--database-url", sqlite_url, "show", ref]) == 1
    err = capsys.readouterr().err
    assert "No LLM with id or name" in err and "\\x1b[31m" in err
    assert "\x1b" not in err and "q" * 80 not in err and len(err) < 200


def test_the_cli_finds_a_row_by_a_name_longer_than_any_id(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name may be 200 characters long, beyond the 64 of an id: show still finds it."""
    name = "N" * 200
    assert main(["--database-url", sqlite_url, "add", "--name", name, "--provider", "fake",
                 "--model", "m"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["--database-url", sqlite_url, "show", name, "--json"]) == 0
    assert name in capsys.readouterr().out


def test_a_json_file_nested_absurdly_deep_is_a_usage_error(
    sqlite_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``add --from-json`` of a file nested 100,000 levels deep exits 2 in one line."""
    path = tmp_path / "deep.json"
    path.write_text('{"name": "x", "config": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001)
    assert main(["--database-url", sqlite_url, "add", "--from-json", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nests deeper" in err and err.count("\n") == 1


def test_a_mapping_with_many_unknown_keys_gets_a_short_error() -> None:
    """A row with 100,000 unknown fields is refused in a message listing a few of them."""
    from llmpool.models import LLMConfig

    row = {**fake("A", 1, "a"), "id": "1", **{f"k{i}": i for i in range(100_000)}}
    with pytest.raises(InvalidConfigError) as info:
        LLMConfig.from_row(row)
    assert "and 99995 more" in str(info.value) and len(str(info.value)) < 1000
