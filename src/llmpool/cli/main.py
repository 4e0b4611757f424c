"""The ``llmpool`` command: the admin API and health checks from a terminal.

The common options (``--database-url``, ``--json``, ``--actor``) go before or after the command
name. Exit codes: 0 success, 1 the operation failed, 2 a usage error. An error is one line on
stderr, never a traceback, any URL in it with its password masked. When the reader of the
output goes away (``llmpool list | head -1``), the command stops quietly with exit code 1, as
CPython's documentation on ``SIGPIPE`` recommends.
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
from collections.abc import Sequence
from typing import Any, NoReturn

from llmpool.cli.output import MAX_MESSAGE, CommandFailed, UsageError, one_line
from llmpool.errors import LLMPoolError, shorten

__all__ = ["build_parser", "main"]

#: The command groups, each registering its commands' parsers and handlers.
_GROUPS = ("llmpool.cli.rows", "llmpool.cli.database", "llmpool.cli.runtime", "llmpool.cli.demo")

#: The common options; a command that ignores some takes fewer (``add(..., shared=...)``).
SHARED = ("--database-url", "--json", "--actor")


class Parser(argparse.ArgumentParser):
    """An argument parser that raises `UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _common_options(*, suppress: bool, shared: Sequence[str] = SHARED) -> Parser:
    # On the main parser with defaults; on every command without, so that a value given before
    # the command name is not overwritten by the command's default.
    common = Parser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    if "--database-url" in shared:
        common.add_argument(
            "--database-url", default=default, help="database URL (default: the configured one)"
        )
    if "--json" in shared:
        common.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS if suppress else False,
            help="print JSON instead of a table",
        )
    if "--actor" in shared:
        common.add_argument("--actor", default=default, help="name recorded in the audit log")
    return common


class _Version(argparse.Action):
    """``--version``: the version is read from the package metadata only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        from llmpool.version import __version__

        print(f"llmpool {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``llmpool`` command."""
    parser = Parser(
        prog="llmpool",
        description="Manage the LLMs in the llms table.",
        epilog=(
            "--database-url, --json and --actor go before or after COMMAND. Exit codes: 0 "
            "success, 1 the operation failed, 2 a usage error."
        ),
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="show program's version number and exit"
    )
    common = _common_options(suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def add(
        name: str,
        handler: Any,
        text: str,
        epilog: str | None = None,
        *,
        shared: Sequence[str] = SHARED,
    ) -> Parser:
        parents = [common if shared == SHARED else _common_options(suppress=True, shared=shared)]
        p = sub.add_parser(name, help=text, parents=parents, description=text, epilog=epilog)
        p.set_defaults(handler=handler)
        return p

    for group in _GROUPS:
        importlib.import_module(group).register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmpool`` command; return its exit code.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # errors of this run print as JSON, parse errors too
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _failed(error, 2, as_json)
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
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
    sys.exit(main())
