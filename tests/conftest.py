"""Shared fixtures: one parametrized database fixture runs a test on SQLite and on PostgreSQL.

PostgreSQL comes from ``LLMPOOL_TEST_DATABASE_URL``; when that is unset, from a testcontainers
container (Docker); else its tests skip, unless ``LLMPOOL_REQUIRE_POSTGRES=1``, when they fail.
Each test gets its own PostgreSQL schema (through ``search_path``), dropped afterwards.

The provider plugins of ``tests/plugins`` are real distributions with entry points, but never
installed into the environment: `provider_plugins` puts them on ``sys.path`` for the tests that
ask for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REQUIRE_POSTGRES = os.environ.get("LLMPOOL_REQUIRE_POSTGRES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL is required (LLMPOOL_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The URL of a PostgreSQL server for this test session (plain ``postgresql://``)."""
    url = os.environ.get("LLMPOOL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.14
            from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
    except Exception as exc:  # Docker missing or refusing: any failure means "not available"
        _unavailable(f"LLMPOOL_TEST_DATABASE_URL is unset and testcontainers failed: {exc}")
        return
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh schema, dropped after the test."""
    import psycopg

    dsn = postgres_server_url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"cannot connect to {postgres_server_url.split('@')[-1]}: {exc}")
    yield _with_search_path(postgres_server_url, schema)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A migrated PostgreSQL schema."""
    from llmpool.repository.sql.migrate import migrate

    migrate(postgres_url)
    return postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a new SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'llmpool.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL: a URL of an empty database."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A URL of a database (SQLite or PostgreSQL) with llmpool's migrations applied."""
    from llmpool.repository.sql.migrate import migrate

    migrate(database_url)
    return database_url


@pytest.fixture
def sql_store(migrated_url: str) -> Iterator[Any]:
    """A `SQLStore` on a migrated database, on SQLite and on PostgreSQL."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    yield store
    store.engine.dispose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The same admin-API test on the in-memory store, SQLite and PostgreSQL."""
    from llmpool.repository.memory import InMemoryStore
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    if request.param == "memory":
        yield InMemoryStore()
        return
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    migrate(url)
    sql = SQLStore(url)
    yield sql
    sql.engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_openai_async_clients() -> Iterator[None]:
    """langchain-openai caches async HTTP clients per base URL for the process; a test server's
    port can be reused by a later test, whose event loop is new, so start each test afresh."""
    import sys

    yield
    module = sys.modules.get("langchain_openai.chat_models._client_utils")
    cached = getattr(module, "_cached_async_httpx_client", None)
    if cached is not None:
        cached.cache_clear()


PLUGINS = Path(__file__).resolve().parent / "plugins"


def _plugin_sources_digest() -> str:
    """A hash of every source file of the test plugins: a new one means a new build."""
    digest = hashlib.sha256()
    for path in sorted(PLUGINS.rglob("*")):
        parts = path.relative_to(PLUGINS).parts
        if not path.is_file() or {"build", "__pycache__"} & set(parts):
            continue
        digest.update("/".join(parts).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def plugin_site() -> Path:
    """A directory holding the test plugins, installed without their dependencies.

    Built once per change of their sources into ``tests/.plugins/<hash>``, under a file lock
    so that xdist workers wait for one build, and renamed into place only when complete.
    """
    import fcntl

    cache = PLUGINS.parent / ".plugins"
    site = cache / _plugin_sources_digest()
    cache.mkdir(exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not site.is_dir():
            build = tempfile.mkdtemp(dir=cache, prefix="build-")
            packages = sorted(str(p) for p in PLUGINS.iterdir() if (p / "pyproject.toml").is_file())
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                 "--no-build-isolation", "--target", build, *packages],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                shutil.rmtree(build, ignore_errors=True)
                pytest.fail(f"installing the test plugins failed:\n{result.stderr}")
            Path(build).rename(site)
    return site


@pytest.fixture
def provider_plugins(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test plugins (``echo``, ``broken``) found by entry-point discovery, for this test:
    the process-wide registry is discovered anew, and put back afterwards."""
    from llmpool.providers import set_registry

    monkeypatch.syspath_prepend(str(plugin_site))
    with set_registry(None):
        yield plugin_site
