"""How database errors read: driver exceptions translated into llmpool's typed errors, naming
the database with its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import exc
from sqlalchemy.engine import URL, Engine, make_url

from llmpool.errors import ConflictError, DatabaseError, DatabaseUnavailableError, LLMPoolError
from llmpool.repository.sql.bounds import STALLED, database_bounds, sync_engine_of
from llmpool.repository.sql.url import mask_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_NAME_RULE = "LLM names are unique within a scope"
_DEFAULT_RULE = "only one default LLM per scope"

# A server that answered and refused (password, role, database, pg_hba.conf): no retry helps.
_REFUSALS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "does not exist",
    "permission denied for database",
)

# A reachable server full: transient, so DatabaseUnavailableError, but never "unreachable".
_TOO_MANY_CONNECTIONS = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
)

_CONNECT_ERRORS = (
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


def _constraint_rule(error: exc.IntegrityError) -> str | None:
    text = str(error.orig)
    if "uq_llms_default_per_scope" in text:
        return _DEFAULT_RULE
    # SQLite names the columns: (scope, name) is the name rule; the default index reads
    # "llms.scope, llms.kind" ("llms.scope" before 0003_kinds).
    if "uq_llms_scope_name" in text or "llms.scope, llms.name" in text:
        return _NAME_RULE
    first = (text.strip().splitlines() or [""])[0]
    if re.search(r"llms\.scope(, llms\.kind)?(, llms\.is_default)?\s*$", first):
        return _DEFAULT_RULE
    return None


@contextmanager
def db_errors(engine: Engine | URL | str, what: str | Callable[[], str]) -> Iterator[None]:
    """Translate driver errors raised inside the block into `DatabaseUnavailableError`
    (unreachable, timed out, too many connections), `ConflictError` (a uniqueness rule, a lost
    race or lock wait) or `DatabaseError`, naming the database (password masked) and ``what``
    was being done (a callable: asked on error)."""
    try:
        yield
    except exc.IntegrityError as error:
        rule = _constraint_rule(error)
        if rule is None:
            msg = f"Could not {_doing(what)}: the database refused it ({_describe(error)})"
            raise DatabaseError(msg) from error
        raise ConflictError(f"Could not {_doing(what)}: {rule}") from error
    except exc.OperationalError as error:
        _raise_operational(engine, _doing(what), error)
    except exc.DBAPIError as error:
        doing = _doing(what)
        if isinstance(error, exc.ProgrammingError):
            if "does not exist" in str(error.orig) and "relation" in str(error.orig):
                raise _missing_tables(doing) from error
        elif error.connection_invalidated:
            raise _unreachable(engine, doing, "") from None
        raise DatabaseError(f"Could not {doing}: {_describe(error)}") from error
    except exc.SQLAlchemyError as error:
        msg = f"Could not {_doing(what)}: {type(error).__name__}: {str(error).strip()[:200]}"
        raise DatabaseError(msg) from error


def _raise_operational(engine: Engine | URL | str, doing: str, error: exc.DBAPIError) -> NoReturn:
    text = str(error.orig).lower()
    where = f"database {mask_url(engine)}"
    # The driver's error stays the cause, unless its text holds the password.
    password = _password_of(engine)
    cause = None if password and password in str(error) else error
    if any(word in text for word in ("deadlock", "could not serialize", "database is locked")):
        msg = f"Could not {doing}: it conflicted with a concurrent write; retry"
        raise ConflictError(msg) from error
    waited = _waited_too_long(engine, doing, text)
    if waited is not None:
        raise waited from error
    if any(words in text for words in _TOO_MANY_CONNECTIONS):
        raise DatabaseUnavailableError(
            f"Could not {doing}: {where} has too many connections and refused this one "
            f"({_refusal_reason(error, password)}); retry later, or raise its connection limit"
        ) from cause
    if ("connection to server" in text or "connection failed" in text) and any(
        word in text for word in _REFUSALS
    ):
        reason = _refusal_reason(error, password)
        msg = f"Could not {doing}: {where} refused the connection: {reason}"
        raise DatabaseError(msg) from cause
    if error.connection_invalidated or any(word in text for word in _CONNECT_ERRORS):
        raise _unreachable(engine, doing, text) from None
    if "no such table" in text:
        raise _missing_tables(doing) from error
    raise DatabaseError(f"Could not {doing}: {_describe(error)}") from error


def _waited_too_long(engine: Engine | URL | str, doing: str, text: str) -> LLMPoolError | None:
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
            f"Could not {doing}: another session held a lock it needed{after} (database "
            f"{mask_url(engine)}, lock_timeout); retry"
        )
        return ConflictError(msg)
    return None


def timeout_error(
    engine: Engine | AsyncEngine | URL | str,
    what: str | Callable[[], str],
    seconds: float | None,
    detail: str = "",
) -> DatabaseUnavailableError:
    """Return the error of a wait on the database that ran past its bound (``seconds``)."""
    url = sync_engine_of(engine)
    after = f" after {seconds:g} s" if seconds else ""
    why = f" ({detail})" if detail else ""
    msg = f"Could not {_doing(what)}: database {mask_url(url)} timed out{after}{why}"
    return DatabaseUnavailableError(msg)


def _refusal_reason(error: exc.DBAPIError, password: str | None) -> str:
    # The server's reason, after "FATAL:", with the password masked.
    first = (str(error.orig).strip().splitlines() or [""])[0]
    reason = re.split(r"FATAL:\s*", first)[-1].strip() or type(error.orig).__name__
    return reason.replace(password, "***") if password else reason


def _unreachable(engine: Engine | URL | str, doing: str, text: str) -> DatabaseUnavailableError:
    hint = ""
    if "unable to open database" in text:
        hint = " (unable to open the database file: does its directory exist, and is it a file?)"
    msg = f"Could not {doing}: database {mask_url(engine)} is unreachable{hint}"
    return DatabaseUnavailableError(msg)


def _password_of(engine: Engine | URL | str) -> str | None:
    try:
        return make_url(engine.url if isinstance(engine, Engine) else engine).password
    except exc.ArgumentError:
        return None


def _doing(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def _missing_tables(what: str) -> DatabaseError:
    return DatabaseError(
        f"Could not {what}: llmpool's tables are missing; run `llmpool migrate` "
        "(or llmpool.repository.sql.migrate()) against this database first"
    )


def _describe(error: exc.DBAPIError) -> str:
    cause: BaseException = error.orig or error
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
