"""The ``llmpool`` command line as a newcomer meets it: help grouped by section, an example
that parses on every command, help text on every option, a typo answered with the command
meant, and ``--actor`` only where something is written."""

from __future__ import annotations

import shlex
import sys
import types
from typing import Any

import pytest
from cli_runner import run_cli
from test_cli import ok, parse_table

from llmpool.cli import main as cli

#: The commands that write, and so take --actor.
WRITERS = {
    "add",
    "edit",
    "enable",
    "disable",
    "set-default",
    "delete",
    "apply",
    "routing",
    "experiment",
    "quota",
    "migrate",
    "rollback",
}


def commands() -> list[str]:
    """Every command of the parser, in the order registered."""
    return list(cli.build_parser().commands)


def help_sections(text: str) -> dict[str, list[str]]:
    """The command names ``llmpool --help`` lists under each section heading."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in text.split("\n\noptions:")[0].splitlines():
        if line.endswith(":") and not line.startswith(" "):
            heading = line[:-1]
            found[heading] = []
        elif heading and line.startswith("  ") and not line.startswith("   "):
            found[heading].append(line.split()[0])
    return found


def test_help_lists_every_command_once_by_section() -> None:
    """``llmpool --help`` lists each command once, under its section, sections in order."""
    listed = help_sections(ok(run_cli("--help")))
    assert list(listed) == [
        s for s in cli.SECTIONS if any(n in commands() for n in cli.SECTIONS[s])
    ]
    assert sorted(n for names in listed.values() for n in names) == sorted(commands())
    assert listed["rows"][:3] == ["list", "show", "add"]
    assert "doctor" in listed["health"] and listed["schema"] == ["migrate"]
    assert listed["usage"] == ["usage"]


def test_a_command_no_section_names_is_listed_under_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group registering through the positional ``add(name, handler, text)`` works: its
    command runs, and, named by no section, is listed under "other"; ``writes=True`` gives a
    command --actor."""
    seen: list[Any] = []

    def register(add: Any) -> None:
        add("frobnicate", lambda args: seen.append(args.actor) or 0, "frobnicate the table")

    group = types.ModuleType("frobnicate_group")
    group.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "frobnicate_group", group)
    monkeypatch.setattr(cli, "_GROUPS", (*cli._GROUPS, "frobnicate_group"))
    listed = help_sections(ok(run_cli("--help")))
    assert listed["other"] == ["frobnicate"]
    assert "history" in listed["rows"]
    assert ok(run_cli("frobnicate")) == "" and seen and seen[0]  # the user's name as actor
    assert "--actor" in ok(run_cli("rollback", "--help"))
    assert run_cli("frobnicate", "--actor", "x").code == 2
    assert cli.sections(["top", "zap", "list"]) == [
        ("rows", ["list"]), ("health", ["top"]), ("other", ["zap"]),
    ]  # fmt: skip


def test_every_command_ends_its_help_with_an_example_that_parses() -> None:
    """Each command's --help ends with at least one example, and each parses as written."""
    parse = cli.build_parser().parse_args
    for name in commands():
        text = ok(run_cli(name, "--help"))
        head, _, examples = text.rpartition("\nexample")
        assert head and examples.startswith((":\n", "s:\n")), name
        for line in examples.splitlines()[1:]:
            argv = shlex.split(line)
            assert argv[:2] == ["llmpool", name], line
            assert parse(argv[1:]).handler, line


def _undocumented(text: str) -> list[str]:
    """The arguments and options a --help lists without a line of help."""
    missing, section = [], False
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line in ("options:", "positional arguments:")
            continue
        if not section or not line.startswith("  ") or line.startswith("   "):
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if "  " not in line.strip() and not following.startswith("   "):
            missing.append(line.strip())
    return missing


def test_every_option_has_help_text() -> None:
    """No command lists an argument or option without saying what it does."""
    assert _undocumented(ok(run_cli("--help"))) == []
    missing = {name: _undocumented(ok(run_cli(name, "--help"))) for name in commands()}
    assert {name: found for name, found in missing.items() if found} == {}
    assert _undocumented("options:\n  --bare\n  --told  what it does\n") == ["--bare"]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("lst", "list"), ("set-defualt", "set-default"), ("doctr", "doctor"), ("migarte", "migrate")],
)
def test_a_mistyped_command_names_the_one_meant(typed: str, meant: str) -> None:
    """A typo is one line naming the closest command, exit code 2, options around it or not."""
    result = run_cli(typed)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"llmpool: error: unknown command {typed!r}; did you mean {meant!r}?\n"
    around = run_cli("--database-url", "sqlite://", "--actor", "ops", typed, "--scope", "x")
    assert (around.code, around.err) == (2, result.err)


def test_an_unknown_command_without_a_close_one_points_to_help() -> None:
    """A word like no command says so and points to --help; with --json, as a JSON error."""
    result = run_cli("zzzzzz")
    assert (result.code, result.err) == (
        2, "llmpool: error: unknown command 'zzzzzz' (see `llmpool --help`)\n",
    )  # fmt: skip
    as_json = run_cli("--json", "lst")
    assert as_json.code == 2
    assert "\"error\": \"unknown command 'lst'; did you mean 'list'?\"" in as_json.err


def test_actor_is_an_option_of_the_commands_that_write_only() -> None:
    """--actor is in the help of each command that writes, and of none that only reads; a
    read refuses it (exit 2) before or after its name."""
    with_actor = {name for name in commands() if "--actor NAME" in ok(run_cli(name, "--help"))}
    assert with_actor == WRITERS
    assert "--actor NAME" not in ok(run_cli("--help"))
    after = run_cli("list", "--actor", "ops")
    assert after.code == 2 and "unrecognized arguments: --actor ops" in after.err
    before = run_cli("--actor", "ops", "list")
    assert before.code == 2
    assert (
        before.err
        == "llmpool: error: --actor is for the commands that write; list writes nothing\n"
    )


def test_actor_before_a_writing_command_is_still_recorded(sqlite_url: str) -> None:
    """``llmpool --actor NAME add ...`` (scripts written before) records NAME in the audit log."""
    db = ("--database-url", sqlite_url)
    ok(run_cli("--actor", "ops", "add", "--name", "A", "--provider", "fake", "--model", "m", *db))
    ok(run_cli("edit", "A", "--priority", "3", "--actor", "alice", *db))
    _, entries = parse_table(ok(run_cli("audit", *db)))
    assert [e["ACTOR"] for e in entries] == ["alice", "ops"]
