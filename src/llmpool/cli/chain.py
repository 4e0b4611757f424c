"""``llmpool chain``: the scope's health from a shell, `LLMPool.status` as a table or JSON.

Each row in call order with its breaker (the service's, read from Redis with ``--redis-url``),
then the rows that fail validation (never tried), and who would answer now.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import emit, one_line, open_pool, quiet, row_reason, table

__all__ = ["COMMANDS", "LOCAL_VIEW", "register"]


def register(add: AddCommand) -> None:
    """Add the ``chain`` parser."""
    p = add(
        "chain",
        "the scope's health: each row in call order, its breaker, and who would answer now",
        epilog=(
            "Prints LLMPool.status(). Breakers are read from Redis with --redis-url (or "
            "LLMPOOL_REDIS_URL): the fleet's view; when Redis does not answer, each breaker "
            "is shown as unknown, with a warning. Exit code 1 when no row can answer, or when "
            "the shared breakers could not be read."
        ),
    )
    p.add_argument("--scope", type=bounded("scope"), default="global")
    p.add_argument("--kind", choices=("chat", "embedding"), default="chat", help="which chain")
    _redis_options(p)


def _redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=None,
        help="the Redis of the service's shared circuit breakers (default: LLMPOOL_REDIS_URL)",
    )
    parser.add_argument(
        "--redis-prefix",
        default=None,
        help="their key prefix (default: LLMPOOL_REDIS_PREFIX, else llmpool:breaker:)",
    )


def _breaker_store(args: argparse.Namespace) -> Any:
    url = args.redis_url or os.environ.get("LLMPOOL_REDIS_URL")
    if not url:
        return None
    from llmpool.fallback.breakers_redis import RedisBreakerStore

    prefix = args.redis_prefix or os.environ.get("LLMPOOL_REDIS_PREFIX") or "llmpool:breaker:"
    return RedisBreakerStore(url, prefix=prefix)


#: What ``chain`` says when it sees only this shell's own breakers.
LOCAL_VIEW = (
    "no shared breaker store configured (--redis-url or LLMPOOL_REDIS_URL): breaker states "
    "are this shell's own, not the service's; buildability is judged from this shell's "
    "environment"
)


def _chain_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for row in status["rows"]:
        breaker = row["breaker"]
        state = breaker["state"]
        if breaker["reopens_in"] is not None:
            state = f"{state} ({breaker['reopens_in']:.0f}s)"
        latency = row["latency"]
        last = row["last_error"]
        rows.append(
            {
                **row,
                "breaker": state,
                "latency_ms": latency["p50_ms"] if latency else None,
                "last_error": last["error_class"] if last else None,
                "limits": _limits_cell(row.get("limits")),
                "spend": _spend_cell(row.get("budget")),
            }
        )
    return rows


def _limits_cell(limits: dict[str, Any] | None) -> str | None:
    # The current window against each limit: "rpm 12/60, tpm 900/10000".
    if not limits:
        return None
    parts = [
        f"{name} {limits[used]}/{limits[name]}"
        for name, used in (("rpm", "requests"), ("tpm", "tokens"))
        if limits.get(name) is not None
    ]
    return ", ".join(parts) or None


def _spend_cell(budget: dict[str, Any] | None) -> str | None:
    # Spend this period against the budget: "1.25/5 day".
    if not budget:
        return None
    return f"{budget['spent']:.4g}/{budget['amount']:.4g} {budget['period']}"


def _chain_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    # Weight, limits and spend only when the scope uses them: the common table stays narrow.
    columns = ["position", "name", "provider", "priority", "status", "reason", "breaker"]
    if any(row.get("weight", 1) != 1 for row in rows):
        columns.insert(4, "weight")
    for extra in ("limits", "spend"):
        if any(row.get(extra) for row in rows):
            columns.append(extra)
    return (*columns, "last_error", "latency_ms", "error_rate")


def cmd_chain(args: argparse.Namespace) -> int:
    """``llmpool chain``: `LLMPool.status` of the scope; exit 1 when no row can answer."""
    from llmpool.fallback import breakers_redis
    from llmpool.repository.stored import stored_rows

    store = _breaker_store(args)
    unreachable = False
    # An unreachable Redis is said once, below, as what it means here: states unknown.
    with open_pool(args, breaker_store=store) as pool, quiet(breakers_redis.__name__):
        status: dict[str, Any] = dict(pool.status(args.scope, args.kind))
        stored = stored_rows(pool.store, scope=args.scope)
    for row in status["rows"]:
        row["reason"] = row_reason(row["reason"], row["name"], row["id"])
        row["build_error"] = one_line(row["build_error"]) if row["build_error"] else None
    # Rows that fail validation are never tried: listed apart, with what is wrong.
    status["invalid_rows"] = [
        {
            "id": row.id,
            "name": row.name,
            "provider": row.fields.get("provider"),
            "priority": row.fields.get("priority"),
            "status": "invalid",
            "reason": row_reason(str(row.error), row.name, row.id),
        }
        for row in stored
        if not row.valid and row.fields.get("kind", "chat") == args.kind
    ]
    if store is None:
        print(f"llmpool: note: {LOCAL_VIEW}", file=sys.stderr)
    elif status["breakers"] != "shared":
        unreachable = True
        url = one_line(args.redis_url or os.environ.get("LLMPOOL_REDIS_URL") or "")
        print(
            f"llmpool: warning: Redis {url} did not answer: the shared breaker states are unknown",
            file=sys.stderr,
        )

    def render() -> str:
        rows = _chain_rows(status) + status["invalid_rows"]
        text = table(rows, _chain_columns(rows))
        answering = status["answering"]
        who = (
            f"{one_line(answering['name'])} would answer now"
            if answering
            else f"no row can answer now ({status['note']})"
        )
        return (
            f"{text}\n\nscope {one_line(status['scope'])!r}: {who}; routing: "
            f"{status['routing']}; breakers: {status['breakers']}"
        )

    emit(args, status, render)
    return 0 if status["can_answer"] and not unreachable else 1


COMMANDS: dict[str, Handler] = {"chain": cmd_chain}
