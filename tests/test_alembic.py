"""llmpool inside an Alembic project: the example's real revisions, run by real Alembic."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import llmpool.alembic
from llmpool.errors import ConflictError
from llmpool.repository.sql.migrate import STARTER_ROWS, load_migrations, migrate
from llmpool.repository.sql.store import SQLStore

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alembic_integration"
STARTER_NAMES = sorted(row["name"] for row in STARTER_ROWS)


class Op:
    """What Alembic hands a revision, reduced to what llmpool uses."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def get_bind(self) -> sa.Connection:
        """Return the revision's connection."""
        return self.conn


def app_url(url: str) -> str:
    """The URL an application would give SQLAlchemy itself (psycopg 3 for PostgreSQL)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=[False, True], ids=["one-transaction", "transaction-per-migration"])
def project(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Config:
    """A copy of the example Alembic project on an empty database, in both transaction modes."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD", "1")
    root = tmp_path / "alembic_project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root))
    config.set_main_option("sqlalchemy.url", app_url(database_url).replace("%", "%%"))
    config.set_main_option("transaction_per_migration", "true" if request.param else "false")
    config.attributes["database_url"] = database_url
    return config


def add_revision(config: Config, name: str, down: str, upgrade: str) -> None:
    """Write a revision file ``name`` after ``down`` whose upgrade() runs ``upgrade``."""
    root = Path(config.get_main_option("script_location") or "")
    body = (
        f'"""{name}"""\n\nfrom alembic import op\n\nimport llmpool.alembic\n\n'
        f"revision = {name!r}\ndown_revision = {down!r}\n\n\n"
        f"def upgrade() -> None:\n    {upgrade}\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )
    (root / "versions" / f"{name}.py").write_text(body)


def catalog(url: str) -> set[tuple[str, str]]:
    """Every table, index, sequence, view, trigger and function in the database's schema."""
    engine = sa.create_engine(app_url(url))
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(
                    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).all()
            else:
                rows = conn.exec_driver_sql(
                    "SELECT 'relation:' || relkind::text, relname FROM pg_class "
                    "WHERE relnamespace = current_schema()::regnamespace "
                    "UNION ALL SELECT 'function', proname FROM pg_proc "
                    "WHERE pronamespace = current_schema()::regnamespace "
                    "UNION ALL SELECT 'trigger', tgname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
                ).all()
    finally:
        engine.dispose()
    return {(str(kind), str(name)) for kind, name in rows}


def llmpool_objects(url: str) -> set[tuple[str, str]]:
    """The catalog without Alembic's own version table (and its index and constraint)."""
    return {item for item in catalog(url) if "alembic_version" not in item[1]}


def row_names(url: str) -> list[str]:
    """The names of the global scope's rows, read through a store of llmpool's own."""
    store = SQLStore(url, auto_migrate=False)
    try:
        return sorted(row.name for row in store.list_llms())
    finally:
        store.close()


def test_upgrade_downgrade_upgrade_leaves_nothing_behind(project: Config) -> None:
    """upgrade head seeds the rows, downgrade base removes every table, index, trigger and
    function llmpool created, and upgrading again works (no DuplicateFunction)."""
    url = project.attributes["database_url"]
    command.upgrade(project, "head")
    assert row_names(url) == STARTER_NAMES
    assert migrate(url) == []  # Alembic's revision recorded them as llmpool migrate does
    command.downgrade(project, "base")
    assert llmpool_objects(url) == set()
    command.upgrade(project, "head")
    assert row_names(url) == STARTER_NAMES


def test_autogenerate_proposes_nothing_for_llmpools_tables(project: Config) -> None:
    """`alembic revision --autogenerate` after upgrade proposes only the application's own
    change (dropping a table its models lost), nothing for llmpool's tables."""
    url = project.attributes["database_url"]
    command.upgrade(project, "head")
    engine = sa.create_engine(app_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    engine.dispose()
    script = command.revision(project, message="app change", autogenerate=True)
    assert script is not None and not isinstance(script, list)
    text = Path(script.path).read_text()
    assert "op.drop_table('invoices')" in text
    for table in llmpool.alembic.tables():
        assert f"'{table}'" not in text


def test_without_the_filter_autogenerate_would_drop_llmpools_tables(database_url: str) -> None:
    """The comparison include_object filters really proposes dropping llmpool's tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    migrate(database_url)
    engine = sa.create_engine(app_url(database_url))
    with engine.connect() as conn:
        unfiltered = compare_metadata(MigrationContext.configure(conn), sa.MetaData())
        filtered = compare_metadata(
            MigrationContext.configure(
                conn,
                opts={
                    "include_object": llmpool.alembic.include_object,
                    "include_name": llmpool.alembic.include_name,
                },
            ),
            sa.MetaData(),
        )
    engine.dispose()
    dropped = {diff[1].name for diff in unfiltered if diff[0] == "remove_table"}
    assert dropped == llmpool.alembic.tables()
    assert filtered == []


def test_failing_revision_leaves_no_llmpool_table(project: Config) -> None:
    """A revision that fails after llmpool's upgrade rolls llmpool's tables back with it."""
    url = project.attributes["database_url"]
    root = Path(project.get_main_option("script_location") or "")
    for path in (root / "versions").glob("*.py"):
        path.unlink()
    add_revision(
        project,
        "boom",
        None,  # type: ignore[arg-type]
        "llmpool.alembic.upgrade(op, seed=True); raise RuntimeError('boom')",
    )
    with pytest.raises(RuntimeError, match="boom"):
        command.upgrade(project, "head")
    assert llmpool_objects(url) == set()


def test_seeding_revision_after_the_schema_revision_sees_its_tables(project: Config) -> None:
    """A later revision writes rows through SQLStore(op.get_bind()) on the tables an earlier
    revision of the same run created, uncommitted or not."""
    url = project.attributes["database_url"]
    add_revision(
        project,
        "0003_more_rows",
        "0002_llmpool_seed",
        "from llmpool.repository.sql.store import SQLStore; "
        "SQLStore(op.get_bind()).add({'name': 'Local', 'provider': 'fake', 'model_name': 'e'})",
    )
    command.upgrade(project, "head")
    assert row_names(url) == sorted([*STARTER_NAMES, "Local"])
    store = SQLStore(url, auto_migrate=False)
    assert [entry.action for entry in store.audit_log(limit=None)].count("create") == 5
    store.close()


def test_tables_are_exactly_what_the_migrations_create(database_url: str) -> None:
    """tables() names every table the shipped migrations create, and nothing else."""
    migrate(database_url)
    engine = sa.create_engine(app_url(database_url))
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == llmpool.alembic.tables()
    engine.dispose()


def test_include_object_keeps_other_tables_and_their_parts() -> None:
    """Only llmpool's tables and their columns, indexes and constraints are filtered."""
    metadata = sa.MetaData()
    llms = sa.Table("llms", metadata, sa.Column("id", sa.Integer), sa.Index("ix", "id"))
    mine = sa.Table("llms_history", metadata, sa.Column("id", sa.Integer))
    assert not llmpool.alembic.include_object(llms, "llms", "table", True, None)
    assert not llmpool.alembic.include_object(llms.c.id, "id", "column", True, None)
    index = next(iter(llms.indexes))
    assert not llmpool.alembic.include_object(index, "ix", "index", True, None)
    assert llmpool.alembic.include_object(mine, "llms_history", "table", True, None)
    assert llmpool.alembic.include_object(mine.c.id, "id", "column", True, None)
    assert not llmpool.alembic.include_name("llms", "table", {})
    assert not llmpool.alembic.include_name("ix", "index", {"table_name": "llm_audit"})
    assert llmpool.alembic.include_name("llms_history", "table", {})


def test_downgrade_to_a_number_keeps_the_earlier_migrations(database_url: str) -> None:
    """downgrade(op, to=1) reverts only what came after 0001; upgrade then reapplies it."""
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    later = [m.name for m in load_migrations(dialect)][1:]
    engine = sa.create_engine(app_url(database_url))
    with engine.begin() as conn:
        assert llmpool.alembic.upgrade(Op(conn), to=1) == ["0001_llms.sql"]
        assert llmpool.alembic.upgrade(Op(conn)) == later
        assert llmpool.alembic.downgrade(Op(conn), to=1) == later[::-1]
        versions = conn.exec_driver_sql("SELECT version FROM llmpool_migrations").scalars().all()
        assert versions == [1]
        assert llmpool.alembic.upgrade(Op(conn)) == later
    engine.dispose()


def test_store_on_a_connection_writes_in_the_callers_transaction(migrated_url: str) -> None:
    """SQLStore(connection) writes inside the caller's transaction: a failed write is undone
    alone (SAVEPOINT), the others are rolled back with the caller's transaction."""
    engine = sa.create_engine(app_url(migrated_url))
    with engine.connect() as conn:
        store: Any = SQLStore(conn, validators=())
        store.add({"name": "A", "provider": "fake", "model_name": "m"})
        with pytest.raises(ConflictError):
            store.add({"name": "A", "provider": "fake", "model_name": "m"})
        store.add({"name": "B", "provider": "fake", "model_name": "m"})
        assert sorted(row.name for row in store.list_llms()) == ["A", "B"]
        assert row_names(migrated_url) == []  # not committed: another connection sees none
        conn.rollback()
        assert store.list_llms() == []
        store.add({"name": "C", "provider": "fake", "model_name": "m"})
        conn.commit()
        store.close()  # the caller's engine and connection stay open
        assert not conn.closed
    engine.dispose()
    assert row_names(migrated_url) == ["C"]
