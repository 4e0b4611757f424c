"""What every ``llmpool`` command shares: its errors, safe one-line text, tables and JSON, and
the pool and row lookups.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.errors import describe_row, visible

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.stored import StoredRow

__all__ = [
    "MAX_MESSAGE",
    "CommandFailed",
    "UsageError",
    "cell",
    "emit",
    "allow_unknown_flag",
    "allow_unknown_providers",
    "find_llm",
    "find_stored",
    "mask_passwords",
    "one_line",
    "open_pool",
    "quiet",
    "row_reason",
    "table",
]


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


def read_input(path: str) -> str:
    """Return the text of ``path`` (``-``: standard input), or a `UsageError` naming it."""
    import sys
    from pathlib import Path

    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text("utf-8")
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise UsageError(msg) from None
    except UnicodeDecodeError:
        msg = f"cannot read {path}: not UTF-8 text"
        raise UsageError(msg) from None


class CommandFailed(Exception):
    """The operation was refused or failed, with a message for the user (exit code 1)."""


# -- output ----------------------------------------------------------------------------------

# scheme://user:password@host...: up to a space, quote, bracket, comma or semicolon, without
# trailing punctuation (so "(postgresql://u:pw@db/app)." keeps its brackets and full stop).
#
# Linear in the text. The lookbehind lets a match start only where a run of scheme characters
# starts (elsewhere it fails at once), and a scheme needs a letter: digits, "+", "." and "-"
# may lead, as the leftmost-letter start of a scheme would skip them. Each attempt then reads
# its own run, the user and password that follow "://" (neither holds "/", so they end before
# the next "://"), and the host and path: those are consumed when the attempt matches, and hold
# only ":" and "." when it fails. So no character is read by more than a bounded number of
# attempts. (A pattern free to start at every letter is quadratic on a long run of letters: a
# 100 KB name takes seconds.)
_URL_WITH_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.\-])[0-9+.\-]*[A-Za-z][A-Za-z0-9+.\-]*://"
    r"[^\s:/@'\"<>(),;]*:(?P<password>[^\s@/'\"<>(),;]+)@"
    r"[^\s'\"<>(),;]*[^\s'\"<>(),;:.]"
)

#: The longest line the command prints for an error or a warning.
MAX_MESSAGE = 4000


def _mask(match: re.Match[str]) -> str:
    url, start = match.group(0), match.start()
    return url[: match.start("password") - start] + "***" + url[match.end("password") - start :]


def mask_passwords(text: str) -> str:
    """Return ``text`` with the password of every ``scheme://user:password@host`` replaced.

    Linear in the length of the text, whatever it holds.

    Example:
        >>> mask_passwords("(postgresql://app:pw@db/app). sqlite:///x.db")
        '(postgresql://app:***@db/app). sqlite:///x.db'
    """
    return _URL_WITH_PASSWORD.sub(_mask, text)


def one_line(message: str) -> str:
    """Return ``message`` as one line that is safe to print.

    The password of any URL in it is masked, every resolved secret value redacted
    (`llmpool.credentials.redaction`), and control characters (a terminal escape
    sequence in a row's name) written as visible escapes (`llmpool.errors.visible`).

    Example:
        >>> one_line("Could not connect:\\n  (postgresql://app:pw@db/app) refused")
        'Could not connect: (postgresql://app:***@db/app) refused'
        >>> one_line("\\x1b[31mred")
        '\\\\x1b[31mred'
    """
    parts = [line.strip() for line in message.strip().splitlines() if line.strip()]
    pieces = parts[:1]
    for before, part in itertools.pairwise(parts):
        pieces += [" " if before.endswith(":") else "; ", part]
    from llmpool.credentials.redaction import redact

    return visible(redact(mask_passwords("".join(pieces))))


def row_reason(text: str | None, name: str | None, llm_id: str | None) -> str | None:
    """Return why a row is skipped or invalid as one safe line, without the row's own name
    and id: the row is already named beside it.

    Example:
        >>> row_reason("LLM 'A' (id 1): config.temperature is not a number", "A", "1")
        'config.temperature is not a number'
        >>> row_reason("LLM 'A' (id 1) is invalid: field 'priority': not an integer", "A", "1")
        "field 'priority': not an integer"
    """
    if not text:
        return None
    own = describe_row(name, llm_id)
    if text.startswith(own):
        text = text[len(own) :].removeprefix(" is invalid").removeprefix(":").strip()
    return one_line(text.replace(own, "the row"))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as a plain-text table with upper-case column headers."""
    if not rows:
        return "(none)"
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def cell(value: Any) -> str:
    """Render one value for a table: yes/no, ``-`` for none, JSON for objects, one line."""
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None or value == []:
        return "-"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return one_line(", ".join(value))
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return one_line(text)


def emit(args: argparse.Namespace, data: Any, render: Callable[[], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else the table ``render`` returns."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(render())


# -- helpers ---------------------------------------------------------------------------------


def open_pool(args: argparse.Namespace, *, writes: bool = False, **kwargs: Any) -> LLMPool:
    """Return a pool on the command's database, without background change detection.

    A read (the default) never creates or migrates anything: a SQLite file that does not
    exist is not created, and a database without llmpool's tables fails the read with an
    error naming ``llmpool migrate``. A command that ``writes`` keeps the library's default:
    an embedded SQLite database is created and migrated on first use.

    Raises:
        DatabaseError: A read names a SQLite file that does not exist.
    """
    from llmpool.pool.facade import LLMPool

    if not writes:
        _require_sqlite_file(args.database_url)
        kwargs.setdefault("auto_migrate", False)
    return LLMPool(args.database_url, poll_interval=0, listen=False, **kwargs)


def _require_sqlite_file(url: str | None) -> None:
    # SQLite creates a missing file on connect: a read (a typo in the path) must not.
    from pathlib import Path

    from llmpool.errors import DatabaseError
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    parsed = resolve_database_url(url)
    path = parsed.database or ""
    # In memory (nothing to create) or a URI filename (?uri=true: its mode says what to create).
    if parsed.get_backend_name() != "sqlite" or path in ("", ":memory:") or path[:5] == "file:":
        return
    if Path(path).exists():
        return
    msg = (
        f"Could not open {mask_url(parsed)}: the file does not exist, so llmpool's tables are "
        "missing; run `llmpool migrate` against this database first (a read creates nothing)"
    )
    raise DatabaseError(msg)


def find_stored(pool: LLMPool, ref: str, *, scope: str | None = None) -> StoredRow:
    """Return the row (valid or not) whose id, or else whose name, is ``ref``.

    Raises:
        ArgumentTooLongError: ``ref`` is longer than any name (or id) could be.
        LLMNotFoundError: No row has that id or name.
        AmbiguousNameError: Several rows, in different scopes, have that name.
    """
    from llmpool.repository.stored import find_row

    return find_row(pool.store, ref, scope=scope)


def find_llm(pool: LLMPool, ref: str, *, scope: str | None = None) -> LLMConfig:
    """Return the valid row whose id, or else whose (unique) name, is ``ref``.

    Raises:
        ArgumentTooLongError: ``ref`` is longer than any name (or id) could be.
        LLMNotFoundError: No row has that id or name.
        AmbiguousNameError: Several rows, in different scopes, have that name.
        InvalidConfigError: The row fails validation (what is wrong with it).
    """
    row = find_stored(pool, ref, scope=scope)
    if row.config is None:
        assert row.error is not None
        raise row.error
    return row.config


@contextlib.contextmanager
def quiet(name: str) -> Iterator[None]:
    """Raise the logger ``name`` to ERROR for the block: the command says it in its own words."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def allow_unknown_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-unknown-provider`` to a command that writes rows."""
    parser.add_argument(
        "--allow-unknown-provider",
        action="store_true",
        help="accept a provider this machine does not know (its plugin is installed only "
        "where the models are served)",
    )


def allow_unknown_providers(store: Any) -> None:
    """Drop the known-provider check from ``store``'s write-time validators."""
    from llmpool.providers import KnownProviderCheck

    validators = getattr(store, "validators", ())
    store.validators = tuple(v for v in validators if not isinstance(v, KnownProviderCheck))
