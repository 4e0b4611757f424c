"""The ``llmpool`` command: the admin API and health checks from a terminal.

Every command takes ``--database-url`` (else the library's configuration) and ``--json``.
Exit codes: 0 success, 1 the operation failed, 2 a usage error. A user's mistake prints one
line, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from llmpool.cli_commands import COMMANDS, UsageError
from llmpool.errors import LLMPoolError

__all__ = ["UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        msg = f"not valid JSON: {error}"
        raise argparse.ArgumentTypeError(msg) from None


def _row_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--name", required=False)
    parser.add_argument("--provider", required=False)
    parser.add_argument("--model", dest="model_name", required=False)
    parser.add_argument("--priority", type=int)
    parser.add_argument("--scope")
    parser.add_argument(
        "--auth-meta",
        dest="auth_meta",
        type=_json_arg,
        help='e.g. \'{"api_key_env": "OPENAI_API_KEY"}\'',
    )
    parser.add_argument("--config", type=_json_arg, help="e.g. '{\"temperature\": 0.2}'")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``llmpool`` command."""
    common = _Parser(add_help=False)
    common.add_argument("--database-url", help="database URL (default: the configured one)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--actor", default=None, help="name recorded in the audit log")

    parser = _Parser(prog="llmpool", description="Manage the LLMs in the llms table.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common], description=help_text)

    p = command("list", "list LLMs, in fallback order")
    p.add_argument("--provider")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true")
    state.add_argument("--disabled", action="store_true")
    p.add_argument("--search", help="part of the name or model name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", default="global")
    where.add_argument("--all-scopes", action="store_true")

    p = command("show", "show one LLM by id or name")
    p.add_argument("ref", metavar="ID|NAME")

    p = command("add", "add an LLM (flags, or --from-json FILE)")
    _row_flags(p, required=True)
    p.add_argument("--disabled", action="store_true", help="add it disabled (test first)")
    p.add_argument("--default", dest="is_default", action="store_true")
    p.add_argument(
        "--from-json",
        dest="from_json",
        metavar="FILE",
        help="a JSON object or list of objects ('-' for stdin)",
    )

    p = command("edit", "change fields of an LLM")
    p.add_argument("id")
    _row_flags(p, required=False)

    for name, help_text in (
        ("enable", "enable LLMs"),
        ("disable", "disable LLMs"),
        ("delete", "delete LLMs"),
    ):
        p = command(name, help_text)
        p.add_argument("ids", nargs="+", metavar="ID")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = command("set-default", "make an LLM its scope's default")
    p.add_argument("id")

    p = command("chain", "the fallback order, and why a row would not be tried")
    p.add_argument("--scope", default="global")

    p = command("check", "build each LLM and send a tiny prompt (works on disabled rows)")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--scope", default="global")
    p.add_argument("--timeout", type=float, default=20.0)

    p = command("audit", "the audit log, newest first")
    p.add_argument("--llm", dest="llm_id")
    p.add_argument("--since", help="ISO date/time, or relative: 30m, 12h, 7d")
    p.add_argument("--limit", type=int, default=100)

    p = command("migrate", "apply llmpool's migrations")
    p.add_argument("--seed", action="store_true", help="also add the example rows")

    command("providers", "providers found, their extras, and plugins that failed to load")

    command("demo", "a fallback walk on an embedded SQLite database, offline")
    return parser


def _print_error(message: str) -> None:
    print(f"llmpool: error: {message.strip().splitlines()[0]}", file=sys.stderr)
    for line in message.strip().splitlines()[1:]:
        print(f"  {line.strip()}", file=sys.stderr)


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
    _log_warnings()
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        _print_error(str(error))
        return 2
    except LLMPoolError as error:
        _print_error(str(error))
        return 1
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130


def _log_warnings() -> None:
    # The command is an application: it shows llmpool's warnings (a plugin that failed to
    # load, a bad row skipped) as one line each, without tracebacks.
    import logging

    class _OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"llmpool: warning: {record.getMessage()}"

    logger = logging.getLogger("llmpool")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
