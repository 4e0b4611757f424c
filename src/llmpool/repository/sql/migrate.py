"""Apply the SQL migrations shipped with llmpool, and seed the usage guide's starter rows.

Each file, ``migrations_sql/<dialect>/NNNN_name.sql`` in the wheel, is applied once, in order,
in its own transaction, and recorded with its SHA-256 (a file changed since stops the migrator);
concurrent migrators wait for each other. Nothing outlives a transaction (its lock is
``pg_advisory_xact_lock``, its timeouts ``SET LOCAL``), so migrating works through PgBouncer in
transaction mode too. Seeding is explicit, an admin's decision.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.errors import ConflictError, MigrationChecksumError, MigrationError
from llmpool.repository.sql.bounds import MIGRATION_TIMEOUT, local_timeouts, longer_bounds
from llmpool.repository.sql.engine import create_engine, hold_in_transaction, write_transaction
from llmpool.repository.sql.errors import db_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from llmpool.models import LLMConfig
    from llmpool.repository import LLMStore

__all__ = [
    "STARTER_ROWS",
    "MigrationState",
    "downgrade",
    "downgrade_connection",
    "load_migrations",
    "migrate",
    "migrate_connection",
    "migration_states",
    "seed_starter_rows",
]

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_ADVISORY_LOCK_KEY = 0x6C6C6D706F6F6C  # "llmpool"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS llmpool_migrations ("
    " version INTEGER PRIMARY KEY,"
    " name VARCHAR(200) NOT NULL,"
    " checksum VARCHAR(64) NOT NULL,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


@dataclass(frozen=True)
class Migration:
    """One migration file: its number, file name and text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """The SHA-256 of the file's text, as hex."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _migrations_dir(dialect: str) -> Any:
    packaged = resources.files("llmpool") / "migrations_sql" / dialect
    if packaged.is_dir():
        return packaged
    # An editable install runs from the repository, where the files sit at the top level.
    source = Path(__file__).resolve().parents[4] / "migrations_sql" / dialect
    if source.is_dir():
        return source
    msg = f"No migrations for dialect {dialect!r}: llmpool supports postgresql and sqlite"
    raise MigrationError(msg)


def load_migrations(dialect: str) -> list[Migration]:
    """Return the shipped migrations of ``postgresql`` or ``sqlite``, by version."""
    return _load(_migrations_dir(dialect))


def load_down_migrations(dialect: str) -> list[Migration]:
    """Return the reverse scripts of a dialect (``down/NNNN_name.sql``), by version."""
    down = _migrations_dir(dialect) / "down"
    return _load(down) if down.is_dir() else []


def _load(directory: Any) -> list[Migration]:
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            msg = f"Migration file {entry.name!r} must be named NNNN_name.sql"
            raise MigrationError(msg)
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def migrate(engine_or_url: Engine | str | URL | None = None, *, to: int | None = None) -> list[str]:
    """Apply the pending migrations numbered up to ``to`` (``None``: all; the database
    ``None``: the configured one); return the names of the files applied now
    (`MigrationChecksumError`: an applied file has changed; `MigrationError`: one failed and
    was rolled back).

    Example:
        >>> migrate("sqlite://")[:1]
        ['0001_llms.sql']
    """
    with _connected(engine_or_url, "migrate the database") as conn:
        with _locked(conn):
            conn.exec_driver_sql(_CREATE_TABLE)
        return _apply_all(conn, to, "failed and was rolled back", _locked)


def downgrade(engine_or_url: Engine | str | URL | None = None, *, to: int = 0) -> list[str]:
    """Revert the applied migrations numbered above ``to`` (0: all of llmpool's tables, with
    their rows), newest first, in one transaction holding the migration lock; return the files
    reverted (`MigrationError`: a reverse script is missing or failed, and nothing changed).

    Example:
        >>> downgrade("sqlite://")
        []
    """
    with _connected(engine_or_url, "downgrade the database") as conn, _locked(conn):
        return downgrade_connection(conn, to=to)


@dataclass(frozen=True)
class MigrationState:
    """One migration of a database: ``applied``, ``pending``, ``changed`` (applied, its file
    differs since) or ``unknown`` (applied, but this llmpool ships no such file)."""

    version: int
    name: str
    state: str
    applied_at: datetime | None


def migration_states(engine_or_url: Engine | str | URL | None = None) -> list[MigrationState]:
    """Return each migration shipped or applied, by version, with its state; change nothing.

    Example:
        >>> [(m.name, m.state) for m in migration_states("sqlite://")][:1]
        [('0001_llms.sql', 'pending')]
    """
    query = sa.text("SELECT version, name, checksum, applied_at FROM llmpool_migrations")
    with _connected(engine_or_url, "read the applied migrations") as conn:
        shipped = {m.version: m for m in load_migrations(conn.dialect.name)}
        applied: dict[int, Any] = {}
        if sa.inspect(conn).has_table("llmpool_migrations"):
            typed = query.columns(applied_at=sa.DateTime())
            applied = {row.version: row for row in conn.execute(typed)}
    states: list[MigrationState] = []
    for version in sorted(shipped.keys() | applied.keys()):
        file, row = shipped.get(version), applied.get(version)
        if row is None:
            assert file is not None
            states.append(MigrationState(version, file.name, "pending", None))
            continue
        state = "applied"
        if file is None or file.name != row.name:
            state = "unknown"
        elif file.checksum != row.checksum:
            state = "changed"
        states.append(MigrationState(version, row.name, state, row.applied_at))
    return states


@contextmanager
def _connected(engine_or_url: Engine | str | URL | None, what: str) -> Iterator[Connection]:
    # A connection with a migration's bounds; an engine made here is disposed of afterwards.
    engine = create_engine(engine_or_url)
    try:
        with (
            db_errors(engine, what),
            engine.connect() as connection,
            longer_bounds(connection, MIGRATION_TIMEOUT) as conn,
        ):
            yield conn
    finally:
        if engine is not engine_or_url:
            engine.dispose()


@contextmanager
def _locked(conn: Connection) -> Iterator[Connection]:
    # One write transaction holding the migration lock, with a migration's timeouts.
    with write_transaction(conn):
        local_timeouts(conn, MIGRATION_TIMEOUT)
        _join_transaction(conn)
        yield conn


@contextmanager
def _failing(what: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as error:
        raise MigrationError(f"{what}: {error.orig}") from error


def _apply_all(
    conn: Connection, to: int | None, failed: str, begin: Callable[[Connection], Any]
) -> list[str]:
    # Each pending file up to ``to`` in a ``begin(conn)`` block; return the files applied.
    applied: list[str] = []
    for migration in load_migrations(conn.dialect.name):
        if to is not None and migration.version > to:
            break
        with _failing(f"Migration {migration.name} {failed}"), begin(conn):
            if _apply(conn, migration):
                applied.append(migration.name)
    _log("llmpool migrations applied", "migrations_applied", applied)
    return applied


def _apply(conn: Connection, migration: Migration) -> bool:
    row = conn.execute(
        sa.text("SELECT name, checksum FROM llmpool_migrations WHERE version = :v"),
        {"v": migration.version},
    ).first()
    if row is not None:
        if row.checksum != migration.checksum:
            msg = (
                f"Migration {migration.name} was applied with checksum {row.checksum[:12]}... "
                f"but the file now has {migration.checksum[:12]}...; applied migrations must "
                "never change: add a new NNNN_name.sql file instead"
            )
            raise MigrationChecksumError(msg)
        return False
    _run_script(conn, migration.sql)
    conn.execute(
        sa.text("INSERT INTO llmpool_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
        {"v": migration.version, "n": migration.name, "c": migration.checksum},
    )
    return True


def migrate_connection(conn: Connection, *, to: int | None = None) -> list[str]:
    """Apply the pending migrations numbered up to ``to`` (``None``: all) inside the caller's
    transaction (an Alembic revision's), which nothing here commits; return the files applied.

    Example:
        >>> import sqlalchemy as sa
        >>> with sa.create_engine("sqlite://").begin() as conn:
        ...     migrate_connection(conn, to=1)
        ['0001_llms.sql']
    """
    _join_transaction(conn)
    conn.exec_driver_sql(_CREATE_TABLE)
    return _apply_all(conn, to, "failed", contextlib.nullcontext)


def downgrade_connection(conn: Connection, *, to: int = 0) -> list[str]:
    """Revert the applied migrations numbered above ``to``, newest first, by their reverse
    scripts (``down/NNNN_name.sql``) inside the caller's transaction, dropping
    ``llmpool_migrations`` when none is left; return the files reverted."""
    dialect = conn.dialect.name
    _join_transaction(conn)
    if not sa.inspect(conn).has_table("llmpool_migrations"):
        return []
    rows = conn.execute(
        sa.text("SELECT version, name FROM llmpool_migrations ORDER BY version DESC")
    ).all()
    scripts = {m.version: m for m in load_down_migrations(dialect)}
    reverted: list[str] = []
    for version, name in rows:
        if version <= to:
            continue
        script = scripts.get(version)
        if script is None or script.name != name:
            msg = (
                f"Migration {name} is applied but this llmpool has no reverse script "
                f"down/{name} for {dialect}; downgrade with the llmpool release that applied it"
            )
            raise MigrationError(msg)
        with _failing(f"Reverting migration {name} failed"):
            _run_script(conn, script.sql)
        conn.execute(sa.text("DELETE FROM llmpool_migrations WHERE version = :v"), {"v": version})
        reverted.append(name)
    if not conn.execute(sa.text("SELECT COUNT(*) FROM llmpool_migrations")).scalar_one():
        conn.exec_driver_sql("DROP TABLE llmpool_migrations")
    _log("llmpool migrations reverted", "migrations_reverted", reverted)
    return reverted


def _log(message: str, event: str, names: list[str]) -> None:
    if names:
        from llmpool.contracts import log_fields

        logger.info(message, extra=log_fields(event, migrations=names))


def _join_transaction(conn: Connection) -> None:
    # Make the caller's transaction a real one that holds DDL too, and take the lock.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})")
    hold_in_transaction(conn)


def _run_script(conn: Connection, sql: str) -> None:
    if conn.dialect.name != "sqlite":
        # psycopg runs a multi-statement script in one call when no parameters are given.
        conn.exec_driver_sql(sql)
        return
    # sqlite3 runs one statement per execute(): split where statements are complete.
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            conn.exec_driver_sql(buffer.strip())
            buffer = ""
    if buffer.strip():
        conn.exec_driver_sql(buffer.strip())


#: The usage guide's "Fallback Chain Example" rows, inserted by `seed_starter_rows`.
STARTER_ROWS: tuple[dict[str, Any], ...] = (
    {
        "name": "OpenAI GPT-4",
        "provider": "openai",
        "model_name": "gpt-4",
        "priority": 10,
        "enabled": True,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"temperature": 0.2},
    },
    {
        "name": "OpenAI GPT-3.5",
        "provider": "openai",
        "model_name": "gpt-3.5-turbo",
        "priority": 20,
        "enabled": True,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"temperature": 0.2},
    },
    {
        "name": "Claude 3 Opus",
        "provider": "anthropic",
        "model_name": "claude-3-opus-20240229",
        "priority": 42,
        "enabled": False,
        "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"},
        "config": {"max_tokens": 1024},
    },
    {
        "name": "Ollama Llama2",
        "provider": "ollama",
        "model_name": "llama2",
        "priority": 80,
        "enabled": True,
        "is_default": True,
        "auth_meta": {"base_url_env": "OLLAMA_BASE_URL"},
        "config": {"temperature": 0.2},
    },
)


def seed_starter_rows(
    store: LLMStore, *, scope: str = "global", actor: str = "llmpool seed"
) -> list[LLMConfig]:
    """Insert the usage guide's example rows that ``scope`` lacks (by name); return them.

    Example:
        >>> from llmpool.repository.memory import InMemoryStore
        >>> [row.name for row in seed_starter_rows(InMemoryStore())][:2]
        ['OpenAI GPT-4', 'OpenAI GPT-3.5']
    """
    rows = store.list_llms(scope=scope)
    existing = {row.name for row in rows}
    has_default = any(row.is_default for row in rows)
    inserted: list[LLMConfig] = []
    for row in STARTER_ROWS:
        if row["name"] in existing:
            continue
        values = {**row, "scope": scope}
        if has_default:
            values["is_default"] = False
        try:
            inserted.append(store.add(values, actor=actor))
        except ConflictError:
            continue  # another process seeded the same row a moment ago
    return inserted
