"""The ``llmpool`` command: the admin API and health checks from a terminal.

The common options (``--database-url``, ``--json``) go before or after the command name, and so
does ``--actor``, which only the commands that write take. ``llmpool --help`` lists the commands
in the sections of `SECTIONS`; each command's ``--help`` ends with an example. A mistyped
command is answered with the closest one. Exit codes: 0 success, 1 the operation failed, 2 a
usage error. An error is one line on stderr, never a traceback, any URL in it with its password
masked. When the reader of the output goes away (``llmpool list | head -1``), the command stops
quietly with exit code 1, as CPython's documentation on ``SIGPIPE`` recommends.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import getpass
import importlib
import json
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from llmpool.cli.output import MAX_MESSAGE, CommandFailed, UsageError, one_line
from llmpool.errors import LLMPoolError, shorten

__all__ = ["SECTIONS", "build_parser", "main", "run", "sections"]

#: The command groups, each registering its commands' parsers and handlers.
_GROUPS = (
    *("llmpool.cli.rows", "llmpool.cli.database", "llmpool.cli.runtime"),
    *("llmpool.cli.history", "llmpool.cli.top", "llmpool.cli.demo", "llmpool.cli.experiments"),
    "llmpool.cli.quotas",
)

#: The sections of ``llmpool --help``, in order, each with its commands in the order listed; a
#: command no section names is listed under "other".
SECTIONS: dict[str, tuple[str, ...]] = {
    "rows": (
        *("list", "show", "add", "edit", "enable", "disable", "set-default", "delete"),
        *("audit", "history", "rollback"),
    ),
    "scopes and routing": ("routing", "experiment", "quota", "export", "apply"),
    "health": ("chain", "top", "check", "doctor", "providers"),
    "usage": ("usage",),
    "schema": ("migrate",),
    "try it": ("demo",),
}

#: The common options; a command that ignores one takes fewer (``add(..., shared=...)``).
SHARED = ("--database-url", "--json")

_EPILOG = """\
Run `llmpool COMMAND --help` for a command's options and an example.
--database-url and --json go before or after COMMAND; --actor (commands that write) too.
Exit codes: 0 success, 1 the operation failed, 2 a usage error."""


class Parser(argparse.ArgumentParser):
    """An argument parser that raises `UsageError` instead of exiting, and ends its help with
    its command's ``example`` (one command line per line)."""

    example: str | None = None

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def format_help(self) -> str:
        """Return the help, then the example."""
        text, lines = super().format_help(), (self.example or "").splitlines()
        if lines:
            text += f"\nexample{'s' * (len(lines) > 1)}:\n" + "".join(f"  {x}\n" for x in lines)
        return text


class MainParser(Parser):
    """The ``llmpool`` parser: its help lists the commands by section, git's way."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.commands: dict[str, str] = {}  # name -> one line of help, as registered

    def format_help(self) -> str:
        """Return the usage, the commands by section, the options and the epilog."""
        # Built when asked for: the commands run without it.
        width = max(40, min(100, shutil.get_terminal_size().columns - 2))
        lines = ["Manage the LLMs in the llms table."]
        for section, names in sections(self.commands):
            lines += ["", f"{section}:"]
            for name in names:
                first = f"  {name:<12} "
                text = textwrap.wrap(self.commands[name], width - len(first))
                lines += [first + text[0], *(" " * len(first) + line for line in text[1:])]
        self.description = "\n".join(lines)
        return super().format_help()


def sections(commands: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Return the sections of ``llmpool --help`` that list any of ``commands``, each with its
    commands in order, and "other" with those no section names, in their order."""
    commands = list(commands)
    placed = {name for names in SECTIONS.values() for name in names}
    groups = [(section, [n for n in names if n in commands]) for section, names in SECTIONS.items()]
    groups.append(("other", [name for name in commands if name not in placed]))
    return [(section, names) for section, names in groups if names]


def _common_options(*, suppress: bool, shared: Sequence[str] = SHARED) -> Parser:
    # On the main parser with defaults; on every command without, so that a value given before
    # the command name is not overwritten by the command's default.
    common = Parser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    if "--database-url" in shared:
        help_text = "database URL (default: LLMPOOL_DATABASE_URL, DATABASE_URL, else a SQLite file)"
        common.add_argument("--database-url", metavar="URL", default=default, help=help_text)
    if "--json" in shared:
        common.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS if suppress else False,
            help="print JSON instead of a table",
        )
    return common


def _add_actor(parser: argparse.ArgumentParser, *, main: bool) -> None:
    # On each command that writes, and hidden on the main parser (where scripts written before
    # may give it), without a default on the command: a value given before its name stays.
    help_text = "name recorded in the audit log (default: LLMPOOL_ACTOR, else your user name)"
    parser.add_argument(
        "--actor",
        metavar="NAME",
        default=None if main else argparse.SUPPRESS,
        help=argparse.SUPPRESS if main else help_text,
    )


class _Version(argparse.Action):
    """``--version``: the version is read from the package metadata only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        from llmpool.version import __version__

        print(f"llmpool {__version__}")
        parser.exit()


def build_parser() -> MainParser:
    """Return the argument parser of the ``llmpool`` command."""
    parser = MainParser(
        prog="llmpool",
        usage="llmpool [--database-url URL] [--json] COMMAND [OPTIONS]",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(suppress=False)],
    )
    _add_actor(parser, main=True)
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="show program's version number and exit"
    )
    common = _common_options(suppress=True)
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        parser_class=Parser,
        prog="llmpool",
        help=argparse.SUPPRESS,
    )
    sub.required = True

    def add(
        name: str,
        handler: Any,
        text: str,
        epilog: str | None = None,
        *,
        writes: bool = False,
        example: str | None = None,
        shared: Sequence[str] = SHARED,
    ) -> Parser:
        parents = [common if shared == SHARED else _common_options(suppress=True, shared=shared)]
        p = sub.add_parser(name, parents=parents, description=text, epilog=epilog)
        if writes:
            _add_actor(p, main=False)
        p.set_defaults(handler=handler, writes=writes)
        p.example = example
        parser.commands[name] = text
        return p

    for group in _GROUPS:
        importlib.import_module(group).register(add)
    return parser


def _unknown_command(argv: Sequence[str], commands: Sequence[str]) -> UsageError | None:
    """Return the error for a command line naming no command, with the closest one."""
    probe = Parser(add_help=False, parents=[_common_options(suppress=False)])
    _add_actor(probe, main=True)
    probe.add_argument("command", nargs="?")
    try:
        name = probe.parse_known_args(argv)[0].command
    except UsageError:
        return None
    if name is None or name in commands:
        return None
    close = difflib.get_close_matches(name, commands, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (see `llmpool --help`)"
    return UsageError(f"unknown command {shorten(name)!r}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmpool`` command; return its exit code.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # errors of this run print as JSON, parse errors too
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        return _failed(_unknown_command(argv, list(parser.commands)) or error, 2, as_json)
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
    if args.actor is not None and not args.writes:
        msg = f"--actor is for the commands that write; {args.command} writes nothing"
        return _failed(UsageError(msg), 2, as_json)
    if not args.actor:
        try:
            args.actor = os.environ.get("LLMPOOL_ACTOR") or getpass.getuser()
        except (KeyError, OSError):  # no user name to be had
            args.actor = "cli"
    # The command is an application: it shows llmpool's warnings as one line each, for its own
    # run only, so that `main` called in-process leaves the host's logging as it found it.
    warnings = _Warnings(logging.WARNING)
    logging.getLogger("llmpool").addHandler(warnings)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # CPython's advice (signal module docs, "Note on SIGPIPE"): point stdout at devnull so
        # the final flush does not fail again, and exit 1. Only a real descriptor: `main` run
        # in-process with a captured stdout has none.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            fileno = sys.stdout.fileno()
            os.dup2(os.open(os.devnull, os.O_WRONLY), fileno)
        return 1
    except UsageError as error:
        return _failed(error, 2, as_json)
    except (LLMPoolError, CommandFailed) as error:
        return _failed(error, 1, as_json)
    except KeyboardInterrupt as error:
        return _failed(error, 130, as_json, "interrupted")
    except Exception as error:
        described = _user_error(error)
        if described is None:
            raise  # a bug: keep the traceback
        return _failed(error, 1, as_json, described)
    finally:
        logging.getLogger("llmpool").removeHandler(warnings)
    return code


def run() -> int:
    """Run the ``llmpool`` command in a process of its own: its console script and ``python -m
    llmpool``.

    Start-up makes objects that live until the process ends (modules, classes, pydantic's
    validators), and the cyclic garbage collector would walk them all for nothing: about 20 ms
    of ``llmpool list``'s 270. So it is paused while the command groups are imported, and what
    they made is moved out of its view (`gc.freeze`) before it runs again. `main`, called
    in-process, leaves the host's collector alone.
    """
    gc.disable()
    try:
        for group in _GROUPS:
            importlib.import_module(group)
        gc.freeze()
    finally:
        gc.enable()
    return main()


def _failed(error: BaseException, code: int, as_json: bool, message: str | None = None) -> int:
    # Cut before the scan: an argparse message may quote a whole (huge) argument.
    text = one_line(shorten(message or str(error), MAX_MESSAGE)) or "unknown error"
    if as_json:
        payload = {"error": text, "type": type(error).__name__, "exit_code": code}
        print(json.dumps(payload), file=sys.stderr)
    else:
        print(f"llmpool: error: {text}", file=sys.stderr)
    return code


def _user_error(error: Exception) -> str | None:
    """Describe an error caused by the command line or its configuration, else ``None``."""
    if isinstance(error, ImportError):  # e.g. a database URL whose driver is not installed
        return f"a module it needs is not installed: {error}"
    if isinstance(error, ValueError):
        return f"{type(error).__name__}: {error}"
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(error, sqlalchemy_exc.ArgumentError):
        return f"unsupported database URL: {error}"
    return None


class _Warnings(logging.Handler):
    """Writes each record as one line to whatever ``sys.stderr`` is when it is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        text = one_line(shorten(record.getMessage(), MAX_MESSAGE))
        print(f"llmpool: warning: {text}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
