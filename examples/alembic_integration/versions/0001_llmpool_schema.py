"""Create llmpool's tables (llms, llm_audit, llmpool_state) from llmpool's own SQL files.

Revision ID: 0001_llmpool
Revises:
"""

from alembic import op

from llmpool.repository.sql.migrate import migrate_connection

revision = "0001_llmpool"
down_revision = None


def upgrade() -> None:
    applied = migrate_connection(op.get_bind())
    print("llmpool migrations applied:", applied)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS llm_audit")
    op.execute("DROP TABLE IF EXISTS llms")
    op.execute("DROP TABLE IF EXISTS llmpool_state")
    op.execute("DROP TABLE IF EXISTS llmpool_migrations")
