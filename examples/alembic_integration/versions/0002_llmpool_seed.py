"""Insert the usage guide's starter rows, on this revision's connection.

Revision ID: 0002_llmpool_seed
Revises: 0001_llmpool
"""

from alembic import op

import llmpool.alembic

revision = "0002_llmpool_seed"
down_revision = "0001_llmpool"


def upgrade() -> None:
    # A SQLStore on op.get_bind(): the rows (and their audit entries) commit with the revision.
    seeded = llmpool.alembic.seed_starter_rows(op)
    print("llmpool rows seeded:", [row.name for row in seeded])


def downgrade() -> None:
    # The rows stay until 0001's downgrade drops the tables; upgrading again skips them.
    pass
