"""Alembic environment of an application that also hosts llmpool's tables."""

import os

from alembic import context
from sqlalchemy import MetaData, engine_from_config, pool

import llmpool.alembic

config = context.config
if os.environ.get("DATABASE_URL"):
    # configparser reads "%" as interpolation: a URL's %-escapes must be doubled.
    config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"].replace("%", "%%"))

# The application's own models (e.g. Base.metadata); llmpool's tables are not among them.
target_metadata = MetaData()

connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # autogenerate leaves llmpool's tables alone (it would propose dropping them).
        include_object=llmpool.alembic.include_object,
        # llmpool's revisions work either way: one transaction for the whole run (the
        # default), or one per revision.
        transaction_per_migration=config.get_main_option("transaction_per_migration") == "true",
    )
    with context.begin_transaction():
        context.run_migrations()
