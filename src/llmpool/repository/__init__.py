"""Where rows come from: the read protocol, the write protocol, and the in-memory source.

`LLMRepository` is what the rest of llmpool reads from; anything with these methods (an
in-memory list, a file, a SQL table) is a repository. `LLMStore` adds the writes of the admin
API: each write is one transaction that also appends an audit row. A store tells its
`CommitListeners` after every committed write (`CommitNotifier.subscribe`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmpool.models import AuditEntry, BadRow, LLMConfig

from llmpool.errors import LLMNotFoundError, NoDefaultLLMError, shorten, visible

__all__ = [
    "DEFAULT_ACTOR",
    "AsyncLLMRepository",
    "BulkWrites",
    "CommitListener",
    "CommitListeners",
    "CommitNotifier",
    "ConfigValidator",
    "LLMRepository",
    "LLMStore",
    "Snapshot",
    "no_default_error",
    "not_found_error",
    "sort_key",
]

#: The actor recorded in the audit log when a write names none.
DEFAULT_ACTOR = "llmpool"

#: A check run on every row a store is about to write (e.g. the environment allowlist).
ConfigValidator = Callable[["LLMConfig"], None]

#: Called after a write is committed, with the write method's name (``"add"``, ``"delete"``, ...).
CommitListener = Callable[[str], None]

logger = logging.getLogger(__name__)


class CommitListeners:
    """The listeners of a store's committed writes.

    A listener's failure is logged, never raised: the write it follows is already committed.

    Args:
        listeners: The first listeners.

    Example:
        >>> seen = []
        >>> listeners = CommitListeners([seen.append])
        >>> listeners.notify("add")
        >>> seen
        ['add']
    """

    def __init__(self, listeners: Iterable[CommitListener] = ()) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[CommitListener, ...] = tuple(listeners)

    def __len__(self) -> int:
        return len(self._listeners)

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` after every committed write; return the call that stops it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                listeners = list(self._listeners)
                if listener in listeners:
                    listeners.remove(listener)
                    self._listeners = tuple(listeners)

        return unsubscribe

    def notify(self, action: str) -> None:
        """Tell every listener that a ``action`` write was committed; log their failures."""
        for listener in self._listeners:
            try:
                listener(action)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as error:  # the write is committed: nothing undoes it
                from llmpool.observe.fields import log_fields

                logger.warning(
                    "llmpool committed the %s, but a commit listener failed (%s)",
                    action,
                    type(error).__name__,
                    exc_info=True,
                    extra=log_fields("commit_listener_failed", error_class=type(error).__name__),
                )


@runtime_checkable
class CommitNotifier(Protocol):
    """A store that tells its listeners about every committed write."""

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` after every committed write; return the call that stops it."""
        ...


def sort_key(config: LLMConfig) -> tuple[int, str, str]:
    """Return the fallback order key: priority, then name, then id.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> rows = [LLMConfig(id="2", name="b", provider="fake", model_name="m", priority=1),
        ...         LLMConfig(id="1", name="a", provider="fake", model_name="m", priority=1)]
        >>> [r.name for r in sorted(rows, key=sort_key)]
        ['a', 'b']
    """
    return (config.priority, config.name, config.id)


def not_found_error(llm_id: str) -> LLMNotFoundError:
    """Return the error of every store for an id with no row (a malformed id included).

    The id is quoted shortened (`llmpool.errors.shorten`).

    Example:
        >>> str(not_found_error("abc"))
        "No LLM with id 'abc'"
        >>> len(str(not_found_error("x" * 10_000)))
        98
    """
    return LLMNotFoundError(f"No LLM with id {shorten(str(llm_id))!r}")


def no_default_error(scope: str) -> NoDefaultLLMError:
    """Return the seed's "No default LLM configured" error for a scope with no default row."""
    return NoDefaultLLMError(
        f"No default LLM configured for scope {shorten(visible(str(scope)))!r}: mark one with "
        "set_default() or `llmpool set-default ID`"
    )


@dataclass(frozen=True)
class Snapshot:
    """Every row of the table at one moment, read in one query.

    Attributes:
        configs: The valid rows of every scope, in fallback order.
        bad_rows: Rows that failed validation, reported by name and id.
        generation: The table's change counter when the rows were read.
        routing: How each scope routes its calls (``"weighted"``, ...), as stored, for the
            scopes that have a ``llm_scopes`` row; any other scope routes by ``"priority"``.
            Read it through `routing_of`, which never hands on an unknown strategy.
    """

    configs: tuple[LLMConfig, ...]
    bad_rows: tuple[BadRow, ...] = ()
    generation: int = 0
    read_at: datetime | None = field(default=None, compare=False)
    routing: Mapping[str, str] = field(default_factory=dict, compare=False)
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def routing_of(self, scope: str) -> str:
        """Return how ``scope`` routes its calls: ``"priority"`` unless set otherwise.

        A strategy that is not one of `llmpool.repository.scopes.STRATEGIES` (raw SQL wrote
        it) routes by ``"priority"``, with a warning once per snapshot and scope.
        """
        from llmpool.repository.scopes import usable_strategy

        stored = self.routing.get(scope, "priority")
        strategy = usable_strategy(scope, stored, warn=scope not in self._warned)
        if strategy != stored:
            self._warned.add(scope)
        return strategy


@runtime_checkable
class LLMRepository(Protocol):
    """A read-only source of rows."""

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order (priority, name, id).

        Args:
            enabled_only: Only enabled rows.
            scope: Only this scope; ``None`` for every scope.
            provider: Only rows of this provider.
            search: Case-insensitive substring of the name or the model name.
        """
        ...

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row by id; raise `LLMNotFoundError` when there is none."""
        ...

    def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row; raise `NoDefaultLLMError` when there is none.

        A default row that fails validation raises `InvalidDefaultLLMError` (a subclass)
        naming it by name and id.
        """
        ...

    def snapshot(self) -> Snapshot:
        """Return every row of every scope, with the bad rows and the generation."""
        ...

    def generation(self) -> int:
        """Return the table's change counter: a cheap query that changes on every write."""
        ...


@runtime_checkable
class AsyncLLMRepository(Protocol):
    """The async twin of `LLMRepository`."""

    async def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order, as `LLMRepository.list_llms`."""
        ...

    async def get(self, llm_id: str) -> LLMConfig:
        """Return one row by id, as `LLMRepository.get`."""
        ...

    async def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row, as `LLMRepository.get_default`."""
        ...

    async def snapshot(self) -> Snapshot:
        """Return every row, as `LLMRepository.snapshot`."""
        ...

    async def generation(self) -> int:
        """Return the table's change counter, as `LLMRepository.generation`."""
        ...


@runtime_checkable
class LLMStore(LLMRepository, Protocol):
    """A repository that can also be written: the admin API.

    Every write is one transaction that appends an audit row; when anything in it fails,
    nothing is written.
    """

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Insert a row (``id``, a UUID, is generated when absent) and return it."""
        ...

    def add_many(
        self, llms: Sequence[Mapping[str, Any]], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Insert several rows in one transaction, all or none; errors name the item."""
        ...

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig:
        """Apply a partial update and return the row after it.

        ``is_default=True`` clears the scope's other default in the same transaction. A default
        row moved to another scope stays its default only when that scope has none; else the
        update raises `ConflictError` naming both rows (pass ``is_default`` explicitly).
        """
        ...

    def delete(self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR) -> int:
        """Delete one row or many, all or none; return how many were deleted."""
        ...

    def enable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Enable one row or many, all or none; return the rows after."""
        ...

    def disable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Disable one row or many, all or none; return the rows after."""
        ...

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others in the same transaction.

        A disabled row is refused (`InvalidConfigError`, field ``enabled``): enable it first.
        """
        ...

    def audit_log(
        self,
        *,
        llm_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first, filtered by row and time."""
        ...


class BulkWrites:
    """The bulk writes of `LLMStore`, written once over a store's all-or-nothing ``_bulk``.

    A store subclasses this and implements ``_bulk(llm_ids, action, actor)``: for ``action`` in
    ``delete``, ``enable``, ``disable``, act on every id in one transaction (an unknown id
    rolls back all of them) and return the rows after (before, for ``delete``).
    """

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        raise NotImplementedError

    def delete(self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR) -> int:
        """Delete one row or many, all or none; return how many were deleted.

        Raises:
            LLMNotFoundError: An id has no row; nothing is deleted.
        """
        return len(self._bulk(llm_ids, "delete", actor))

    def enable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Enable one row or many, all or none; return the rows after.

        Raises:
            LLMNotFoundError: An id has no row; nothing is changed.
        """
        return self._bulk(llm_ids, "enable", actor)

    def disable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Disable one row or many, all or none; return the rows after.

        Raises:
            LLMNotFoundError: An id has no row; nothing is changed.
        """
        return self._bulk(llm_ids, "disable", actor)
