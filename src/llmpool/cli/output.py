"""What every ``llmpool`` command shares: its errors, safe one-line text, tables and JSON, the
confirmation prompt, progress lines, and the store (or, for the commands that build models, the
pool) it opens.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.errors import DatabaseError, describe_row, shorten, visible

if TYPE_CHECKING:
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.sql.store import SQLStore

#: The longest line the command prints for an error or a warning.
MAX_MESSAGE = 4000


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


class CommandFailed(Exception):
    """The operation was refused or failed, with a message for the user (exit code 1)."""


# scheme://user:password@host..., up to a space, quote, bracket, comma or semicolon, without
# trailing punctuation. Linear in the text: the lookbehind lets a match start only where a run
# of scheme characters starts, so no character is read by more than a few attempts (a pattern
# free to start at every letter takes seconds on a 100 KB name).
_URL_WITH_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.\-])[0-9+.\-]*[A-Za-z][A-Za-z0-9+.\-]*://"
    r"[^\s:/@'\"<>(),;]*:(?P<password>[^\s@/'\"<>(),;]+)@"
    r"[^\s'\"<>(),;]*[^\s'\"<>(),;:.]"
)


def mask_passwords(text: str) -> str:
    """Return ``text`` with the password of every ``scheme://user:password@host`` replaced."""

    def mask(match: re.Match[str]) -> str:
        url, start = match.group(0), match.start()
        return url[: match.start("password") - start] + "***" + url[match.end("password") - start :]

    return _URL_WITH_PASSWORD.sub(mask, text)


def one_line(message: str) -> str:
    """Return ``message`` as one line safe to print: URL passwords masked, resolved secrets
    redacted, control characters escaped.

    Example:
        >>> one_line("Could not connect:\\n  (postgresql://app:pw@db/app) refused")
        'Could not connect: (postgresql://app:***@db/app) refused'
    """
    from llmpool.credentials.redaction import redact

    parts = [line.strip() for line in message.strip().splitlines() if line.strip()]
    pieces = parts[:1]
    for before, part in itertools.pairwise(parts):
        pieces += [" " if before.endswith(":") else "; ", part]
    return visible(redact(mask_passwords("".join(pieces))))


def row_reason(text: str | None, name: str | None, llm_id: str | None) -> str | None:
    """Return why a row is skipped or invalid as one safe line, without the row's own name and
    id (the row is named beside it)."""
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
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == []:
        return "-"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return one_line(", ".join(value))
    return one_line(json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value))


def emit(args: argparse.Namespace, data: Any, render: Callable[[], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else the text ``render`` returns."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else render())


def require_extra(module: str, command: str) -> None:
    """Import ``module``, an optional library ``command`` draws with, or fail in one line naming
    the extra to install (the core command line never imports it)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        msg = f"{command} needs {module}, which is not installed: pip install 'llmpool[tui]'"
        raise CommandFailed(msg) from None


def read_input(path: str) -> str:
    """Return the text of ``path`` (``-``: standard input), or a `UsageError` naming it."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text("utf-8")
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
    except UnicodeDecodeError:
        msg = f"cannot read {path}: not UTF-8 text"
    raise UsageError(msg)


def confirmed(args: argparse.Namespace, command: str, question: str) -> bool:
    """Return whether a command that destroys (deletes rows, reverts migrations) may go on:
    ``--yes`` (`llmpool.cli.args.yes_flag`), or "y" at the prompt (a `UsageError` when
    standard input is no terminal to ask on). Every such command asks through this."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{command} asks for confirmation; pass --yes when not on a terminal")
    answer = input(f"{shorten(visible(question), 400)} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


@contextlib.contextmanager
def open_store(
    args: argparse.Namespace, *, writes: bool = False, checks: bool = False
) -> Iterator[SQLStore]:
    """Yield a store on the command's database: one that ``writes`` (or ``checks`` a plan)
    checks rows as a pool's does (but for the known provider with ``--allow-unknown-provider``)
    and may create and migrate an embedded SQLite database; a read checks and creates nothing."""
    from llmpool.repository.sql.store import SQLStore

    if not writes:
        require_tables(args.database_url)
    validators = None if writes or checks else ()  # None: the checks a pool's store makes
    migrate = None if writes else False  # None: an embedded SQLite database migrates itself
    store = SQLStore(args.database_url, validators=validators, auto_migrate=migrate)
    if getattr(args, "allow_unknown_provider", False):
        from llmpool.providers import KnownProviderCheck

        kept = [v for v in store.validators if not isinstance(v, KnownProviderCheck)]
        store.validators = tuple(kept)
    try:
        yield store
    finally:
        store.close()


def open_pool(args: argparse.Namespace, **options: Any) -> LLMPool:
    """Return a pool on the command's database that only reads: no change watch, no migration."""
    from llmpool.pool.facade import LLMPool

    require_tables(args.database_url)
    return LLMPool(args.database_url, poll_interval=0, listen=False, auto_migrate=False, **options)


def require_tables(url: str | None) -> None:
    """Refuse a SQLite file that does not exist, which connecting would create: a read (of a
    typo in the path) must not. Missing tables fail the read itself, naming migrate."""
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    parsed = resolve_database_url(url)
    path = parsed.database or ""
    # In memory (nothing to create) or a URI filename (?uri=true: its mode says what to create).
    if parsed.get_backend_name() != "sqlite" or path in ("", ":memory:") or path[:5] == "file:":
        return
    if not Path(path).exists():
        raise DatabaseError(
            f"Could not open {mask_url(parsed)}: the file does not exist, so llmpool's tables "
            "are missing; run `llmpool migrate` against this database first (a read creates "
            "nothing)"
        )


@contextlib.contextmanager
def quiet(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise the logger ``name`` to ``level`` for the block: the command says it in its own
    words."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class Progress:
    """A command's steps on stderr as they end: one line rewritten in place on a terminal, else
    one line per step (a log). Safe to call from several threads."""

    def __init__(self, command: str, total: int) -> None:
        self.command, self.total, self.done = command, total, 0
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty()

    def step(self, name: str, said: str) -> None:
        """Report one more step: ``name`` (a row, a call) and what came of it."""
        with self._lock:
            self.done += 1
            count, name, said = f"{self.done}/{self.total}", one_line(name), one_line(said)
            if not self._tty:
                sys.stderr.write(f"llmpool: {self.command} {count}: {name}: {said}\n")
            else:
                sys.stderr.write("\r\x1b[2K" + f"[{count}] {name}: {said}"[:200])
                sys.stderr.write("\r\x1b[2K" if self.done == self.total else "")
            sys.stderr.flush()
