"""Create llmpool's tables from llmpool's own SQL files, in this revision's transaction.

Revision ID: 0001_llmpool
Revises:
"""

from alembic import op

import llmpool.alembic

revision = "0001_llmpool"
down_revision = None


def upgrade() -> None:
    applied = llmpool.alembic.upgrade(op)
    print("llmpool migrations applied:", applied)


def downgrade() -> None:
    # Every table, index, trigger and function upgrade() created, newest migration first.
    reverted = llmpool.alembic.downgrade(op)
    print("llmpool migrations reverted:", reverted)
