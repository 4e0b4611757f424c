"""``llmpool quota``: list, set and delete the budgets and rate limits of ``llm_quotas`` (on a
row, a scope, a provider or a tag's value: `llmpool.repository.quotas`), each write audited."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, yes_flag
from llmpool.cli.output import CommandFailed, UsageError, confirmed, emit, open_store, table

if TYPE_CHECKING:
    from llmpool.repository.quotas import Quota

_EPILOG = (
    "A tag's or a scope's quota refuses a call that would pass it (QuotaExceededError, naming "
    "the quota and when it resets); a row's or a provider's skips the row, so the call falls "
    "back. Budgets are in the rows' prices' currency, per UTC day or month; rpm and tpm per "
    "sliding minute. `set` replaces the quota's limits whole; running pools see a change at "
    "once, as they see a change to a row."
)
_EXAMPLE = """\
llmpool quota set --tag tenant=acme --budget 50 --per month --rpm 600
llmpool quota set --provider openai --tpm 200000
llmpool quota list --json
llmpool quota delete --tag tenant=acme --yes"""
_KINDS = ("tag", "scope", "provider", "row")


def register(add: AddCommand) -> None:
    """Add the parser of ``llmpool quota``."""
    help_text = "list, set or delete the budgets and rate limits of tags, scopes, providers, rows"
    p = add("quota", cmd_quota, help_text, _EPILOG, writes=True, example=_EXAMPLE)
    p.add_argument("action", choices=("list", "set", "delete"), help="what to do")
    on = p.add_mutually_exclusive_group()
    on.add_argument("--tag", metavar="NAME=VALUE", help="a tag's value, e.g. tenant=acme")
    on.add_argument("--scope", metavar="SCOPE", help="a scope, e.g. global")
    on.add_argument("--provider", metavar="PROVIDER", help="a provider, e.g. openai")
    on.add_argument("--row", metavar="ID|NAME", help="a row, by id or (unique) name")
    p.add_argument("--budget", type=float, help="the most its calls may cost per --per period")
    help_text = "the budget's period, UTC (default: day)"
    p.add_argument("--per", choices=("day", "month"), help=help_text)
    p.add_argument("--rpm", type=int, help="requests per minute, at most")
    p.add_argument("--tpm", type=int, help="tokens per minute, at most")
    yes_flag(p, "delete")


def _target(args: argparse.Namespace) -> tuple[str, str] | None:
    for kind in _KINDS:
        value = getattr(args, kind)
        if value is not None:
            return kind, value
    return None


def _shown(quota: Quota) -> dict[str, Any]:
    data = quota.as_dict()
    for name in ("created_at", "updated_at"):
        value = getattr(quota, name)
        data[name] = value.isoformat() if value is not None else None
    return data


def cmd_quota(args: argparse.Namespace) -> int:
    """``llmpool quota list|set|delete [--tag N=V | --scope S | --provider P | --row R] ...``."""
    target = _target(args)
    limits = (args.budget, args.per, args.rpm, args.tpm)
    if args.action == "list":
        with open_store(args) as store:
            quotas = [q for q in store.list_quotas() if target in (None, (q.kind, q.target))]
        data = [_shown(q) for q in quotas]
        columns = ("kind", "target", "budget", "period", "rpm", "tpm", "updated_at")
        emit(args, data, lambda: table(data, columns) if data else "no quotas")
        return 0
    if target is None:
        raise UsageError(f"quota {args.action} needs --tag, --scope, --provider or --row")
    kind, name = target
    if args.action == "set":
        with open_store(args, writes=True) as store:
            quota = store.set_quota(
                kind,
                name,
                budget=args.budget,
                period=args.per,
                rpm=args.rpm,
                tpm=args.tpm,
                actor=args.actor,
            )
        emit(args, _shown(quota), lambda: f"quota on {quota.describe()}: {quota.limits()}")
        return 0
    if any(value is not None for value in limits):
        raise UsageError("quota delete takes no --budget, --per, --rpm or --tpm")
    if not confirmed(args, "quota delete", f"Delete the quota on {kind} {name!r}?"):
        print("nothing deleted")
        return 1
    with open_store(args, writes=True) as store:
        deleted = store.delete_quota(kind, name, actor=args.actor)
        if deleted is None and kind == "row":  # named by the row's name
            deleted = store.delete_quota(kind, store.row_target(name), actor=args.actor)
    if deleted is None:
        raise CommandFailed(f"no quota on {kind} {name!r} (llmpool quota list shows them)")
    emit(args, _shown(deleted), lambda: f"deleted the quota on {deleted.describe()}")
    return 0
