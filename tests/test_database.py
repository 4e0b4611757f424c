"""Where the database is, and what happens when it cannot be reached."""

from __future__ import annotations

import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from llmpool.errors import DatabaseError, DatabaseUnavailableError
from llmpool.repository.sql.bounds import CONNECT_TIMEOUT
from llmpool.repository.sql.engine import create_async_engine, create_engine
from llmpool.repository.sql.errors import db_errors
from llmpool.repository.sql.store import SQLStore
from llmpool.repository.sql.url import mask_url, resolve_database_url


def test_explicit_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URL beats LLMPOOL_DATABASE_URL and DATABASE_URL."""
    monkeypatch.setenv("LLMPOOL_DATABASE_URL", "sqlite:///a.db")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///b.db")
    assert resolve_database_url("sqlite:///c.db").database == "c.db"
    assert resolve_database_url().database == "a.db"
    monkeypatch.delenv("LLMPOOL_DATABASE_URL")
    assert resolve_database_url().database == "b.db"


def test_embedded_sqlite_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL configured, llmpool uses ./llmpool.sqlite3 or LLMPOOL_SQLITE_PATH."""
    monkeypatch.delenv("LLMPOOL_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("LLMPOOL_SQLITE_PATH", raising=False)
    assert str(resolve_database_url()) == "sqlite:///llmpool.sqlite3"
    monkeypatch.setenv("LLMPOOL_SQLITE_PATH", "/tmp/x.sqlite3")
    assert str(resolve_database_url()) == "sqlite:////tmp/x.sqlite3"


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:p@h/db", "postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"],
)
def test_postgres_urls_mean_psycopg3(url: str) -> None:
    """Plain PostgreSQL URLs are read as psycopg 3."""
    assert resolve_database_url(url).drivername == "postgresql+psycopg"


def test_mask_url_hides_the_password() -> None:
    """Passwords never reach messages or logs."""
    masked = mask_url("postgresql://app:hunter2@db:5432/app")
    assert "hunter2" not in masked
    assert "***" in masked


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_refused_connection_is_a_typed_error_with_the_password_masked() -> None:
    """Nothing listening: DatabaseUnavailableError at once, naming the URL without password."""
    url = f"postgresql://llm:s3cret-pw@127.0.0.1:{_closed_port()}/llm"
    store = SQLStore(url)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        store.list_llms()
    assert time.monotonic() - started < CONNECT_TIMEOUT + 5
    assert "s3cret-pw" not in str(info.value)
    assert "***" in str(info.value)
    assert info.value.__cause__ is None
    store.engine.dispose()


def test_silent_server_times_out_within_the_connect_timeout(blackhole: int) -> None:
    """A server that never answers: a typed error after the default connect timeout."""
    url = f"postgresql://llm:s3cret-pw@127.0.0.1:{blackhole}/llm"
    store = SQLStore(url)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        store.generation()
    assert time.monotonic() - started < CONNECT_TIMEOUT * 2 + 2
    assert "s3cret-pw" not in str(info.value)
    store.engine.dispose()


@pytest.mark.parametrize("where", ["missing directory", "directory as the file"])
def test_unopenable_sqlite_file_is_a_typed_unavailable_error(tmp_path: Path, where: str) -> None:
    """A SQLite path in a missing directory, or a directory, is DatabaseUnavailableError."""
    path = tmp_path / "no-such-dir" / "x.sqlite3" if where == "missing directory" else tmp_path
    store = SQLStore(f"sqlite:///{path}")
    with pytest.raises(DatabaseUnavailableError, match="unable to open the database file"):
        store.list_llms()
    store.engine.dispose()


def _on_server(server_url: str, **parts: str) -> str:
    url = make_url(server_url.replace("postgresql+psycopg://", "postgresql://")).set(**parts)
    return url.render_as_string(hide_password=False)


@pytest.mark.postgres
def test_missing_database_is_named_not_called_unreachable(postgres_server_url: str) -> None:
    """A wrong database name says the database does not exist, keeping the driver's cause."""
    name = f"nope_{uuid.uuid4().hex[:8]}"
    store = SQLStore(_on_server(postgres_server_url, database=name))
    with pytest.raises(DatabaseError) as info:
        store.list_llms()
    assert not isinstance(info.value, DatabaseUnavailableError)
    assert f'database "{name}" does not exist' in str(info.value)
    assert "unreachable" not in str(info.value)
    assert info.value.__cause__ is not None
    store.engine.dispose()


@pytest.mark.postgres
def test_unknown_user_is_named_with_the_password_masked(postgres_server_url: str) -> None:
    """A nonexistent role says so; the URL's password is masked everywhere in the error."""
    user = f"nouser_{uuid.uuid4().hex[:8]}"
    store = SQLStore(_on_server(postgres_server_url, username=user, password="s3cret-pw"))
    with pytest.raises(DatabaseError) as info:
        store.generation()
    assert not isinstance(info.value, DatabaseUnavailableError)
    assert f'role "{user}" does not exist' in str(info.value)
    assert "***" in str(info.value)
    assert "s3cret-pw" not in "".join(traceback.format_exception(info.value))
    store.engine.dispose()


@pytest.mark.parametrize("echoed", [False, True])
def test_refused_login_never_shows_the_password(echoed: bool) -> None:
    """Authentication failure is named; if the driver's text held the password it is masked."""
    import psycopg

    url = "postgresql+psycopg://app:hunter2-pw@db.example:5432/app"
    text = (
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
        'FATAL:  password authentication failed for user "app"'
        + (" (password hunter2-pw)" if echoed else "")
        + "\nsecond line"
    )
    driver = sa.exc.OperationalError("connect", None, psycopg.OperationalError(text))
    with pytest.raises(DatabaseError) as info, db_errors(url, "list LLMs"):
        raise driver
    message = str(info.value)
    assert 'password authentication failed for user "app"' in message
    assert "app:***@db.example" in message and "second line" not in message
    assert not isinstance(info.value, DatabaseUnavailableError)
    assert "hunter2-pw" not in "".join(traceback.format_exception(info.value))
    assert (info.value.__cause__ is None) is echoed


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@h/db", "mssql+pyodbc://u:pw@h/db", "oracle://u:pw@h/db"]
)
def test_unsupported_url_scheme_is_a_typed_error(url: str) -> None:
    """Other databases are refused naming the scheme and what is supported, never an ImportError."""
    scheme = url.split("://")[0]
    for build in (SQLStore, create_engine, create_async_engine):
        with pytest.raises(DatabaseError) as info:
            build(url)
        assert repr(scheme) in str(info.value)
        assert "postgresql://" in str(info.value) and "sqlite://" in str(info.value)
        assert "pw@" not in str(info.value)


def test_missing_driver_is_a_typed_error() -> None:
    """A supported database whose driver is not installed names the scheme; no ImportError."""
    with pytest.raises(DatabaseError, match="postgresql\\+nosuchdriver") as info:
        create_engine("postgresql+nosuchdriver://u:pw@h/db")
    assert "cannot be loaded" in str(info.value) and "pw@" not in str(info.value)


@pytest.mark.postgres
def test_too_many_connections_is_named_not_called_unreachable(postgres_server_url: str) -> None:
    """A reachable server refusing because a role is at its CONNECTION LIMIT says the database
    has too many connections (DatabaseUnavailableError: it is transient), never unreachable."""
    import psycopg

    admin_dsn = postgres_server_url.replace("postgresql+psycopg://", "postgresql://")
    role = f"llmpool_full_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
        try:
            url = _on_server(postgres_server_url, username=role, password="s3cret-pw")
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")):
                store = SQLStore(url)  # the role's one connection is taken above
                with pytest.raises(DatabaseUnavailableError) as info:
                    store.list_llms()
                store.engine.dispose()
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f'DROP ROLE "{role}"')
    message = str(info.value)
    assert "too many connections" in message
    assert f'too many connections for role "{role}"' in message
    assert "unreachable" not in message
    assert "s3cret-pw" not in message and "***" in message


@pytest.mark.parametrize(
    "fatal",
    [
        "sorry, too many clients already",
        "remaining connection slots are reserved for non-replication superuser connections",
        'too many connections for database "app"',
    ],
)
def test_a_full_server_is_reported_as_having_too_many_connections(fatal: str) -> None:
    """Each of PostgreSQL's "server is full" refusals reads as too many connections."""
    import psycopg

    url = "postgresql+psycopg://app:hunter2-pw@db.example:5432/app"
    text = (
        f'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  {fatal}'
    )
    driver = sa.exc.OperationalError("connect", None, psycopg.OperationalError(text))
    with pytest.raises(DatabaseUnavailableError) as info, db_errors(url, "list LLMs"):
        raise driver
    message = str(info.value)
    assert "too many connections" in message and fatal in message
    assert "unreachable" not in message and "hunter2-pw" not in message
