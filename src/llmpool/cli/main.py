"""The ``llmpool`` command: the admin API and health checks from a terminal.

The common options (``--database-url``, ``--json``, ``--actor``) go before or after the command
name. The database is ``--database-url``, else the library's configuration. Exit codes: 0
success, 1 the operation failed, 2 a usage error. An error is one line on stderr, never a
traceback, and any URL in it has its password masked. When the reader of the output goes away
(``llmpool list | head -1``), the command stops quietly with exit code 1, as CPython's
documentation on ``SIGPIPE`` recommends.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TextIO

from llmpool.cli.admin import COMMANDS, MAX_MESSAGE, CommandFailed, UsageError, one_line
from llmpool.cli.runtime import RUNTIME_COMMANDS
from llmpool.errors import LLMPoolError, shorten

__all__ = ["CommandFailed", "UsageError", "build_parser", "main"]

_ADD_EPILOG = (
    "--from-json takes one object or a list of objects with the row's fields (name, "
    "provider, model_name, scope, priority, enabled, is_default, auth_meta, config). A list "
    "is added in a single transaction (store.add_many): every item is validated first, and "
    "if any item is refused (a bad field, a secret, a name or id already taken) nothing is "
    "written; the error names the item by its number."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _json_arg(text: str) -> Any:
    from llmpool.models import MAX_JSON_DEPTH, MAX_JSON_TEXT, json_text_depth

    # Measured before it is parsed: json.loads recurses once per level.
    if len(text) > MAX_JSON_TEXT or json_text_depth(text) > MAX_JSON_DEPTH:
        msg = (
            f"JSON longer than {MAX_JSON_TEXT} characters or nested deeper than "
            f"{MAX_JSON_DEPTH} levels"
        )
        raise argparse.ArgumentTypeError(msg)
    try:
        return json.loads(text)
    except ValueError as error:
        msg = f"not valid JSON: {error}"
        raise argparse.ArgumentTypeError(msg) from None


def _bounded(field: str) -> Callable[[str], str]:
    """Return an argparse type refusing a lookup longer than ``field`` can hold (exit code 2)."""

    def text(value: str) -> str:
        from llmpool.models import MAX_LENGTHS, MAX_SEARCH_LENGTH

        limit = MAX_SEARCH_LENGTH if field == "search" else MAX_LENGTHS[field]
        if len(value) > limit:
            msg = f"{shorten(value)!r} is {len(value)} characters long; at most {limit} allowed"
            raise argparse.ArgumentTypeError(msg)
        return value

    return text


def _row_flags(parser: argparse.ArgumentParser) -> None:
    # Values to write are checked by the store, whose error names the row and the field.
    parser.add_argument("--name")
    parser.add_argument("--provider")
    parser.add_argument("--model", dest="model_name")
    parser.add_argument("--priority", type=int)
    parser.add_argument("--scope")
    parser.add_argument(
        "--auth-meta",
        dest="auth_meta",
        type=_json_arg,
        help='e.g. \'{"api_key_env": "OPENAI_API_KEY"}\'',
    )
    parser.add_argument("--config", type=_json_arg, help="e.g. '{\"temperature\": 0.2}'")


def _common_options(*, suppress: bool) -> _Parser:
    # The same options on the main parser (with defaults) and on every command (without, so a
    # value given before the command name is not overwritten by the command's default).
    common = _Parser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    common.add_argument(
        "--database-url", default=default, help="database URL (default: the configured one)"
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print JSON instead of a table",
    )
    common.add_argument("--actor", default=default, help="name recorded in the audit log")
    return common


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``llmpool`` command."""
    parser = _Parser(
        prog="llmpool",
        description="Manage the LLMs in the llms table.",
        epilog=(
            "--database-url, --json and --actor go before or after COMMAND. Exit codes: 0 "
            "success, 1 the operation failed, 2 a usage error."
        ),
        parents=[_common_options(suppress=False)],
    )
    common = _common_options(suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_text, parents=[common], description=help_text, epilog=epilog
        )

    p = command("list", "list LLMs, in fallback order")
    p.add_argument("--provider", type=_bounded("provider"))
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true")
    state.add_argument("--disabled", action="store_true")
    p.add_argument("--search", type=_bounded("search"), help="part of the name or model name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", type=_bounded("scope"), default="global")
    where.add_argument("--all-scopes", action="store_true")

    p = command("show", "show one LLM by id or name")
    p.add_argument("ref", metavar="ID|NAME", type=_bounded("name"))

    p = command("add", "add an LLM (flags, or --from-json FILE)", _ADD_EPILOG)
    _row_flags(p)
    p.add_argument("--disabled", action="store_true", help="add it disabled (test first)")
    p.add_argument("--default", dest="is_default", action="store_true")
    p.add_argument(
        "--from-json",
        dest="from_json",
        metavar="FILE",
        help="a JSON object or list of objects ('-' for stdin); all validated before any write",
    )

    p = command("edit", "change fields of an LLM")
    p.add_argument("id", type=_bounded("id"))
    _row_flags(p)

    for name, help_text in (
        ("enable", "enable LLMs"),
        ("disable", "disable LLMs"),
        ("delete", "delete LLMs"),
    ):
        p = command(name, help_text)
        p.add_argument("ids", nargs="+", metavar="ID", type=_bounded("id"))
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = command("set-default", "make an LLM its scope's default")
    p.add_argument("id", type=_bounded("id"))

    p = command("chain", "the fallback order, and why a row would not be tried")
    p.add_argument("--scope", type=_bounded("scope"), default="global")

    p = command("check", "build each LLM and send a tiny prompt (works on disabled rows)")
    p.add_argument("ids", nargs="*", metavar="ID|NAME", type=_bounded("name"))
    p.add_argument("--scope", type=_bounded("scope"), default="global")
    p.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds each row may take; passed to its client and enforced (default: 20)",
    )

    p = command("audit", "the audit log, newest first")
    p.add_argument("--llm", dest="llm_id", type=_bounded("id"))
    p.add_argument("--since", help="ISO date/time, or relative: 30m, 12h, 7d")
    p.add_argument("--limit", type=int, default=100)

    p = command("migrate", "apply llmpool's migrations")
    p.add_argument("--seed", action="store_true", help="also add the example rows")

    command("providers", "providers found, their extras, and plugins that failed to load")

    command(
        "demo",
        "a fallback walk on a temporary SQLite database, offline (ignores --database-url)",
    )
    return parser


def _print_error(message: str) -> None:
    # Cut before the scan: an argparse message may quote a whole (huge) argument.
    text = one_line(shorten(message, MAX_MESSAGE))
    print(f"llmpool: error: {text or 'unknown error'}", file=sys.stderr)


def _user_error(error: Exception) -> str | None:
    """Describe an error caused by the command line or its configuration, else ``None``."""
    if isinstance(error, ImportError):
        # e.g. a database URL whose driver is not installed (mysql://, oracle://)
        return f"a module it needs is not installed: {error}"
    if isinstance(error, ValueError):
        return f"{type(error).__name__}: {error}"
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(error, sqlalchemy_exc.ArgumentError):
        return f"unsupported database URL: {error}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmpool`` command; return its exit code.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        _print_error(str(error))
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    args.actor = args.actor or os.environ.get("LLMPOOL_ACTOR") or _os_user()
    with _warnings_shown():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {**COMMANDS, **RUNTIME_COMMANDS}
    try:
        code = commands[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as error:
        _print_error(str(error))
        return 2
    except (LLMPoolError, CommandFailed) as error:
        _print_error(str(error))
        return 1
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as error:
        described = _user_error(error)
        if described is None:
            raise  # a bug: keep the traceback
        _print_error(described)
        return 1
    return code


def _reader_gone() -> int:
    # CPython's recommendation (signal module docs, "Note on SIGPIPE"): point stdout at devnull
    # so the interpreter's final flush does not fail again, and exit with an error status.
    # Only a real file descriptor is redirected: `main` called in-process with a captured
    # stdout has none, and must not point its host's descriptor 1 at devnull.
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return 1
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    return 1


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, one line per record."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"llmpool: warning: {one_line(shorten(record.getMessage(), MAX_MESSAGE))}"


@contextlib.contextmanager
def _warnings_shown() -> Iterator[None]:
    # The command is an application: it shows llmpool's warnings (a plugin that failed to
    # load, a bad row skipped) as one line each, without tracebacks, for the command's run
    # only, so `main` called in-process leaves the host's logging as it found it.
    logger = logging.getLogger("llmpool")
    handler = _StderrHandler()
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
