"""``llmpool routing SCOPE [STRATEGY]``: how a scope spreads its calls over its rows.

Without ``STRATEGY`` it prints the scope's strategy; with one it sets it (audited), and every
running pool switches at once. The strategies: ``priority`` (the default), ``weighted`` (by each
row's ``weight``), ``latency`` (lowest recent latency) and ``least_busy`` (fewest calls in
flight), each among rows of equal priority. Setting a strategy other than ``priority`` on a
scope without rows is refused (`llmpool.repository.scopes.no_rows_error`).
"""

from __future__ import annotations

import argparse
from typing import Any

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import CommandFailed, emit, open_pool
from llmpool.repository.scopes import STRATEGIES, RoutingStore

__all__ = ["COMMANDS", "register"]


def register(add: AddCommand) -> None:
    """Add the ``routing`` parser."""
    p = add(
        "routing",
        "show or set how a scope routes its calls (priority, weighted, latency, least_busy)",
        epilog="Strategies reorder only rows of equal priority; a failing row falls back to "
        "its siblings, then to the next priority. A strategy other than priority is refused "
        "for a scope without rows (add its rows first).",
    )
    p.add_argument("scope", type=bounded("scope"), help="the scope, e.g. global")
    p.add_argument("strategy", nargs="?", choices=STRATEGIES, help="the strategy to set")


def cmd_routing(args: argparse.Namespace) -> int:
    """``llmpool routing SCOPE [STRATEGY]``."""
    with open_pool(args, writes=args.strategy is not None) as pool:
        store = pool.store
        if not isinstance(store, RoutingStore):
            msg = f"{store!r} keeps no routing strategies"
            raise CommandFailed(msg)
        before = store.get_routing(args.scope)
        if args.strategy is None:
            data: dict[str, Any] = {"scope": args.scope, "routing": before}
        else:
            after = store.set_routing(args.scope, args.strategy, actor=args.actor)
            data = {"scope": args.scope, "routing": after, "before": before}

    def render() -> str:
        if "before" not in data:
            return f"scope {data['scope']!r} routes by {data['routing']}"
        return f"scope {data['scope']!r} routes by {data['routing']} (was {data['before']})"

    emit(args, data, render)
    return 0


COMMANDS: dict[str, Handler] = {"routing": cmd_routing}
