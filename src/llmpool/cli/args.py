"""The argument types of the ``llmpool`` command line, and its flags that several commands share."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from llmpool.errors import shorten

#: Adds one command's parser: ``add(name, handler, help_text, epilog=None, *, writes=False,
#: example=None, shared=...)``; returns it for the command's own arguments. The handler takes
#: the parsed arguments and returns the exit code; a command that ``writes`` takes ``--actor``;
#: ``shared`` names the common options it takes (all by default); its ``example`` (command
#: lines, one a line) ends its help. `llmpool.cli.main.SECTIONS` places the command in
#: ``llmpool --help``.
AddCommand = Callable[..., argparse.ArgumentParser]


def json_arg(text: str) -> Any:
    """Parse a JSON argument, refusing one too long or too deep before parsing it."""
    from llmpool.models import MAX_JSON_DEPTH, MAX_JSON_TEXT, json_text_depth

    # Measured before it is parsed: json.loads recurses once per level.
    if len(text) > MAX_JSON_TEXT or json_text_depth(text) > MAX_JSON_DEPTH:
        raise argparse.ArgumentTypeError(
            f"JSON longer than {MAX_JSON_TEXT} characters or nested deeper than "
            f"{MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None


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


def moment(text: str) -> datetime:
    """Parse a ``--since`` or ``--until`` as `llmpool.usage.report.parse_since` reads it."""
    from llmpool.usage.report import as_epoch, parse_since

    now = time.time()
    try:
        parsed = parse_since(text, now)
        as_epoch(parsed, now)  # within range
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return parsed


def allow_unknown_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-unknown-provider`` to a command that writes rows."""
    parser.add_argument(
        "--allow-unknown-provider",
        action="store_true",
        help="accept a provider this machine does not know (its plugin is installed only "
        "where the models are served)",
    )


def grouping(text: str) -> str:
    """Parse a ``usage --by``: row, scope, day, hour, minute or tag:NAME."""
    from llmpool.usage.report import check_by

    try:
        return check_by(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def tag_pair(text: str) -> tuple[str, str]:
    """Parse a ``--tag NAME=VALUE`` as a call's tag is checked (`llmpool.tags.tags_of`)."""
    from llmpool.errors import InvalidOptionError
    from llmpool.tags import tags_of

    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{shorten(text)!r} is not NAME=VALUE")
    try:
        tags_of({name: value})
    except InvalidOptionError as error:
        raise argparse.ArgumentTypeError(str(error).replace("the call's ", "")) from None
    return name, value


def scope_or_all(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--scope S`` (default: global) or ``--all-scopes`` to a command reading many rows."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scope", type=bounded("scope"), default="global", help=help_text)
    where.add_argument("--all-scopes", action="store_true", help="every scope")


def yes_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--yes`` to a command that asks before it destroys (`llmpool.cli.output.confirmed`)."""
    parser.add_argument(
        "--yes",
        action="store_true",
        help=f"{what} without asking (needed when standard input is not a terminal)",
    )
