"""Admin that never traps an operator: invalid rows repaired with llmpool, rows by name, merging
edits, typos refused when written, the database named, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from admin_rows import insert_raw
from cli_runner import Result, run_cli

from llmpool.errors import InvalidConfigError, NoDefaultLLMError
from llmpool.pool.facade import LLMPool

RAW_SECRET = "sk-rawsecret0123456789abcdefghijklmnop"


def ok(result: Result) -> str:
    """The output of a command that must have succeeded, without the raw secret."""
    assert result.code == 0, (result.args, result.err)
    assert RAW_SECRET not in result.out + result.err
    return result.out


def failed(result: Result, code: int = 1) -> str:
    """The one-line error of a command that must have failed."""
    assert (result.code, result.out) == (code, ""), (result.args, result.out, result.err)
    assert RAW_SECRET not in result.err
    return result.err


def test_a_disabled_default_is_not_served_by_get_llm(sql_store: Any) -> None:
    """get_llm() of a scope whose default is disabled is "No default LLM configured", naming it."""
    row = sql_store.add(
        {"name": "D1", "provider": "fake", "model_name": "echo", "scope": "dis",
         "enabled": False, "is_default": True}
    )  # fmt: skip
    sql_store.add({"name": "Other", "provider": "fake", "model_name": "m", "scope": "dis"})
    with LLMPool(repository=sql_store, poll_interval=0) as pool:
        with pytest.raises(NoDefaultLLMError, match="No default LLM configured") as caught:
            pool.get_llm(scope="dis")
        assert f"LLM 'D1' (id {row.id}), is disabled" in str(caught.value)
        with pytest.raises(NoDefaultLLMError, match="is disabled"):
            pool.get_default_llm_config("dis")
        # the fallback chain is the scope's enabled rows: the disabled default is not in it
        assert [c.name for c in pool.get_llms_from_db(scope="dis")] == ["Other"]
        assert (
            pool.get_llm_with_fallback("dis").invoke("hi").response_metadata["llmpool"]["name"]
            == "Other"
        )
        sql_store.enable(row.id)
        pool.refresh()
        assert pool.get_default_llm_config("dis").name == "D1"


def test_no_default_error_names_the_database(sql_store: Any) -> None:
    """The "No default LLM configured" error says which database was read."""
    with (
        LLMPool(repository=sql_store, poll_interval=0) as pool,
        pytest.raises(NoDefaultLLMError, match=r"\(database: (sqlite|postgresql)"),
    ):
        pool.get_llm()


def test_migrate_names_the_database_it_used(database_url: str) -> None:
    """``llmpool migrate`` says which database it migrated and seeded, as text and JSON."""
    first = ok(run_cli("migrate", "--seed", "--database-url", database_url)).splitlines()
    assert first[0].startswith("database: " + database_url.split(":")[0])
    data = json.loads(ok(run_cli("migrate", "--json", "--database-url", database_url)))
    assert data["database"].startswith(database_url.split(":")[0])


def test_an_invalid_row_is_shown_disabled_fixed_and_deleted_by_id_and_name(
    sql_store: Any, migrated_url: str
) -> None:
    """A literal secret put by raw SQL: show, disable, edit the field at fault, audit, delete."""
    db = ("--database-url", migrated_url)
    bad = insert_raw(sql_store, "Raw", provider="openai", auth_meta={"api_key": RAW_SECRET})
    with pytest.raises(InvalidConfigError):
        sql_store.get(bad)

    shown = json.loads(ok(run_cli("show", "Raw", "--json", *db)))
    assert shown["id"] == bad
    assert "auth_meta.api_key" in shown["problem"]
    assert shown["auth_meta"] == {"api_key": "<hidden>"}
    assert "auth_meta.api_key" in ok(run_cli("show", bad, *db))

    assert ok(run_cli("disable", "Raw", *db)).strip() == f"disabled LLM 'Raw' (id {bad})"
    assert "cannot be used as it is" in failed(run_cli("enable", bad, *db))
    assert "then make it the default" in failed(run_cli("set-default", bad, *db))
    # an edit that leaves the secret is refused; one that removes it repairs the row
    assert "this change leaves it so" in failed(run_cli("edit", "Raw", "--priority", "3", *db))
    ok(
        run_cli("edit", "Raw", "--unset", "auth_meta.api_key",
                "--set", "auth_meta.api_key_env=OPENAI_API_KEY", "--priority", "3", *db)
    )  # fmt: skip
    fixed = sql_store.get(bad)
    assert (fixed.auth_meta, fixed.priority, fixed.enabled) == (
        {"api_key_env": "OPENAI_API_KEY"}, 3, False,
    )  # fmt: skip
    log = json.loads(ok(run_cli("audit", "--llm", "Raw", "--json", *db)))
    assert [e["action"] for e in log] == ["update", "disable"]
    assert ok(run_cli("delete", "Raw", "--yes", *db)).strip() == "deleted 1 LLM(s)"
    # a deleted row's audit trail is still found by its name
    log = json.loads(ok(run_cli("audit", "--llm", "Raw", "--json", *db)))
    assert [e["action"] for e in log] == ["delete", "update", "disable"]
    assert RAW_SECRET not in json.dumps([e.model_dump(mode="json") for e in sql_store.audit_log()])


def test_store_update_and_delete_repair_an_invalid_row(sql_store: Any) -> None:
    """The Python API repairs and deletes an invalid row as the command does."""
    bad = insert_raw(sql_store, "Broken", priority=5_000_000)
    with pytest.raises(InvalidConfigError, match="priority"):
        sql_store.update(bad, {"model_name": "other"})
    assert sql_store.update(bad, {"priority": 5}).priority == 5
    other = insert_raw(sql_store, "Other", auth_meta={"token": RAW_SECRET})
    assert sql_store.delete([other]) == 1
    assert [r.name for r in sql_store.list_llms()] == ["Broken"]


def test_a_row_allowed_elsewhere_can_be_reprioritised_from_any_shell(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row referencing a variable allowed by LLMPOOL_ALLOWED_ENV on the service can still be
    edited from a shell without that setting; a new reference outside the allowlist cannot."""
    db = ("--database-url", migrated_url)
    allowed = {"LLMPOOL_ALLOWED_ENV": "MYCO_KEY"}
    ref = '{"api_key_env": "MYCO_KEY"}'
    added = run_cli("add", "--name", "Myco", "--provider", "fake", "--model", "m",
                    "--auth-meta", ref, "--json", *db, env=allowed)  # fmt: skip
    llm = json.loads(ok(added))["id"]
    assert (
        json.loads(ok(run_cli("edit", "Myco", "--priority", "7", "--json", *db)))["priority"] == 7
    )
    ok(run_cli("disable", "Myco", *db))
    err = failed(run_cli("edit", llm, "--set", "auth_meta.other_env=OTHER_KEY", *db))
    assert "not on the allowlist" in err


def test_rows_are_addressed_by_name_and_an_ambiguous_name_lists_the_candidates(
    migrated_url: str,
) -> None:
    """edit, enable, disable, set-default, delete take a name; --scope tells namesakes apart."""
    db = ("--database-url", migrated_url)
    a = json.loads(ok(run_cli("add", "--name", "Twin", "--provider", "fake", "--model", "m",
                              "--scope", "a", "--json", *db)))  # fmt: skip
    b = json.loads(ok(run_cli("add", "--name", "Twin", "--provider", "fake", "--model", "m",
                              "--scope", "b", "--json", *db)))  # fmt: skip
    commands = (("edit", "Twin", "--priority", "1"), ("disable", "Twin"), ("set-default", "Twin"),
                ("enable", "Twin"), ("delete", "Twin", "--yes"), ("show", "Twin"))  # fmt: skip
    for command in commands:
        err = failed(run_cli(*command, *db))
        assert "2 LLMs are named 'Twin'" in err, err
        assert a["id"] in err and b["id"] in err
    assert "did you mean 'Twin'" in failed(run_cli("show", "Twinn", *db))
    edited = json.loads(
        ok(run_cli("edit", "Twin", "--scope", "b", "--priority", "4", "--json", *db))
    )
    assert (edited["id"], edited["priority"]) == (b["id"], 4)
    ok(run_cli("disable", "Twin", "--scope", "a", *db))
    ok(run_cli("set-default", "Twin", "--scope", "b", *db))
    log = json.loads(ok(run_cli("audit", "--llm", "Twin", "--scope", "a", "--json", *db)))
    assert [e["action"] for e in log] == ["disable", "create"]
    assert json.loads(ok(run_cli("delete", "Twin", "--scope", "a", "--yes", "--json", *db))) == {
        "deleted": 1
    }
    assert json.loads(ok(run_cli("show", "Twin", "--json", *db)))["id"] == b["id"]


def test_edit_set_and_unset_merge_while_config_replaces(migrated_url: str) -> None:
    """--set/--unset change one key and keep the others; --config replaces the whole object."""
    db = ("--database-url", migrated_url)
    config = '{"temperature": 0.5, "max_tokens": 100, "timeout": 30}'
    ok(run_cli("add", "--name", "Merge", "--provider", "openai", "--model", "gpt-4",
               "--config", config, *db))  # fmt: skip
    out = ok(run_cli("edit", "Merge", "--set", "config.temperature=0.2",
                     "--unset", "config.max_tokens", "--json", *db))  # fmt: skip
    assert json.loads(out)["config"] == {"temperature": 0.2, "timeout": 30}
    out = ok(run_cli("edit", "Merge", "--config", '{"max_tokens": 5}', "--json", *db))
    assert json.loads(out)["config"] == {"max_tokens": 5}
    assert "cannot unset 'config.top_p'" in failed(
        run_cli("edit", "Merge", "--unset", "config.top_p", *db)
    )
    assert "did you mean 'priority'" in failed(run_cli("edit", "Merge", "--set", "priorty=2", *db))
    assert "replaces the whole object" in " ".join(ok(run_cli("edit", "--help")).split())


def test_typos_are_refused_when_written_with_a_suggestion(migrated_url: str) -> None:
    """An unknown provider or config key is refused at write, naming row and field."""
    db = ("--database-url", migrated_url)
    err = failed(run_cli("add", "--name", "T", "--provider", "openia", "--model", "m", *db))
    assert "LLM 'T'" in err and "provider 'openia'" in err and "did you mean 'openai'" in err
    err = failed(run_cli("add", "--name", "T", "--provider", "openai", "--model", "gpt-4",
                         "--config", '{"temprature": 0.2}', *db))  # fmt: skip
    assert "config.temprature" in err and "did you mean 'temperature'" in err
    assert json.loads(ok(run_cli("list", "--json", *db))) == []
    out = ok(run_cli("add", "--name", "P", "--provider", "myplugin", "--model", "m",
                     "--allow-unknown-provider", "--json", *db))  # fmt: skip
    assert json.loads(out)["provider"] == "myplugin"
    # a row of an unknown provider is still edited without the flag (the problem predates it)
    ok(run_cli("edit", "P", "--priority", "9", *db))
    assert "did you mean" in failed(run_cli("edit", "P", "--set", "provider=openia", *db))


def test_json_errors_are_json_and_name_the_holder_of_a_taken_name(migrated_url: str) -> None:
    """With --json an error is one JSON object; a taken name names the row that has it."""
    db = ("--database-url", migrated_url)
    first = json.loads(ok(run_cli("add", "--name", "Taken", "--provider", "fake", "--model", "m",
                                  "--json", *db)))  # fmt: skip
    result = run_cli("add", "--name", "Taken", "--provider", "fake", "--model", "m", "--json", *db)
    error = json.loads(failed(result))
    assert (error["type"], error["exit_code"]) == ("ConflictError", 1)
    assert f"LLM 'Taken' (id {first['id']}) has that name" in error["error"]
    assert error["error"].count("(id ") == 1
    usage = json.loads(failed(run_cli("--json", "lisst", *db), 2))
    assert usage["exit_code"] == 2


def test_database_url_refusal_does_not_suggest_the_allowlist(sql_store: Any) -> None:
    """Referencing DATABASE_URL is refused without suggesting LLMPOOL_ALLOWED_ENV."""
    with pytest.raises(InvalidConfigError) as caught:
        sql_store.add({"name": "Db", "provider": "fake", "model_name": "m",
                       "auth_meta": {"api_key_env": "DATABASE_URL"}})  # fmt: skip
    assert "never allowed" in str(caught.value)
    assert "with LLMPOOL_ALLOWED_ENV" not in str(caught.value)


def test_an_initialisation_failure_names_each_row_once(sql_store: Any) -> None:
    """ "All LLMs failed to initialize" does not repeat the row's name after its error type."""
    from llmpool.errors import AllLLMsFailedToInitializeError

    sql_store.add({"name": "Keyless", "provider": "openai", "model_name": "gpt-4",
                   "auth_meta": {"api_key_env": "OPENAI_API_KEY"}})  # fmt: skip
    with (
        LLMPool(repository=sql_store, poll_interval=0) as pool,
        pytest.raises(AllLLMsFailedToInitializeError) as caught,
    ):
        pool.get_llm_with_fallback()
    (line,) = [x for x in str(caught.value).splitlines() if "Keyless" in x]
    assert line.count("Keyless") == 1, line


def test_migrate_stays_a_function_after_the_pool_imports_its_module(tmp_path: Any) -> None:
    """llmpool.migrate and seed_starter_rows stay functions after the pool imports their module."""
    code = (
        "import llmpool, sys\n"
        f"llmpool.LLMPool('sqlite:///{tmp_path}/a.db').get_llms_from_db()\n"
        f"print(llmpool.migrate('sqlite:///{tmp_path}/b.db'))\n"
        "assert callable(llmpool.seed_starter_rows)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "0001_llms.sql" in done.stdout


def test_a_refused_new_row_is_not_named_by_the_id_made_for_it(store: Any) -> None:
    """A new row refused by a check names the row, not an id it never had; a given id stays."""
    from llmpool.errors import InvalidConfigError
    from llmpool.providers import KnownProviderCheck

    store.validators = (*store.validators, KnownProviderCheck())
    with pytest.raises(InvalidConfigError) as info:
        store.add({"name": "X", "provider": "openia", "model_name": "m"})
    assert str(info.value).startswith("LLM 'X': provider 'openia'")
    assert info.value.llm_id is None and "(id " not in str(info.value)
    assert store.list_llms(enabled_only=False) == []


def test_set_default_command_refuses_a_disabled_row(migrated_url: str) -> None:
    """``llmpool set-default`` of a disabled row exits 1 saying to enable it first."""
    db = ("--database-url", migrated_url)
    added = ok(run_cli("add", "--name", "Off", "--provider", "fake", "--model", "m", *db))
    llm_id = added.split("(id ")[1].split(")")[0]
    ok(run_cli("disable", "Off", *db))
    refused = failed(run_cli("set-default", "Off", *db))
    assert "is disabled" in refused and f"llmpool enable {llm_id}" in refused
    ok(run_cli("enable", "Off", *db))
    ok(run_cli("set-default", "Off", *db))
