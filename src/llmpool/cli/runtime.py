"""The ``llmpool`` commands that load providers and build models: ``chain`` (the scope's health,
`LLMPool.status`), ``check`` (a tiny prompt to each row) and ``providers``."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, bounded
from llmpool.cli.output import (
    Progress,
    UsageError,
    emit,
    one_line,
    open_pool,
    quiet,
    row_reason,
    table,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.stored import StoredRow

_CHAIN_EPILOG = (
    "Prints LLMPool.status(). With --redis (or LLMPOOL_REDIS_URL), the service's redis=: "
    "breakers, rate-limit windows, latency, error rate, calls in flight and last errors are "
    "the fleet's, and the live replicas are counted; when Redis does not answer, each breaker "
    "is shown as unknown, with a warning. Exit code 1 when no row can answer, or when the "
    "shared breakers could not be read."
)

_SCOPE_HELP = "the scope (default: global)"


def register(add: AddCommand) -> None:
    """Add the parsers of the commands that build models."""
    help_text = "the scope's health: each row in call order, its breaker, and who would answer now"
    example = "llmpool chain --scope global --redis-url redis://127.0.0.1:6379/0"
    add_scope_options(add("chain", cmd_chain, help_text, _CHAIN_EPILOG, example=example))
    help_text = "build each LLM and send a tiny prompt (works on disabled rows)"
    example = "llmpool check 'OpenAI GPT-4' --timeout 10\nllmpool check --scope global --ready"
    p = add("check", cmd_check, help_text, example=example)
    help_text = "the rows to check, by id or name (default: every row of --scope)"
    p.add_argument("ids", nargs="*", metavar="ID|NAME", type=bounded("name"), help=help_text)
    p.add_argument("--scope", type=bounded("scope"), default="global", help=_SCOPE_HELP)
    help_text = "seconds each row may take; passed to its client and enforced (default: 20)"
    p.add_argument("--timeout", type=float, default=20.0, help=help_text)
    help_text = (
        "exit 0 when at least one enabled row answers (a readiness probe); by default any "
        "failure exits 1"
    )
    p.add_argument("--ready", action="store_true", help=help_text)
    help_text = "providers found, their extras, and plugins that failed to load"
    add("providers", cmd_providers, help_text, example="llmpool providers --json")


def add_scope_options(p: argparse.ArgumentParser) -> None:
    """Add the options of a command showing a scope's status: ``--scope``, ``--kind`` and the
    service's Redis (``--redis``, ``--redis-prefix``)."""
    p.add_argument("--scope", type=bounded("scope"), default="global", help=_SCOPE_HELP)
    p.add_argument("--kind", choices=("chat", "embedding"), default="chat", help="which chain")
    help_text = "the service's redis= URL, to show the fleet's state (default: LLMPOOL_REDIS_URL)"
    p.add_argument("--redis", "--redis-url", dest="redis_url", metavar="URL", help=help_text)
    help_text = "the service's redis_prefix= (default: LLMPOOL_REDIS_PREFIX, else llmpool:)"
    p.add_argument("--redis-prefix", help=help_text)


def redis_of(args: argparse.Namespace) -> str | None:
    """Return the service's Redis URL the command reads (``--redis``, else LLMPOOL_REDIS_URL)."""
    return args.redis_url or os.environ.get("LLMPOOL_REDIS_URL") or None


@contextlib.contextmanager
def status_pool(args: argparse.Namespace) -> Iterator[LLMPool]:
    """Open a pool reading the scope's state: the fleet's through the service's Redis, if any.

    A reader of the fleet never serves a model, so it never joins (no heartbeat). An
    unreachable Redis is said by the command, as what it means there: states unknown.
    """
    prefix = args.redis_prefix or os.environ.get("LLMPOOL_REDIS_PREFIX") or "llmpool:"
    with open_pool(args, redis=redis_of(args), redis_prefix=prefix) as pool, quiet("llmpool.redis"):
        yield pool


def read_status(args: argparse.Namespace, pool: LLMPool) -> dict[str, Any]:
    """Return `LLMPool.status` of the scope, its reasons on one line each, and the rows that
    fail validation (never tried) as ``invalid_rows``."""
    from llmpool.repository.stored import stored_rows

    status: dict[str, Any] = dict(pool.status(args.scope, args.kind))
    stored = stored_rows(pool.store, scope=args.scope)
    for row in status["rows"]:
        row["reason"] = row_reason(row["reason"], row["name"], row["id"])
        row["build_error"] = one_line(row["build_error"]) if row["build_error"] else None
    status["invalid_rows"] = [  # never tried: listed apart, with what is wrong
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
    return status


def say_whose(args: argparse.Namespace, status: Mapping[str, Any]) -> bool:
    """Say on stderr when the numbers are this shell's own (no Redis), or the shared breakers
    could not be read; return whether they could not."""
    redis_url = redis_of(args)
    unreachable = redis_url is not None and status["breakers"] != "shared"
    if redis_url is None:
        print(
            "llmpool: note: no Redis configured (--redis or LLMPOOL_REDIS_URL): breakers, "
            "limits and statistics are this shell's own, not the service's; buildability is "
            "judged from this shell's environment",
            file=sys.stderr,
        )
    elif unreachable:
        print(
            f"llmpool: warning: Redis {one_line(redis_url)} did not answer: the shared "
            "breaker states are unknown",
            file=sys.stderr,
        )
    return unreachable


def cmd_chain(args: argparse.Namespace) -> int:
    """``llmpool chain``: `LLMPool.status` of the scope, and its rows that fail validation;
    exit 1 when no row can answer, or the shared breakers could not be read."""
    with status_pool(args) as pool:
        status = read_status(args, pool)
    unreachable = say_whose(args, status)

    def render() -> str:
        rows = [chain_row(row) for row in status["rows"]] + status["invalid_rows"]
        # Weight, limits and spend only when the scope uses them: the common table stays narrow.
        columns = ["position", "name", "provider", "priority", "status", "reason", "breaker"]
        if any(row.get("weight", 1) != 1 for row in rows):
            columns.insert(4, "weight")
        if any(row.get("policy") for row in rows):  # a row with its own breaker policy
            columns.insert(columns.index("breaker") + 1, "policy")
        columns += [extra for extra in ("limits", "spend") if any(row.get(extra) for row in rows)]
        columns += ["last_error", "latency_ms", "p95_ms", "error_rate", "in_flight"]
        answering = status["answering"]
        who = (
            f"{one_line(answering['name'])} would answer now"
            if answering
            else f"no row can answer now ({status['note']})"
        )
        fleet = "" if status["replicas"] is None else f"; replicas live: {status['replicas']}"
        return (
            f"{table(rows, columns)}\n\nscope {one_line(status['scope'])!r}: {who}; "
            f"routing: {status['routing']}; breakers: {status['breakers']}; "
            f"statistics: {status['stats']}{fleet}"
        )

    emit(args, status, render)
    return 0 if status["can_answer"] and not unreachable else 1


def _policy_text(policy: dict[str, Any] | None) -> str | None:
    # A row's own breaker policy, in one cell: "5 in a row or 25% of 20 in 60s; 30s; retry".
    if not policy or not policy["overrides"]:
        return None
    trip = f"{policy['failure_threshold']} in a row"
    if policy["failure_rate"] is not None:
        trip += (
            f" or {policy['failure_rate']:.0%} of {policy['min_calls']} in {policy['window']:g}s"
        )
    errors = ",".join(policy["errors"]) or "none"
    return f"{trip}; cooldown {policy['cooldown']:g}s; counts {errors}"


def chain_row(row: dict[str, Any]) -> dict[str, Any]:
    """Return a status row as ``chain`` shows it: breaker, limits and spend as short text."""
    # The breaker with its time to reopen, the current window against each limit ("rpm 12/60,
    # tpm 900/10000") and this period's spend against the budget ("1.25/5 day").
    breaker, limits, budget = row["breaker"], row.get("limits") or {}, row.get("budget")
    reopens = breaker["reopens_in"]
    spend = f"{budget['spent']:.4g}/{budget['amount']:.4g} {budget['period']}" if budget else None
    parts = limits.get("share", 1)  # Redis down: this shell's share of each limit
    used = [
        f"{name} {limits[count]}/{-(-limits[name] // parts)}"
        for name, count in (("rpm", "requests"), ("tpm", "tokens"))
        if limits.get(name) is not None
    ]
    if used and parts > 1:
        used.append(f"1/{parts} counted here")
    latency = row["latency"]
    return {
        **row,
        "breaker": breaker["state"] + ("" if reopens is None else f" ({reopens:.0f}s)"),
        "policy": _policy_text(breaker.get("policy")),
        "latency_ms": latency["p50_ms"] if latency else None,
        "p95_ms": latency["p95_ms"] if latency else None,
        "last_error": row["last_error"]["error_class"] if row["last_error"] else None,
        "limits": ", ".join(used) or None,
        "spend": spend,
    }


def build_bounded(pool: LLMPool, config: LLMConfig, timeout: float) -> BaseChatModel:
    """Build the row's model with ``timeout`` as its request timeout, where its client takes one
    (a smaller one in the row's ``config`` is kept; a client without one is built as it is)."""
    from llmpool.errors import UnsupportedParameterError

    key = "request_timeout" if "request_timeout" in config.config else "timeout"
    current = config.config.get(key)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        timeout = min(float(current), timeout)
    bounded = config.model_copy(update={"config": {**config.config, key: timeout}})
    build: Any = (
        pool.registry.build_embeddings if config.kind == "embedding" else pool.registry.build
    )
    try:
        return build(bounded, allowlist=pool.allowlist)  # type: ignore[no-any-return]
    except UnsupportedParameterError:
        return build(config, allowlist=pool.allowlist)  # type: ignore[no-any-return]


def _probe(pool: LLMPool, config: LLMConfig, timeout: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": config.id, "name": config.name, "provider": config.provider}
    entry.update(enabled=config.enabled, ok=False, latency_ms=None, reply=None, error=None)
    outcome: dict[str, Any] = {}
    try:
        # Timed from here: building the client (and importing its package) is not latency.
        client: Any = build_bounded(pool, config, timeout)
        started = time.perf_counter()
        ask = client.embed_query if config.kind == "embedding" else client.invoke

        def call() -> None:
            try:
                outcome["reply"] = ask("Reply with the single word OK.")
            except BaseException as error:  # handed to the checking thread
                outcome["error"] = error

        # A daemon thread: a client that ignores its own timeout is abandoned (it ends with
        # the process) instead of hanging the command.
        worker = threading.Thread(target=call, name="llmpool-check", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            entry["error"] = f"timed out after {timeout:g}s"
            return entry
        if "error" in outcome:
            raise outcome["error"]
    except Exception as error:  # a health check reports every failure, then goes on
        text, name = one_line(str(error))[:200], type(error).__name__
        if "timeout" in name.lower() or isinstance(error, TimeoutError):
            entry["error"] = f"timed out after {timeout:g}s ({name})"
        else:
            entry["error"] = f"{name}: {text}" if text else name
        return entry
    reply = outcome["reply"]
    said = f"a vector of {len(reply)} numbers" if isinstance(reply, list) else reply.content
    latency = round((time.perf_counter() - started) * 1000, 1)
    entry.update(ok=True, latency_ms=latency, reply=one_line(str(said))[:60])
    return entry


def _valid(row: StoredRow) -> LLMConfig:
    if row.config is None:
        assert row.error is not None
        raise row.error  # what is wrong with the row
    return row.config


def cmd_check(args: argparse.Namespace) -> int:
    """``llmpool check``: build each row and send a tiny prompt within ``--timeout``, up to 8
    rows at once, each reported on stderr as it finishes; then the rows in order."""
    from concurrent.futures import ThreadPoolExecutor

    from llmpool.repository.stored import find_row

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        msg = f"--timeout must be a positive number of seconds, not {args.timeout:g}"
        raise UsageError(msg)
    with open_pool(args) as pool:
        rows = [_valid(find_row(pool.store, ref)) for ref in args.ids]
        rows = rows or pool.store.list_llms(scope=args.scope)
        progress = Progress("check", len(rows))

        def probe(config: LLMConfig) -> dict[str, Any]:
            entry = _probe(pool, config, args.timeout)
            error = one_line(str(entry["error"]))
            said = f"ok in {entry['latency_ms']} ms" if entry["ok"] else f"failed: {error}"
            progress.step(entry["name"], said)
            return entry

        with ThreadPoolExecutor(max(1, min(8, len(rows)))) as workers:
            data = list(workers.map(probe, rows))
    columns = ("name", "provider", "enabled", "ok", "latency_ms", "error")
    emit(args, data, lambda: table(data, columns))
    if args.ready:
        return 0 if any(d["ok"] and d["enabled"] for d in data) else 1
    return 0 if data and all(d["ok"] for d in data) else 1


def cmd_providers(args: argparse.Namespace) -> int:
    """``llmpool providers``: each provider's extra and variables, and the plugins that failed
    to load."""
    import importlib.util

    from llmpool.providers import ChatProvider, declared_env, get_registry

    registry = get_registry()
    data = []
    for provider in registry:
        secret_env, plain_env = declared_env(provider)
        installed: bool | None = None
        if isinstance(provider, ChatProvider):
            module = provider.chat_class.partition(":")[0]
            installed = importlib.util.find_spec(module.split(".")[0]) is not None
        data.append(
            {
                "name": provider.name,
                "extra": provider.extra,
                "package": provider.package,
                "installed": installed,
                "distribution": registry.distribution_of(provider.name),
                "capabilities": sorted(provider.capabilities),
                "secret_env": sorted(secret_env),
                "plain_env": sorted(plain_env),
            }
        )
    failed = [
        {"distribution": one_line(str(e.distribution)), "error": one_line(str(e))}
        for e in registry.load_errors
    ]
    columns = ("name", "extra", "installed", "distribution", "secret_env", "plain_env")
    text = table(data, columns)
    if failed:
        text += "\n\nplugins that failed to load:\n"
        text += "\n".join(f"  {f['distribution']}: {f['error']}" for f in failed)
    emit(args, {"providers": data, "load_errors": failed}, lambda: text)
    return 0
