"""Migrations: applied once, in order, checksummed, safe under concurrency, in the wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import forked

from llmpool.errors import MigrationChecksumError, MigrationError
from llmpool.repository.sql.engine import create_engine
from llmpool.repository.sql.migrate import (
    _ADVISORY_LOCK_KEY,
    downgrade_connection,
    load_down_migrations,
    load_migrations,
    migrate,
    migrate_connection,
)

ROOT = Path(__file__).resolve().parents[1]
ALL = [m.name for m in load_migrations("sqlite")]


def catalog(url: str) -> set[tuple[str, str]]:
    """Every table, column, index, sequence, view, trigger and function in the database's
    schema."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(
                    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                    "UNION ALL SELECT 'column', m.name || '.' || c.name FROM sqlite_master m "
                    "JOIN pragma_table_info(m.name) c "
                    "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
                ).all()
            else:
                rows = conn.exec_driver_sql(
                    "SELECT 'relation:' || relkind::text, relname FROM pg_class "
                    "WHERE relnamespace = current_schema()::regnamespace "
                    "UNION ALL SELECT 'function', proname FROM pg_proc "
                    "WHERE pronamespace = current_schema()::regnamespace "
                    "UNION ALL SELECT 'type', typname FROM pg_type "
                    "WHERE typnamespace = current_schema()::regnamespace AND typtype IN ('e', 'd') "
                    "UNION ALL SELECT 'trigger', tgname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal "
                    "UNION ALL SELECT 'column', table_name || '.' || column_name "
                    "FROM information_schema.columns WHERE table_schema = current_schema()"
                ).all()
    finally:
        engine.dispose()
    return {(str(kind), str(name)) for kind, name in rows}


def test_migrate_applies_each_file_once(database_url: str) -> None:
    """A first run applies every file; a second finds nothing to do."""
    names = [m.name for m in load_migrations(create_engine(database_url).dialect.name)]
    assert migrate(database_url) == names
    assert migrate(database_url) == []


def test_changed_applied_migration_stops_the_migrator(database_url: str) -> None:
    """When an applied file's checksum no longer matches, migrate refuses to run."""
    migrate(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE llmpool_migrations SET checksum = 'tampered'"))
    with pytest.raises(MigrationChecksumError, match="0001_llms.sql"):
        migrate(engine)
    engine.dispose()


def test_migration_files_are_numbered_and_documented() -> None:
    """Every dialect ships the same numbered files, each opening with a comment."""
    postgres = [m.name for m in load_migrations("postgresql")]
    sqlite = [m.name for m in load_migrations("sqlite")]
    assert postgres == sqlite
    for migration in load_migrations("postgresql") + load_migrations("sqlite"):
        assert migration.sql.startswith("-- ")


def test_every_migration_has_a_reverse_script() -> None:
    """Each dialect's down/ holds one documented script per migration, under the same name,
    and nothing else."""
    for dialect in ("postgresql", "sqlite"):
        ups = [m.name for m in load_migrations(dialect)]
        downs = load_down_migrations(dialect)
        assert [m.name for m in downs] == ups, dialect
        for script in downs:
            assert script.sql.startswith("-- "), script.name


def test_each_reverse_script_drops_exactly_what_its_migration_created(database_url: str) -> None:
    """Migrating one step at a time, then reverting one step at a time, passes through the same
    schemas (tables, columns, indexes, triggers, functions, types) back to an empty database."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    versions = [m.version for m in load_migrations(engine.dialect.name)]
    seen = [catalog(database_url)]
    for version in versions:
        with engine.begin() as conn:
            assert len(migrate_connection(conn, to=version)) == 1
        seen.append(catalog(database_url))
    assert len(set(map(frozenset, seen))) == len(seen)  # every migration changed something
    for index in range(len(versions) - 1, -1, -1):
        with engine.begin() as conn:
            keep = versions[index - 1] if index else 0
            assert len(downgrade_connection(conn, to=keep)) == 1
        assert catalog(database_url) == seen[index], versions[index]
    engine.dispose()
    assert migrate(database_url) == ALL


def test_migrate_connection_is_undone_with_the_callers_transaction(database_url: str) -> None:
    """migrate_connection commits nothing itself: rolling back the caller's transaction leaves
    an empty database, on SQLite's default driver too."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert migrate_connection(conn) == ALL
        conn.rollback()
    engine.dispose()
    assert catalog(database_url) == set()


def test_downgrade_refuses_a_migration_without_its_reverse_script(migrated_url: str) -> None:
    """An applied migration this llmpool cannot revert stops the downgrade, naming it; the
    caller's transaction then rolls back whatever was reverted before it."""
    engine = create_engine(migrated_url)
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llmpool_migrations (version, name, checksum) VALUES (9999, :n, 'x')"
            ),
            {"n": "9999_future.sql"},
        )
        conn.commit()
        before = catalog(migrated_url)
        with pytest.raises(MigrationError, match="9999_future.sql"):
            downgrade_connection(conn)
        conn.rollback()
    engine.dispose()
    assert catalog(migrated_url) == before


def test_downgrade_of_an_empty_database_does_nothing(database_url: str) -> None:
    """With no llmpool_migrations table there is nothing to revert."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        assert downgrade_connection(conn) == []
    engine.dispose()


@pytest.mark.postgres
def test_migrate_waits_for_another_migrator_past_the_statement_timeout(postgres_url: str) -> None:
    """A migration waits for another process's migration longer than the engine's statement
    and client timeouts allow a statement, then applies; the engine's bounds are restored."""
    import psycopg

    engine = create_engine(postgres_url, statement_timeout=0.3, client_timeout=0.5)
    other = psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    other.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
    done = threading.Timer(1.5, other.execute, ("SELECT pg_advisory_unlock_all()",))
    try:
        done.start()
        started = time.monotonic()
        assert migrate(engine) == ALL
        assert time.monotonic() - started > 1.0
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "300ms"
    finally:
        done.cancel()
        done.join()
        other.close()
        engine.dispose()


@pytest.mark.slow
def test_five_processes_migrating_at_once_apply_once(database_url: str) -> None:
    """Five processes migrating one empty database: each file is applied by exactly one of them
    (each file takes the lock on its own, so several processes may share the work)."""
    script = forked(
        "from llmpool.repository.sql.migrate import migrate",
        "_emit(migrate(_sys.argv[1]))",
        processes=5,
    )
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 5
    applied = [name for names in results for name in names]
    assert sorted(applied) == ALL


@pytest.mark.slow
def test_wheel_ships_the_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built wheel, installed into a fresh venv, migrates a database from its own files."""
    from hatchling.build import build_wheel

    dist = tmp_path / "dist"
    monkeypatch.chdir(ROOT)  # a PEP 517 backend builds the project in its working directory
    build_wheel(str(dist))  # the project's build backend, called as pip would, in this process
    wheel = next(dist.glob("llmpool-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = next((env_dir / "lib").glob("python*/site-packages"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # Dependencies come from this interpreter's site-packages (offline, fast); llmpool itself
    # only from the wheel: PYTHONPATH does not run the editable install's .pth hook.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    database = tmp_path / "wheel.sqlite3"
    code = (
        "import llmpool, llmpool.repository.sql.migrate as m, sys; "
        "print(llmpool.__file__); print(m.migrate(sys.argv[1]))"
    )
    result = subprocess.run(
        [str(python), "-c", code, f"sqlite:///{database}"],
        env={**os.environ, "PYTHONPATH": deps},
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    location, applied = result.stdout.splitlines()
    assert location.startswith(str(site))
    assert applied == str(ALL)
