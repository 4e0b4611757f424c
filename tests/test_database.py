"""Where the database is, and what happens when it cannot be reached."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from llmpool.database import CONNECT_TIMEOUT, mask_url, resolve_database_url
from llmpool.errors import DatabaseUnavailableError
from llmpool.repository.sql import SQLStore


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
