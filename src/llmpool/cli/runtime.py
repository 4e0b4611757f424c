"""The commands that turn rows into chat models: ``providers``, ``check``, ``demo``.

``demo`` shows the seed's example rows plus a fake one in a real fallback walk, offline: it
always works on a temporary SQLite file, never on a configured database, and hides the
provider variables the rows reference, so it never calls a real provider.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import UsageError, emit, find_llm, one_line, open_pool, quiet, table
from llmpool.errors import (
    UnsupportedParameterError,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool

__all__ = ["COMMANDS", "DEMO_ROW", "cmd_check", "cmd_demo", "register"]


def register(add: AddCommand) -> None:
    """Add the parsers of the commands that build models."""
    p = add("check", "build each LLM and send a tiny prompt (works on disabled rows)")
    p.add_argument("ids", nargs="*", metavar="ID|NAME", type=bounded("name"))
    p.add_argument("--scope", type=bounded("scope"), default="global")
    p.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds each row may take; passed to its client and enforced (default: 20)",
    )
    p.add_argument(
        "--ready",
        action="store_true",
        help="exit 0 when at least one enabled row answers (a readiness probe); "
        "by default any failure exits 1",
    )

    add("providers", "providers found, their extras, and plugins that failed to load")
    add("demo", "a fallback walk on a temporary SQLite database, offline (ignores --database-url)")


#: The row that answers when nothing else can: langchain-core's fake chat model.
DEMO_ROW: dict[str, Any] = {
    "name": "Demo Fake",
    "provider": "fake",
    "model_name": "demo",
    "priority": 90,
    "config": {"responses": ["Machine learning is software that improves from examples."]},
}

#: What ``check`` sends to each row.
PROBE_PROMPT = "Reply with the single word OK."


def cmd_providers(args: argparse.Namespace) -> int:
    """``llmpool providers``."""
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
    payload = {"providers": data, "load_errors": failed}

    def render() -> str:
        text = table(
            data, ("name", "extra", "installed", "distribution", "secret_env", "plain_env")
        )
        if failed:
            text += "\n\nplugins that failed to load:\n" + "\n".join(
                f"  {f['distribution']}: {f['error']}" for f in failed
            )
        return text

    emit(args, payload, render)
    return 0


# -- check -----------------------------------------------------------------------------------


class ProbeTimeout(Exception):
    """A probe did not finish within its deadline."""


def build_bounded(pool: LLMPool, config: LLMConfig, timeout: float) -> BaseChatModel:
    """Build the row's model with ``timeout`` as its request timeout, where its client takes one.

    A smaller timeout already in the row's ``config`` is kept. A client without a timeout
    parameter is built from the row as it is (the caller's deadline still bounds it).

    Raises:
        LLMPoolError: The row cannot be built.
    """
    key = "request_timeout" if "request_timeout" in config.config else "timeout"
    current = config.config.get(key)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        timeout = min(float(current), timeout)
    bounded = config.model_copy(update={"config": {**config.config, key: timeout}})
    registry = pool.registry
    build: Any = registry.build_embeddings if config.kind == "embedding" else registry.build
    try:
        return build(bounded, allowlist=pool.allowlist)  # type: ignore[no-any-return]
    except UnsupportedParameterError:
        return build(config, allowlist=pool.allowlist)  # type: ignore[no-any-return]


def call_with_deadline(call: Callable[[], Any], timeout: float) -> Any:
    """Return ``call()``, or raise `ProbeTimeout` when it takes longer than ``timeout`` seconds.

    The call runs on a daemon thread: a client that ignores its own timeout is abandoned (and
    ends with the process) instead of hanging the command.

    Raises:
        ProbeTimeout: The deadline passed.
        Exception: Whatever the call raised.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="llmpool-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ProbeTimeout(f"timed out after {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _probe(pool: LLMPool, config: LLMConfig, timeout: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": config.id,
        "name": config.name,
        "provider": config.provider,
        "enabled": config.enabled,
        "ok": False,
        "latency_ms": None,
        "reply": None,
        "error": None,
    }
    try:
        # Timed from here: building the client (and importing its package) is not latency.
        model = build_bounded(pool, config, timeout)
        started = time.perf_counter()
        client: Any = model  # an embedding row's client embeds the prompt
        ask = client.embed_query if config.kind == "embedding" else client.invoke
        reply = call_with_deadline(lambda: ask(PROBE_PROMPT), timeout)
    except ProbeTimeout as error:
        entry["error"] = str(error)
    except Exception as error:  # a health check reports every failure, then goes on
        text = one_line(str(error))[:200] if str(error).strip() else ""
        if "timeout" in type(error).__name__.lower() or isinstance(error, TimeoutError):
            entry["error"] = f"timed out after {timeout:g}s ({type(error).__name__})"
        else:
            entry["error"] = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        said = f"a vector of {len(reply)} numbers" if isinstance(reply, list) else reply.content
        entry.update(
            ok=True,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            reply=one_line(str(said))[:60],
        )
    return entry


class Progress:
    """Says on stderr as each row's check finishes: a line rewritten in place on a terminal,
    one plain line per row otherwise (a log, a CI job)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._lock = threading.Lock()

    def finished(self, entry: dict[str, Any]) -> None:
        """Report one finished row."""
        with self._lock:
            self.done += 1
            name = one_line(entry["name"])
            if entry["ok"]:
                verdict = f"ok in {entry['latency_ms']} ms"
            else:
                verdict = f"failed: {one_line(str(entry['error']))}"
            if self.tty:
                line = f"[{self.done}/{self.total}] {name}: {verdict}"
                sys.stderr.write("\r\x1b[2K" + line[:200])
                if self.done == self.total:
                    sys.stderr.write("\r\x1b[2K")
            else:
                sys.stderr.write(f"llmpool: check {self.done}/{self.total}: {name}: {verdict}\n")
            sys.stderr.flush()


#: Rows checked at once.
CHECK_WORKERS = 8


def cmd_check(args: argparse.Namespace) -> int:
    """``llmpool check``: build each row and send a tiny prompt, each within ``--timeout``.

    Rows are checked at once (up to `CHECK_WORKERS`), each reported on stderr as it finishes;
    the table (or ``--json``) lists them in order at the end.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        msg = f"--timeout must be a positive number of seconds, not {args.timeout:g}"
        raise UsageError(msg)
    with open_pool(args) as pool:
        refs = args.ids
        rows = [find_llm(pool, ref) for ref in refs] if refs else None
        if rows is None:
            rows = pool.store.list_llms(scope=args.scope)
        progress = Progress(len(rows))

        def probe(config: LLMConfig) -> dict[str, Any]:
            entry = _probe(pool, config, args.timeout)
            progress.finished(entry)
            return entry

        with ThreadPoolExecutor(max(1, min(CHECK_WORKERS, len(rows)))) as workers:
            data = list(workers.map(probe, rows))
    emit(
        args,
        data,
        lambda: table(data, ("name", "provider", "enabled", "ok", "latency_ms", "error")),
    )
    if args.ready:
        return 0 if any(d["ok"] and d["enabled"] for d in data) else 1
    return 0 if data and all(d["ok"] for d in data) else 1


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Create a temporary database, add the seed's rows and a fake row, walk the fallback chain."""
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
        shown = mask_url(url)
        migrate(url)
        policy = FallbackPolicy(attempts=1, deadline=30)
        with LLMPool(url, poll_interval=0, listen=False, policy=policy) as pool:
            store = pool.store
            seed_starter_rows(store, actor=args.actor)
            store.add(DEMO_ROW, actor=args.actor)
            rows = store.list_llms()
            hidden = _hidden(v for r in rows for k, v in r.auth_meta.items() if k.endswith("_env"))
            with hidden, quiet("llmpool.pool"):  # the walk below shows why rows are skipped
                answer = pool.get_llm_with_fallback().invoke("Explain machine learning")
    meta = answer.response_metadata["llmpool"]
    walk = [
        {
            "name": a["name"],
            "outcome": a["outcome"],
            "detail": one_line(str(a.get("reason") or a.get("error") or "")) or None,
        }
        for a in meta["attempts"]
    ]
    data = {
        "database": shown,
        "temporary": True,
        "rows": [r.name for r in rows],
        "walk": walk,
        "answered_by": meta["name"],
        "answer": str(answer.content),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"database: {shown} (temporary, deleted on exit)")
    print(
        "rows in priority order: "
        + ", ".join(f"{r.name} ({r.priority}{'' if r.enabled else ', disabled'})" for r in rows)
    )
    print("\nget_llm_with_fallback().invoke('Explain machine learning'):")
    for step in walk:
        mark = {"ok": "answered", "error": "failed", "skipped": "skipped"}[step["outcome"]]
        detail = f": {step['detail']}" if step["detail"] else ""
        print(f"  {step['name']:<16} {mark}{detail}")
    print(f"\nanswer from {meta['name']}: {answer.content}")
    return 0


@contextlib.contextmanager
def _hidden(names: Iterable[str]) -> Iterator[None]:
    # The demo must stay offline even where OPENAI_API_KEY and friends are set.
    saved = {name: os.environ.pop(name) for name in set(names) if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


COMMANDS: dict[str, Handler] = {
    "providers": cmd_providers,
    "check": cmd_check,
    "demo": cmd_demo,
}
