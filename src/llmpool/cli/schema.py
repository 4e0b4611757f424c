"""``llmpool migrate``: apply llmpool's migrations, and seed the usage guide's example rows."""

from __future__ import annotations

import argparse

from llmpool.cli.args import AddCommand, Handler
from llmpool.cli.output import emit, open_pool

__all__ = ["COMMANDS", "register"]


def register(add: AddCommand) -> None:
    """Add the ``migrate`` parser."""
    p = add("migrate", "apply llmpool's migrations")
    p.add_argument("--seed", action="store_true", help="also add the example rows")


def cmd_migrate(args: argparse.Namespace) -> int:
    """``llmpool migrate [--seed]``."""
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    # Named in the output: without --database-url or a configured URL it is a local file.
    database = mask_url(resolve_database_url(args.database_url))
    applied = migrate(args.database_url)
    seeded: list[str] = []
    if args.seed:
        with open_pool(args, writes=True, auto_migrate=False) as pool:
            seeded = [c.name for c in seed_starter_rows(pool.store, actor=args.actor)]
    data = {"database": database, "applied": applied, "seeded": seeded}
    emit(
        args,
        data,
        lambda: (
            f"database: {database}\n"
            + "\n".join([f"applied {name}" for name in applied] or ["database is up to date"])
            + "".join(f"\nseeded {name}" for name in seeded)
        ),
    )
    return 0


COMMANDS: dict[str, Handler] = {"migrate": cmd_migrate}
