"""Apply the SQL migrations shipped with llmpool, and seed the seed's starter rows.

Migrations are plain SQL files, ``migrations_sql/<dialect>/NNNN_name.sql``, shipped inside the
wheel and read with `importlib.resources`. Each is applied once, in order, in its own
transaction, and recorded in ``llmpool_migrations`` with its SHA-256; a file that changed after it
was applied stops the migrator with `MigrationChecksumError`. Several processes may migrate at
once: PostgreSQL serializes them with an advisory lock, SQLite with ``BEGIN IMMEDIATE``. A
migration's statements, and the wait for another process's migration, may each take up to
`llmpool.repository.sql.bounds.MIGRATION_TIMEOUT` seconds instead of the engine's statement timeout.

Each migration has a reverse script, ``migrations_sql/<dialect>/down/NNNN_name.sql``, that drops
exactly what it created; `downgrade_connection` runs them (the Alembic integration,
`llmpool.alembic`, does). `migrate_connection` and `downgrade_connection` work inside a caller's
transaction (an Alembic revision's) and never begin or commit one of their own.

Seeding is separate and explicit (`seed_starter_rows`): schema changes are safe to run on every
deploy, while inserting rows that reference API keys is a decision for an admin, not a side effect
of starting a service.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.errors import ConflictError, MigrationChecksumError, MigrationError
from llmpool.repository.sql.bounds import MIGRATION_TIMEOUT, longer_bounds
from llmpool.repository.sql.engine import create_engine, hold_in_transaction, write_transaction
from llmpool.repository.sql.errors import db_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from llmpool.models import LLMConfig
    from llmpool.repository import LLMStore

__all__ = [
    "STARTER_ROWS",
    "Migration",
    "downgrade_connection",
    "load_down_migrations",
    "load_migrations",
    "migrate",
    "migrate_connection",
    "seed_starter_rows",
]

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_ADVISORY_LOCK_KEY = 0x6C6C6D706F6F6C  # "llmpool"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file.

    Attributes:
        version: Its number, from the file name.
        name: The file name.
        sql: Its text.
        checksum: SHA-256 of the text.
    """

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
    """Return the shipped migrations of a dialect, in order.

    Args:
        dialect: ``postgresql`` or ``sqlite``.

    Returns:
        The migrations, sorted by version.

    Raises:
        MigrationError: There are none for this dialect, or a file name is malformed.

    Example:
        >>> [m.name for m in load_migrations("sqlite")][:1]
        ['0001_llms.sql']
    """
    return _load(_migrations_dir(dialect))


def load_down_migrations(dialect: str) -> list[Migration]:
    """Return the reverse scripts of a dialect (``down/NNNN_name.sql``), in order.

    A reverse script has the name of the migration it reverses and drops exactly what that
    migration created.

    Args:
        dialect: ``postgresql`` or ``sqlite``.

    Returns:
        The reverse scripts, sorted by version (not in the order they run).

    Raises:
        MigrationError: There are no migrations for this dialect, or a file name is malformed.

    Example:
        >>> [m.name for m in load_down_migrations("sqlite")][:1]
        ['0001_llms.sql']
    """
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


def migrate(engine_or_url: Engine | str | URL | None = None) -> list[str]:
    """Apply the pending migrations and return the names of the files applied now.

    Args:
        engine_or_url: The database; ``None`` for the configured one.

    Returns:
        The file names applied by this call; empty when the database was up to date.

    Raises:
        MigrationChecksumError: An applied file has changed since it was applied.
        MigrationError: A migration failed; its transaction was rolled back.
        DatabaseUnavailableError: The database could not be reached.

    Example:
        >>> migrate("sqlite://")[:1]
        ['0001_llms.sql']
    """
    engine = create_engine(engine_or_url)
    try:
        return _migrate(engine)
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def _migrate(engine: Engine) -> list[str]:
    dialect = engine.dialect.name
    migrations = load_migrations(dialect)
    applied_now: list[str] = []
    with (
        db_errors(engine, "migrate the database"),
        engine.connect() as connection,
        longer_bounds(connection, MIGRATION_TIMEOUT) as conn,
    ):
        if dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_ADVISORY_LOCK_KEY})")
            conn.commit()
        try:
            with write_transaction(conn):
                conn.exec_driver_sql(_CREATE_TABLE)
            for migration in migrations:
                if _apply_one(conn, dialect, migration):
                    applied_now.append(migration.name)
        finally:
            if dialect == "postgresql":
                conn.rollback()
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_ADVISORY_LOCK_KEY})")
                conn.commit()
    if applied_now:
        from llmpool.observe.fields import log_fields

        logger.info(
            "llmpool migrations applied",
            extra=log_fields("migrations_applied", migrations=applied_now),
        )
    return applied_now


def _apply_one(conn: Connection, dialect: str, migration: Migration) -> bool:
    try:
        with write_transaction(conn):
            return _apply_in(conn, dialect, migration)
    except sa.exc.DBAPIError as error:
        msg = f"Migration {migration.name} failed and was rolled back: {error.orig}"
        raise MigrationError(msg) from error


def _apply_in(conn: Connection, dialect: str, migration: Migration) -> bool:
    row = conn.execute(
        sa.text("SELECT name, checksum FROM llmpool_migrations WHERE version = :v"),
        {"v": migration.version},
    ).first()
    if row is None:
        _run_script(conn, dialect, migration.sql)
        conn.execute(
            sa.text("INSERT INTO llmpool_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
            {"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        return True
    if row.checksum != migration.checksum:
        msg = (
            f"Migration {migration.name} was applied with checksum {row.checksum[:12]}... "
            f"but the file now has {migration.checksum[:12]}...; applied migrations must "
            "never change: add a new NNNN_name.sql file instead"
        )
        raise MigrationChecksumError(msg)
    return False


_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS llmpool_migrations ("
    " version INTEGER PRIMARY KEY,"
    " name VARCHAR(200) NOT NULL,"
    " checksum VARCHAR(64) NOT NULL,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


def migrate_connection(conn: Connection, *, to: int | None = None) -> list[str]:
    """Apply pending migrations inside the caller's transaction (e.g. an Alembic revision).

    Nothing here begins, commits or rolls back: the caller's transaction holds every change,
    so a failure leaves nothing behind once the caller rolls back. On PostgreSQL the
    transaction takes the advisory lock `migrate` takes, so it waits for (and is waited for
    by) a concurrent ``llmpool migrate``; the lock ends with the transaction. On SQLite, a
    connection whose driver would run DDL outside any transaction (pysqlite's default) is put
    in one first. The files and their checksums are recorded exactly as `migrate` records
    them, so either may run later.

    Args:
        conn: A connection, such as Alembic's ``op.get_bind()``.
        to: Apply only the migrations numbered up to this one (``None``: all), so that an
            Alembic revision always builds the same schema whichever llmpool is installed.

    Returns:
        The file names applied now.

    Raises:
        MigrationChecksumError: An applied file has changed since it was applied.
        MigrationError: A migration failed (the caller's transaction should roll back).

    Example:
        >>> import sqlalchemy as sa
        >>> with sa.create_engine("sqlite://").begin() as conn:
        ...     migrate_connection(conn, to=1)
        ['0001_llms.sql']
    """
    dialect = conn.dialect.name
    _join_transaction(conn)
    conn.exec_driver_sql(_CREATE_TABLE)
    applied: list[str] = []
    for migration in load_migrations(dialect):
        if to is not None and migration.version > to:
            break
        try:
            if _apply_in(conn, dialect, migration):
                applied.append(migration.name)
        except sa.exc.DBAPIError as error:
            msg = f"Migration {migration.name} failed: {error.orig}"
            raise MigrationError(msg) from error
    if applied:
        from llmpool.observe.fields import log_fields

        logger.info(
            "llmpool migrations applied", extra=log_fields("migrations_applied", migrations=applied)
        )
    return applied


def downgrade_connection(conn: Connection, *, to: int = 0) -> list[str]:
    """Revert applied migrations inside the caller's transaction, newest first.

    Each applied migration numbered above ``to`` has its reverse script run
    (``down/NNNN_name.sql``) and its record deleted from ``llmpool_migrations``; when no
    record is left, ``llmpool_migrations`` is dropped too, so that the database is as it was
    before the first migration. Transactions and locking as for `migrate_connection`.

    Args:
        conn: A connection, such as Alembic's ``op.get_bind()``.
        to: Keep the migrations numbered up to this one; ``0`` reverts them all.

    Returns:
        The file names reverted now, in the order they were reverted.

    Raises:
        MigrationError: An applied migration has no reverse script in this llmpool, or one
            failed (the caller's transaction should roll back).

    Example:
        >>> import sqlalchemy as sa
        >>> with sa.create_engine("sqlite://").begin() as conn:
        ...     _ = migrate_connection(conn, to=1)
        ...     downgrade_connection(conn)
        ['0001_llms.sql']
    """
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
        try:
            _run_script(conn, dialect, script.sql)
        except sa.exc.DBAPIError as error:
            msg = f"Reverting migration {name} failed: {error.orig}"
            raise MigrationError(msg) from error
        conn.execute(sa.text("DELETE FROM llmpool_migrations WHERE version = :v"), {"v": version})
        reverted.append(name)
    left = conn.execute(sa.text("SELECT COUNT(*) FROM llmpool_migrations")).scalar_one()
    if not left:
        conn.exec_driver_sql("DROP TABLE llmpool_migrations")
    if reverted:
        from llmpool.observe.fields import log_fields

        logger.info(
            "llmpool migrations reverted",
            extra=log_fields("migrations_reverted", migrations=reverted),
        )
    return reverted


def _join_transaction(conn: Connection) -> None:
    """Make the caller's transaction a real one that holds DDL too, and take the lock."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})")
    hold_in_transaction(conn)


def _run_script(conn: Connection, dialect: str, sql: str) -> None:
    if dialect == "sqlite":
        # sqlite3 runs one statement per execute(); split where statements are complete.
        for statement in _split_sqlite(sql):
            conn.exec_driver_sql(statement)
    else:
        # psycopg runs a multi-statement script in one call when no parameters are given.
        conn.exec_driver_sql(sql)


def _split_sqlite(sql: str) -> list[str]:
    import sqlite3

    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


#: The seed's "Fallback Chain Example" rows, inserted by `seed_starter_rows`.
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
    """Insert the seed's four example rows that are not there yet (matched by scope and name).

    Args:
        store: Where to write.
        scope: The scope to seed.
        actor: Recorded in the audit log.

    Returns:
        The rows inserted now; empty when all were already present.

    Example:
        >>> from llmpool.repository.memory import InMemoryStore
        >>> [row.name for row in seed_starter_rows(InMemoryStore())][:2]
        ['OpenAI GPT-4', 'OpenAI GPT-3.5']
    """
    existing = {row.name for row in store.list_llms(scope=scope)}
    has_default = any(row.is_default for row in store.list_llms(scope=scope))
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
