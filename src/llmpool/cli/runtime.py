"""The ``llmpool`` commands that load providers and build models: ``chain`` (the scope's health,
`LLMPool.status`), ``check`` (a tiny prompt to each row), ``demo`` (the seed's rows and a fake
one in a real fallback walk, offline) and ``providers``."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, bounded
from llmpool.cli.output import UsageError, emit, one_line, open_pool, quiet, row_reason, table

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

#: The row that answers when nothing else can: langchain-core's fake chat model.
_DEMO_ROW: dict[str, Any] = {
    "name": "Demo Fake",
    "provider": "fake",
    "model_name": "demo",
    "priority": 90,
    "config": {"responses": ["Machine learning is software that improves from examples."]},
}


def register(add: AddCommand) -> None:
    """Add the parsers of the commands that build models."""
    help_text = "the scope's health: each row in call order, its breaker, and who would answer now"
    p = add("chain", cmd_chain, help_text, _CHAIN_EPILOG)
    p.add_argument("--scope", type=bounded("scope"), default="global")
    p.add_argument("--kind", choices=("chat", "embedding"), default="chat", help="which chain")
    help_text = "the service's redis= URL, to show the fleet's state (default: LLMPOOL_REDIS_URL)"
    p.add_argument("--redis", "--redis-url", dest="redis_url", metavar="URL", help=help_text)
    help_text = "the service's redis_prefix= (default: LLMPOOL_REDIS_PREFIX, else llmpool:)"
    p.add_argument("--redis-prefix", help=help_text)
    p = add("check", cmd_check, "build each LLM and send a tiny prompt (works on disabled rows)")
    p.add_argument("ids", nargs="*", metavar="ID|NAME", type=bounded("name"))
    p.add_argument("--scope", type=bounded("scope"), default="global")
    help_text = "seconds each row may take; passed to its client and enforced (default: 20)"
    p.add_argument("--timeout", type=float, default=20.0, help=help_text)
    help_text = (
        "exit 0 when at least one enabled row answers (a readiness probe); by default any "
        "failure exits 1"
    )
    p.add_argument("--ready", action="store_true", help=help_text)
    help_text = "providers found, their extras, and plugins that failed to load"
    add("providers", cmd_providers, help_text)
    help_text = "a fallback walk on a temporary SQLite database, offline (ignores --database-url)"
    add("demo", cmd_demo, help_text)


def cmd_chain(args: argparse.Namespace) -> int:
    """``llmpool chain``: `LLMPool.status` of the scope, and its rows that fail validation;
    exit 1 when no row can answer, or the shared breakers could not be read."""
    from llmpool.repository.stored import stored_rows

    redis_url = args.redis_url or os.environ.get("LLMPOOL_REDIS_URL") or None
    prefix = args.redis_prefix or os.environ.get("LLMPOOL_REDIS_PREFIX") or "llmpool:"
    # A reader of the fleet: it never serves a model, so it never joins (no heartbeat).
    # An unreachable Redis is said once, below, as what it means here: states unknown.
    with open_pool(args, redis=redis_url, redis_prefix=prefix) as pool, quiet("llmpool.redis"):
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
            f"llmpool: warning: Redis {one_line(redis_url or '')} did not answer: the shared "
            "breaker states are unknown",
            file=sys.stderr,
        )

    def render() -> str:
        rows = [_chain_row(row) for row in status["rows"]] + status["invalid_rows"]
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


def _chain_row(row: dict[str, Any]) -> dict[str, Any]:
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
        lock, done, tty = threading.Lock(), [0], sys.stderr.isatty()

        def probe(config: LLMConfig) -> dict[str, Any]:
            entry = _probe(pool, config, args.timeout)
            with lock:  # on a terminal one line rewritten in place, else one per row (a log)
                done[0] += 1
                name, error = one_line(entry["name"]), one_line(str(entry["error"]))
                said = f"ok in {entry['latency_ms']} ms" if entry["ok"] else f"failed: {error}"
                count = f"{done[0]}/{len(rows)}"
                if not tty:
                    sys.stderr.write(f"llmpool: check {count}: {name}: {said}\n")
                else:
                    sys.stderr.write("\r\x1b[2K" + f"[{count}] {name}: {said}"[:200])
                    sys.stderr.write("\r\x1b[2K" if done[0] == len(rows) else "")
                sys.stderr.flush()
            return entry

        with ThreadPoolExecutor(max(1, min(8, len(rows)))) as workers:
            data = list(workers.map(probe, rows))
    columns = ("name", "provider", "enabled", "ok", "latency_ms", "error")
    emit(args, data, lambda: table(data, columns))
    if args.ready:
        return 0 if any(d["ok"] and d["enabled"] for d in data) else 1
    return 0 if data and all(d["ok"] for d in data) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """``llmpool demo``: the seed's rows and a fake one on a temporary SQLite database, in a
    fallback walk that hides the variables the rows reference, so it calls no real provider."""
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows
    from llmpool.repository.sql.url import mask_url

    if args.database_url:
        print(
            "llmpool: note: demo always uses a temporary SQLite database; "
            "--database-url is ignored",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="llmpool-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.sqlite3'}"
        migrate(url)
        policy = FallbackPolicy(attempts=1, deadline=30)
        with LLMPool(url, poll_interval=0, listen=False, policy=policy) as pool:
            seed_starter_rows(pool.store, actor=args.actor)
            pool.store.add(_DEMO_ROW, actor=args.actor)
            rows = pool.store.list_llms()
            names = {v for r in rows for k, v in r.auth_meta.items() if k.endswith("_env")}
            hidden = {name: os.environ.pop(name) for name in names if name in os.environ}
            try:  # the walk below shows why rows are skipped
                with quiet("llmpool.pool"):
                    answer = pool.get_llm_with_fallback().invoke("Explain machine learning")
            finally:
                os.environ.update(hidden)
    meta = answer.response_metadata["llmpool"]
    walk = [
        {
            "name": a["name"],
            "outcome": a["outcome"],
            "detail": one_line(str(a.get("reason") or a.get("error") or "")) or None,
        }
        for a in meta["attempts"]
    ]
    shown, who, said = mask_url(url), meta["name"], str(answer.content)
    marks = {"ok": "answered", "error": "failed", "skipped": "skipped"}
    order = ", ".join(f"{r.name} ({r.priority}{'' if r.enabled else ', disabled'})" for r in rows)
    text = [f"database: {shown} (temporary, deleted on exit)", f"rows in priority order: {order}"]
    text.append("\nget_llm_with_fallback().invoke('Explain machine learning'):")
    for step in walk:
        detail = f": {step['detail']}" if step["detail"] else ""
        text.append(f"  {step['name']:<16} {marks[step['outcome']]}{detail}")
    text.append(f"\nanswer from {who}: {said}")
    data = {"database": shown, "temporary": True, "rows": [r.name for r in rows], "walk": walk}
    emit(args, {**data, "answered_by": who, "answer": said}, lambda: "\n".join(text))
    return 0


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
