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

__all__ = [
    "ROW_FLAGS",
    "AddCommand",
    "Handler",
    "Parser",
    "assignment",
    "bounded",
    "common_options",
    "edit_flags",
    "json_arg",
    "row_fields",
    "row_flags",
    "scope_selector",
]

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


#: The row fields that ``add`` and ``edit`` take as flags: flag, field, argparse keywords.
#: A new field needs one line here (its values are checked by the store).
ROW_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--name", "name", {}),
    ("--provider", "provider", {}),
    ("--model", "model_name", {}),
    ("--priority", "priority", {"type": int}),
    ("--scope", "scope", {}),
    ("--kind", "kind", {"choices": ("chat", "embedding"), "help": "chat (default) or embedding"}),
    ("--space", "space", {"help": "an embedding row's vector space label ('' clears it)"}),
    ("--weight", "weight", {"type": int, "help": "share among equal priority (routing weighted)"}),
    ("--rpm", "rpm", {"type": int, "help": "requests per minute at most (--set rpm=null clears)"}),
    ("--tpm", "tpm", {"type": int, "help": "tokens per minute at most (--set tpm=null clears)"}),
    (
        "--auth-meta",
        "auth_meta",
        {
            "type": json_arg,
            "help": 'replaces the whole object, e.g. \'{"api_key_env": "OPENAI_API_KEY"}\'',
        },
    ),
    (
        "--config",
        "config",
        {
            "type": json_arg,
            "help": "replaces the whole object, e.g. '{\"temperature\": 0.2}'; to change "
            "one key and keep the others, use --set config.KEY=VALUE",
        },
    ),
)


def row_fields() -> tuple[str, ...]:
    """Return the fields `ROW_FLAGS` sets."""
    return tuple(field for _, field, _ in ROW_FLAGS)


def row_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add the `ROW_FLAGS` (but those whose field is in ``skip``) to a parser."""
    # Values to write are checked by the store, whose error names the row and the field.
    for flag, field, options in ROW_FLAGS:
        if field not in skip:
            parser.add_argument(flag, dest=field, **options)


def edit_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--set PATH=VALUE`` and ``--unset PATH`` (merging edits of any field)."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        type=assignment,
        help="set one field or key, keeping the others: priority=5, config.temperature=0.2, "
        "auth_meta.api_key_env=OPENAI_API_KEY (VALUE is JSON, else text); repeatable",
    )
    parser.add_argument(
        "--unset",
        dest="unsets",
        action="append",
        default=[],
        metavar="PATH",
        help="remove one key (config.max_tokens), or reset a field to its default; repeatable",
    )


def assignment(text: str) -> tuple[str, Any]:
    """Parse ``PATH=VALUE``: VALUE as JSON when it is JSON, else as text.

    Example:
        >>> assignment("config.temperature=0.2"), assignment("name=GPT 4")
        (('config.temperature', 0.2), ('name', 'GPT 4'))
    """
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        msg = f"{shorten(text)!r} is not PATH=VALUE (e.g. config.temperature=0.2)"
        raise argparse.ArgumentTypeError(msg)
    try:
        parsed = json_arg(value)
    except argparse.ArgumentTypeError:
        parsed = value
    return path.strip(), parsed


def scope_selector(parser: argparse.ArgumentParser) -> None:
    """Add ``--scope``: the scope a NAME is looked up in (when several rows share it)."""
    parser.add_argument(
        "--scope",
        dest="ref_scope",
        type=bounded("scope"),
        help="look NAME up in this scope (when rows of several scopes share it)",
    )


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
