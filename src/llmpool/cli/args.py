"""The ``llmpool`` command line's parser: shared options and argument types.

Each command module registers its own parsers (`AddCommand`) next to its handlers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from llmpool.cli.output import UsageError
from llmpool.errors import shorten

__all__ = ["AddCommand", "Handler", "Parser", "bounded", "common_options", "json_arg", "row_flags"]

#: A command's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    """Adds one command's parser; returns it for the command's own arguments."""

    def __call__(
        self, name: str, help_text: str, epilog: str | None = None
    ) -> argparse.ArgumentParser: ...


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def json_arg(text: str) -> Any:
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


def bounded(field: str) -> Callable[[str], str]:
    """Return an argparse type refusing a lookup longer than ``field`` can hold (exit code 2)."""

    def text(value: str) -> str:
        from llmpool.models import MAX_LENGTHS, MAX_SEARCH_LENGTH

        limit = MAX_SEARCH_LENGTH if field == "search" else MAX_LENGTHS[field]
        if len(value) > limit:
            msg = f"{shorten(value)!r} is {len(value)} characters long; at most {limit} allowed"
            raise argparse.ArgumentTypeError(msg)
        return value

    return text


def row_flags(parser: argparse.ArgumentParser) -> None:
    # Values to write are checked by the store, whose error names the row and the field.
    parser.add_argument("--name")
    parser.add_argument("--provider")
    parser.add_argument("--model", dest="model_name")
    parser.add_argument("--priority", type=int)
    parser.add_argument("--scope")
    parser.add_argument(
        "--auth-meta",
        dest="auth_meta",
        type=json_arg,
        help='e.g. \'{"api_key_env": "OPENAI_API_KEY"}\'',
    )
    parser.add_argument("--config", type=json_arg, help="e.g. '{\"temperature\": 0.2}'")


def common_options(*, suppress: bool) -> Parser:
    # The same options on the main parser (with defaults) and on every command (without, so a
    # value given before the command name is not overwritten by the command's default).
    common = Parser(add_help=False)
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
