"""How database errors read: driver exceptions translated into llmpool's typed errors, naming
the database with its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import exc
from sqlalchemy.engine import URL, Engine, make_url

from llmpool.errors import ConflictError, DatabaseError, DatabaseUnavailableError, LLMPoolError
from llmpool.repository.sql.bounds import STALLED, database_bounds, sync_engine_of
from llmpool.repository.sql.url import mask_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "db_errors",
    "timeout_error",
]

_UNIQUE_RULES = {
    "uq_llms_default_per_scope": "only one default LLM per scope",
    "uq_llms_scope_name": "LLM names are unique within a scope",
}


def _constraint_rule(error: exc.IntegrityError) -> str | None:
    text = str(error.orig)
    for name, rule in _UNIQUE_RULES.items():
        if name in text:
            return rule
    # SQLite names the columns, not the index: (scope, name) is the name rule, and the partial
    # index on (scope, kind) WHERE is_default reads "UNIQUE constraint failed: llms.scope,
    # llms.kind" (before 0003_kinds, on (scope): "llms.scope").
    if "llms.scope, llms.name" in text:
        return _UNIQUE_RULES["uq_llms_scope_name"]
    first = (text.strip().splitlines() or [""])[0]
    if re.search(r"llms\.scope(, llms\.kind)?(, llms\.is_default)?\s*$", first):
        return _UNIQUE_RULES["uq_llms_default_per_scope"]
    return None


@contextmanager
def db_errors(engine: Engine | URL | str, what: str | Callable[[], str]) -> Iterator[None]:
    """Translate driver errors raised inside the block into llmpool's errors.

    Args:
        engine: The engine (or URL) in use, named in messages with its password masked.
        what: What was being done, e.g. ``"set the default LLM"``; a callable is asked when an
            error happens, so a write can name its row once it has read it.

    Raises:
        DatabaseUnavailableError: The database could not be reached, did not answer within its
            bound ("timed out after N s"), or has too many connections.
        ConflictError: A uniqueness rule was broken, the write lost a race, or it waited for
            another session's lock past the lock timeout.
        DatabaseError: Any other database failure, including a refused login or a missing
            database (named, with the driver's first message line and the password masked).
    """
    try:
        yield
    except exc.IntegrityError as error:
        doing = _doing(what)
        rule = _constraint_rule(error)
        if rule is None:
            msg = f"Could not {doing}: the database refused it ({_describe(error)})"
            raise DatabaseError(msg) from error
        msg = f"Could not {doing}: {rule}"
        raise ConflictError(msg) from error
    except exc.OperationalError as error:
        doing = _doing(what)
        text = str(error.orig).lower()
        if any(word in text for word in ("deadlock", "could not serialize", "database is locked")):
            msg = f"Could not {doing}: it conflicted with a concurrent write; retry"
            raise ConflictError(msg) from error
        waited = _waited_too_long(engine, doing, text)
        if waited is not None:
            raise waited from error
        if any(words in text for words in _TOO_MANY_CONNECTIONS):
            reason, leaked = _refusal_reason(engine, error)
            busy = DatabaseUnavailableError(
                f"Could not {doing}: database {mask_url(_url_of(engine))} has too many "
                f"connections and refused this one ({reason}); retry later, or raise its "
                "connection limit"
            )
            if leaked:
                raise busy from None
            raise busy from error
        if _is_refusal(text):
            refused, leaked = _refused(engine, doing, error)
            # Keep the driver's error as the cause, unless its text holds the password.
            if leaked:
                raise refused from None
            raise refused from error
        if error.connection_invalidated or _is_connect_error(text):
            raise _unreachable(engine, doing, text) from None
        if "no such table" in text:
            raise _missing_tables(doing) from error
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.ProgrammingError as error:
        doing = _doing(what)
        if "does not exist" in str(error.orig) and "relation" in str(error.orig):
            raise _missing_tables(doing) from error
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.DBAPIError as error:
        doing = _doing(what)
        if error.connection_invalidated:
            raise _unreachable(engine, doing, "") from None
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.SQLAlchemyError as error:
        doing = _doing(what)
        msg = f"Could not {doing}: {type(error).__name__}: {str(error).strip()[:200]}"
        raise DatabaseError(msg) from error


# libpq / psycopg texts of a server that answered and refused: wrong password, unknown role,
# unknown database, pg_hba.conf. Reachable, so not DatabaseUnavailableError, and no retry helps.
_REFUSALS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "does not exist",
    "permission denied for database",
)


def _is_refusal(text: str) -> bool:
    at_connect = "connection to server" in text or "connection failed" in text
    return at_connect and any(word in text for word in _REFUSALS)


# A reachable server refusing because it is full (max_connections, a role's or a database's
# CONNECTION LIMIT, the slots reserved for superusers): transient, so DatabaseUnavailableError,
# which the watcher treats as an outage, but never called unreachable.
_TOO_MANY_CONNECTIONS = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
)


def _waited_too_long(engine: Engine | URL | str, doing: str, text: str) -> LLMPoolError | None:
    where = f"database {mask_url(_url_of(engine))}"
    stalled = re.search(STALLED + r" ([0-9.e+-]+) s", text)
    if stalled:
        return timeout_error(engine, doing, float(stalled[1]), "no answer; the link stalled")
    bounds = database_bounds(engine)
    if "timeout expired" in text:  # libpq / psycopg: the connect timeout
        return timeout_error(engine, doing, bounds.connect, "no answer while connecting")
    if "canceling statement due to statement timeout" in text:
        return timeout_error(engine, doing, bounds.statement, "the server cancelled the statement")
    if "canceling statement due to lock timeout" in text:
        after = f" for more than {bounds.lock:g} s" if bounds.lock else ""
        msg = (
            f"Could not {doing}: another session held a lock it needed{after} ({where}, "
            "lock_timeout); retry"
        )
        return ConflictError(msg)
    return None


def timeout_error(
    engine: Engine | AsyncEngine | URL | str,
    what: str | Callable[[], str],
    seconds: float | None,
    detail: str = "",
) -> DatabaseUnavailableError:
    """Return the error of a wait on the database that ran past its bound.

    Args:
        engine: The engine (or URL) in use, named with its password masked.
        what: What was being done, as for `db_errors`.
        seconds: The bound that ran out.
        detail: What was waited for.

    Returns:
        A `DatabaseUnavailableError` saying "timed out after N s".

    Example:
        >>> str(timeout_error("postgresql://app:pw@db/app", "list LLMs", 15))
        'Could not list LLMs: database postgresql://app:***@db/app timed out after 15 s'
    """
    url = _url_of(sync_engine_of(engine))
    after = f" after {seconds:g} s" if seconds else ""
    why = f" ({detail})" if detail else ""
    msg = f"Could not {_doing(what)}: database {mask_url(url)} timed out{after}{why}"
    return DatabaseUnavailableError(msg)


def _refused(
    engine: Engine | URL | str, doing: str, error: exc.DBAPIError
) -> tuple[DatabaseError, bool]:
    reason, leaked = _refusal_reason(engine, error)
    msg = (
        f"Could not {doing}: database {mask_url(_url_of(engine))} refused the connection: {reason}"
    )
    return DatabaseError(msg), leaked


def _refusal_reason(engine: Engine | URL | str, error: exc.DBAPIError) -> tuple[str, bool]:
    # The server's reason, with the password masked, and whether the driver's text held it.
    password = _password_of(_url_of(engine))
    first = (str(error.orig).strip().splitlines() or [""])[0]
    # "connection failed: connection to server at "h", port 5432 failed: FATAL:  database "x"
    # does not exist": the part after FATAL is what the admin needs.
    reason = re.split(r"FATAL:\s*", first)[-1].strip() or type(error.orig).__name__
    leaked = bool(password and password in str(error))
    if password:
        reason = reason.replace(password, "***")
    return reason, leaked


def _unreachable(engine: Engine | URL | str, doing: str, text: str) -> DatabaseUnavailableError:
    url = _url_of(engine)
    hint = ""
    if "unable to open database" in text:
        hint = " (unable to open the database file: does its directory exist, and is it a file?)"
    msg = f"Could not {doing}: database {mask_url(url)} is unreachable{hint}"
    return DatabaseUnavailableError(msg)


def _password_of(url: URL | str) -> str | None:
    try:
        return make_url(url).password
    except exc.ArgumentError:
        return None


def _doing(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def _missing_tables(what: str) -> DatabaseError:
    return DatabaseError(
        f"Could not {what}: llmpool's tables are missing; run `llmpool migrate` "
        "(or llmpool.repository.sql.migrate()) against this database first"
    )


def _url_of(engine: Engine | URL | str) -> URL | str:
    return engine.url if isinstance(engine, Engine) else engine


def _describe(error: exc.DBAPIError) -> str:
    cause: BaseException = error.orig or error
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _is_connect_error(text: str) -> bool:
    return any(
        word in text
        for word in (
            "connection refused",
            "could not connect",
            "connection failed",
            "timeout expired",
            "timed out",
            "server closed the connection",
            "unable to open database",
            "connection is closed",
            "terminating connection",
            "no route to host",
            "name or service not known",
        )
    )
