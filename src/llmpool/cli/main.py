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
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TextIO

from llmpool.cli.args import Handler, Parser, common_options
from llmpool.cli.output import MAX_MESSAGE, CommandFailed, UsageError, one_line
from llmpool.errors import LLMPoolError, shorten

__all__ = ["build_parser", "main"]

#: The command groups, each registering its parsers next to its handlers.
_GROUPS = (
    "llmpool.cli.rows",
    "llmpool.cli.schema",
    "llmpool.cli.chain",
    "llmpool.cli.runtime",
    "llmpool.cli.doctor",
    "llmpool.cli.apply",
    "llmpool.cli.usage",
    "llmpool.cli.routing",
)


def _groups() -> list[ModuleType]:
    return [importlib.import_module(name) for name in _GROUPS]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``llmpool`` command."""
    parser = Parser(
        prog="llmpool",
        description="Manage the LLMs in the llms table.",
        epilog=(
            "--database-url, --json and --actor go before or after COMMAND. Exit codes: 0 "
            "success, 1 the operation failed, 2 a usage error."
        ),
        parents=[common_options(suppress=False)],
    )
    from llmpool.version import __version__

    parser.add_argument("--version", action="version", version=f"llmpool {__version__}")
    common = common_options(suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def add(name: str, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_text, parents=[common], description=help_text, epilog=epilog
        )

    for group in _groups():
        group.register(add)
    return parser


#: Whether this run prints its errors as JSON (``--json``), set once the command line is read.
_json_errors = False


def _print_error(message: str, error: BaseException | None = None, code: int = 1) -> None:
    # Cut before the scan: an argparse message may quote a whole (huge) argument.
    text = one_line(shorten(message, MAX_MESSAGE)) or "unknown error"
    if _json_errors:
        kind = type(error).__name__ if error is not None else "UsageError"
        payload = {"error": text, "type": kind, "exit_code": code}
        print(json.dumps(payload), file=sys.stderr)
        return
    print(f"llmpool: error: {text}", file=sys.stderr)


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
    global _json_errors
    argv = list(sys.argv[1:] if argv is None else argv)
    _json_errors = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        _print_error(str(error), error, 2)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    args.actor = args.actor or os.environ.get("LLMPOOL_ACTOR") or _os_user()
    with _warnings_shown():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    commands: dict[str, Handler] = {}
    for group in _groups():
        commands.update(group.COMMANDS)
    try:
        code = commands[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as error:
        _print_error(str(error), error, 2)
        return 2
    except (LLMPoolError, CommandFailed) as error:
        _print_error(str(error), error)
        return 1
    except KeyboardInterrupt as error:
        _print_error("interrupted", error, 130)
        return 130
    except Exception as error:
        described = _user_error(error)
        if described is None:
            raise  # a bug: keep the traceback
        _print_error(described, error)
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
