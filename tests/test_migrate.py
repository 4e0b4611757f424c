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

from llmpool.errors import MigrationChecksumError
from llmpool.repository.sql.engine import create_engine
from llmpool.repository.sql.migrate import _ADVISORY_LOCK_KEY, load_migrations, migrate

ROOT = Path(__file__).resolve().parents[1]


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
        assert migrate(engine) == ["0001_llms.sql"]
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
    """Five processes migrating one empty database: one applies, the others find nothing."""
    script = (
        "import json, sys; from llmpool.repository.sql.migrate import migrate; "
        "print(json.dumps(migrate(sys.argv[1])))"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(results, key=len) == [[], [], [], [], ["0001_llms.sql"]]


@pytest.mark.slow
def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """The built wheel, installed into a fresh venv, migrates a database from its own files."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
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
    assert applied == "['0001_llms.sql']"
