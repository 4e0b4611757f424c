"""The usage guide's row lookups over a pool's snapshot: a scope's rows, its default, one row
(per kind: a chat function never serves an embedding row, nor the other way round)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmpool.contracts import log_fields
from llmpool.errors import InvalidDefaultLLMError, NoDefaultLLMError, WrongKindError, shorten
from llmpool.models import MAX_LENGTHS, check_argument
from llmpool.repository import no_default_error, not_found_error
from llmpool.repository.sql.url import mask_url

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.repository import LLMRepository, Snapshot


logger = logging.getLogger(__name__)


def check_lookup(scope: str, llm_id: str | None = None) -> None:
    """Refuse a ``scope`` or ``llm_id`` longer than any row holds (`ArgumentTooLongError`)."""
    check_argument("scope", scope, MAX_LENGTHS["scope"])
    if llm_id is not None:
        check_argument("llm_id", llm_id, MAX_LENGTHS["id"])


def scope_rows(snapshot: Snapshot, scope: str, enabled_only: bool) -> list[LLMConfig]:
    """Return the scope's chat rows in priority order (ties by name, then id)."""
    return [
        c
        for c in snapshot.configs
        if c.scope == scope and (c.enabled or not enabled_only) and c.kind == "chat"
    ]


def wrong_kind_error(config: LLMConfig) -> WrongKindError:
    """Return the refusal to serve ``config`` to a function of the other kind."""
    if config.kind == "embedding":
        use = f"get_embeddings(llm_id={config.id!r})"
        msg = f"{config.describe()} is an embedding row, not a chat model; get it with {use}"
    else:
        use = f"get_llm(llm_id={config.id!r})"
        msg = f"{config.describe()} is a {config.kind} row, not an embedding model; use {use}"
    return WrongKindError(msg, llm_id=config.id, kind=config.kind)


def find_row(snapshot: Snapshot, llm_id: str, kind: str) -> LLMConfig:
    """Return the row ``llm_id`` of ``kind`` (`LLMNotFoundError`, or `WrongKindError`)."""
    for config in snapshot.configs:
        if config.id == llm_id:
            if config.kind != kind:
                raise wrong_kind_error(config)
            return config
    raise not_found_error(llm_id)


def default_row(snapshot: Snapshot, repository: LLMRepository, scope: str, kind: str) -> LLMConfig:
    """Return the scope's enabled default row of ``kind`` (`NoDefaultLLMError`)."""
    engine = getattr(repository, "engine", None)
    where = f" (database: {mask_url(engine)})" if engine is not None else ""
    what = "LLM" if kind == "chat" else "embedding model"
    for config in snapshot.configs:
        if config.scope == scope and config.is_default and config.kind == kind:
            if config.enabled:
                return config
            msg = (
                f"No default {what} configured for scope {shorten(config.scope)!r}{where}: its "
                f"default, {config.describe()}, is disabled; enable it (`llmpool enable "
                f"{config.id}`) or make another row the default (`llmpool set-default ID`)"
            )
            raise NoDefaultLLMError(msg)
    if snapshot.bad_rows and kind == "chat":
        try:  # bad rows carry no scope: the repository's own lookup names an invalid one
            repository.get_default(scope)
        except InvalidDefaultLLMError:
            raise
        except Exception as error:  # none there either, or the database is down
            failed = type(error).__name__
            logger.debug(
                "no invalid default row found: %s",
                failed,
                extra=log_fields("no_invalid_default", scope=scope, error_class=failed),
            )
    message = str(no_default_error(scope))
    if kind != "chat":
        message = message.replace("LLM", what, 1).replace("mark one", "mark an embedding row", 1)
    raise NoDefaultLLMError(f"{message}{where}")
