"""Shared fixtures: one parametrized database fixture runs a test on SQLite and on PostgreSQL.

PostgreSQL comes from ``LLMPOOL_TEST_DATABASE_URL``; when that is unset, from a testcontainers
container (Docker); else its tests skip, unless ``LLMPOOL_REQUIRE_POSTGRES=1``, when they fail.
Each test gets its own PostgreSQL schema (through ``search_path``). An empty one is dropped
afterwards; a migrated one is migrated once per process and reused: after each test it is
renamed, its tables are emptied, and the next test gets it only if its definitions, grants and
bookkeeping rows are still those `migrate` made (else it is dropped). A migrated SQLite file is
a copy of one migrated once per process.

The provider plugins of ``tests/plugins`` are real distributions with entry points, but never
installed into the environment: `provider_plugins` puts them on ``sys.path`` for the tests that
ask for it.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import logging
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


def pytest_configure(config: pytest.Config) -> None:
    """Rewrite the asserts of the tests only. pytest also marks every package that ships a
    pytest plugin (langsmith, hypothesis, anyio...) for rewriting, which re-parses and compiles
    their sources in every worker instead of loading their bytecode (seconds of CPU each).
    Hypothesis runs without its per-example deadline.

    The suite writes bytecode caches even where ``PYTHONDONTWRITEBYTECODE`` is set: its
    workers, and the Python processes its tests start, would each compile the tests and llmpool
    from source again (40 s of CPU a run on 2 cores). A worker leaves without finalizing its
    interpreter (see `_leave`)."""
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    worker = hasattr(config, "workerinput")
    if worker:
        atexit.register(_leave)
    if worker or not getattr(config.option, "numprocesses", None):  # this process collects
        gc.disable()  # until `pytest_collection_finish`
    hook = getattr(config.pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.difference_update(
            {
                "langsmith",
                "hypothesis",
                "anyio",
                "syrupy",
                "pytest_benchmark",
                "pytest_codspeed",
                "pytest_recording",
                "pytest_socket",
            }
        )
    # The property tests check what holds for every input, not how fast: with two workers per
    # core, one example can run past hypothesis's 200 ms deadline on a busy machine, which it
    # reports as a flaky failure.
    from hypothesis import settings

    settings.register_profile("llmpool", deadline=None)
    settings.load_profile("llmpool")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported lives as long as the run: the garbage collector, off while it
    was imported, never scans it (2 s of CPU per worker while collecting, and as much again
    in the tests' full collections)."""
    gc.freeze()
    gc.enable()


def _leave() -> None:
    # An xdist worker's exit, once its results are sent and the exit handlers registered
    # after this one have run: logging's is run here, and the interpreter's finalization is
    # skipped (a full collection of the heap every test left, up to 10 s the run waited for).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per CPU. The tests wait on local servers, timeouts and other
    processes more than they compute (on 2 CPUs, 4 workers end the suite in 3/4 of the time)."""
    return 2 * (os.cpu_count() or 1)


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


class _Schemas:
    """This process's connection to the PostgreSQL server, and its migrated schemas kept for
    the next test: emptied, renamed (a session a test left open no longer finds them) and kept
    only if their tables, functions, grants and bookkeeping rows are still as migrated."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
        self.conn: Any = None
        self.free: list[str] = []
        self.shapes: dict[str, str] = {}  # each migrated schema's fingerprint once migrated

    def connection(self) -> Any:
        import psycopg

        if self.conn is None or self.conn.closed or self.conn.broken:
            try:
                self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                _unavailable(f"cannot connect to {self.server_url.split('@')[-1]}: {exc}")
        return self.conn

    def create(self) -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self.connection().execute(f'CREATE SCHEMA "{schema}"')
        return schema

    def drop(self, schema: str) -> None:
        self.shapes.pop(schema, None)
        self.connection().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def migrated(self) -> str:
        """A schema holding exactly what `migrate` makes, and no rows of its own."""
        if self.free:
            return self.free.pop()
        from llmpool.repository.sql.migrate import migrate

        schema = self.create()
        migrate(_with_search_path(self.server_url, schema))
        self.shapes[schema] = self.fingerprint(schema)
        return schema

    def give_back(self, schema: str) -> None:
        """Empty a migrated schema for the next test, or drop it if the test changed more."""
        fresh = f"t_{uuid.uuid4().hex[:12]}"
        shape = self.shapes.pop(schema, None)
        conn = self.connection()
        try:
            with conn.transaction():
                conn.execute(_EMPTY.replace("{old}", schema).replace("{new}", fresh))
                if self.fingerprint(fresh) != shape:
                    raise LookupError(f"{schema} changed")
        except Exception:  # changed, locked or gone: the next test gets a new one
            self.drop(schema)
            self.drop(fresh)
            return
        self.shapes[fresh] = shape
        self.free.append(fresh)

    def fingerprint(self, schema: str) -> str:
        """A hash of a schema's catalog rows, each with the transaction that last wrote it,
        and of its bookkeeping rows (not of its name)."""
        query = _FINGERPRINT.replace("{schema}", schema)
        (digest,) = self.conn.execute(query, (schema,)).fetchone()
        return str(digest)


# Renames a schema, deletes every row tests write and sets its counters back as migrated; with
# triggers off where the role may (no NOTIFY for rows deleted here), else through them.
_EMPTY = """
DO $$
DECLARE
    t text;
BEGIN
    SET LOCAL lock_timeout = '5s';
    ALTER SCHEMA "{old}" RENAME TO "{new}";
    SET LOCAL search_path = "{new}";
    BEGIN
        SET LOCAL session_replication_role = replica;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{new}'
             AND tablename NOT IN ('llmpool_migrations', 'llmpool_state') LOOP
        EXECUTE format('DELETE FROM %I', t);
    END LOOP;
    PERFORM setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = '"{new}"'::regnamespace;
    UPDATE llmpool_state SET generation = 1;
END
$$
"""

# Every catalog row of a schema's objects with its transaction id (xmin: rewritten by any DDL
# or GRANT), and its bookkeeping rows.
_FINGERPRINT = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = %s),
rels AS (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM ns))
SELECT md5(string_agg(x, ' ' ORDER BY x)) FROM (
    SELECT concat_ws(':', 'ns', nspowner, nspacl) FROM pg_namespace
        WHERE oid = (SELECT oid FROM ns)
    UNION ALL SELECT concat_ws(':', 'class', oid, xmin) FROM pg_class
        WHERE oid IN (SELECT oid FROM rels)
    UNION ALL SELECT concat_ws(':', 'att', attrelid, attnum, xmin) FROM pg_attribute
        WHERE attrelid IN (SELECT oid FROM rels)
    UNION ALL SELECT concat_ws(':', 'def', oid, xmin) FROM pg_attrdef
        WHERE adrelid IN (SELECT oid FROM rels)
    UNION ALL SELECT concat_ws(':', 'con', oid, xmin) FROM pg_constraint
        WHERE connamespace = (SELECT oid FROM ns)
    UNION ALL SELECT concat_ws(':', 'trg', oid, xmin) FROM pg_trigger
        WHERE tgrelid IN (SELECT oid FROM rels)
    UNION ALL SELECT concat_ws(':', 'fn', oid, xmin) FROM pg_proc
        WHERE pronamespace = (SELECT oid FROM ns)
    UNION ALL SELECT concat_ws(':', 'type', oid, xmin) FROM pg_type
        WHERE typnamespace = (SELECT oid FROM ns)
    UNION ALL SELECT concat_ws(':', 'acl', oid, xmin) FROM pg_default_acl
        WHERE defaclnamespace = (SELECT oid FROM ns)
    UNION ALL SELECT concat_ws(':', 'mig', ctid, xmin) FROM "{schema}".llmpool_migrations
    UNION ALL SELECT concat_ws(':', 'state', id, generation) FROM "{schema}".llmpool_state
) AS parts(x)
"""


@pytest.fixture(scope="session")
def _schemas(postgres_server_url: str) -> Iterator[_Schemas]:
    schemas = _Schemas(postgres_server_url)
    yield schemas
    for schema in schemas.free:
        schemas.drop(schema)
    if schemas.conn is not None:
        schemas.conn.close()


@pytest.fixture
def postgres_url(_schemas: _Schemas) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh schema, dropped after the test."""
    schema = _schemas.create()
    yield _with_search_path(_schemas.server_url, schema)
    _schemas.drop(schema)


@pytest.fixture
def pg_url(_schemas: _Schemas) -> Iterator[str]:
    """A URL of a migrated PostgreSQL schema of this test's own (emptied afterwards, and
    given to a later test only if it still holds exactly what `migrate` made)."""
    schema = _schemas.migrated()
    yield _with_search_path(_schemas.server_url, schema)
    _schemas.give_back(schema)


@pytest.fixture(scope="session")
def pgbouncer(postgres_server_url: str) -> Iterator[Any]:
    """PgBouncer in transaction pooling mode in front of the test server (one per process)."""
    from pgbouncer import INSTALL_HINT, PgBouncer, find_binary

    binary = find_binary()
    if binary is None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                f"PgBouncer is required (LLMPOOL_REQUIRE_POSTGRES=1) but missing: {INSTALL_HINT}"
            )
        pytest.skip(f"pgbouncer is not installed ({INSTALL_HINT})")
    bouncer = PgBouncer(binary, postgres_server_url)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a new SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'llmpool.sqlite3'}"


@pytest.fixture(scope="session")
def _migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmpool.repository.sql.migrate import migrate

    path = tmp_path_factory.mktemp("template") / "llmpool.sqlite3"
    migrate(f"sqlite:///{path}")
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed: one file is all
    return path


@pytest.fixture
def migrated_sqlite_url(sqlite_url: str, tmp_path: Path, _migrated_sqlite_file: Path) -> str:
    """A URL of a new SQLite file holding llmpool's migrations (a copy of one migrated once)."""
    shutil.copyfile(_migrated_sqlite_file, tmp_path / "llmpool.sqlite3")
    return sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL: a URL of an empty database."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest) -> str:
    """A URL of a database (SQLite or PostgreSQL) with llmpool's migrations applied."""
    name = "migrated_sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def sql_store(migrated_url: str) -> Iterator[Any]:
    """A `SQLStore` on a migrated database, on SQLite and on PostgreSQL."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    yield store
    store.engine.dispose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The same admin-API test on the in-memory store, SQLite and PostgreSQL."""
    from llmpool.repository.memory import InMemoryStore
    from llmpool.repository.sql.store import SQLStore

    if request.param == "memory":
        yield InMemoryStore()
        return
    name = "migrated_sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
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


@pytest.fixture
def redis_keys() -> Iterator[tuple[Any, str]]:
    """A Redis client (database ``LLMPOOL_TEST_REDIS_DB``, default 15) and a fresh key prefix,
    whose keys are deleted afterwards."""
    import redis

    db = int(os.environ.get("LLMPOOL_TEST_REDIS_DB", "15"))
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{db}")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis on 127.0.0.1:6379 is required for this test")
    prefix = f"llmpool-test:{uuid.uuid4().hex}:"
    yield client, prefix
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    client.close()
