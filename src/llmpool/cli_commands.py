"""The ``llmpool`` subcommands: thin layers over the public API, printing tables or JSON."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.errors import (
    EnvNotAllowedError,
    LLMNotFoundError,
    LLMPoolError,
    MissingSecretError,
    ProviderNotInstalledError,
    UnknownProviderError,
)

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.pool import LLMPool

__all__ = ["COMMANDS", "UsageError"]


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


# -- output ----------------------------------------------------------------------------------


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _emit(args: argparse.Namespace, data: Any, table: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(table())


def _row(config: LLMConfig) -> dict[str, Any]:
    data: dict[str, Any] = config.model_dump(mode="json")
    return data


_LIST_COLUMNS = (
    "id",
    "name",
    "provider",
    "model_name",
    "scope",
    "priority",
    "enabled",
    "is_default",
)


# -- helpers ---------------------------------------------------------------------------------


def _pool(args: argparse.Namespace, **kwargs: Any) -> LLMPool:
    from llmpool.pool import LLMPool

    return LLMPool(args.database_url, poll_interval=0, **kwargs)


def _find(pool: LLMPool, ref: str) -> LLMConfig:
    store = pool.store
    try:
        return store.get(ref)
    except LLMNotFoundError:
        pass
    matches = [c for c in store.list_llms(scope=None) if c.name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        scopes = ", ".join(sorted(c.scope for c in matches))
        msg = f"{len(matches)} LLMs are named {ref!r} (scopes: {scopes}); use the id"
        raise UsageError(msg)
    msg = f"No LLM with id or name {ref!r}"
    raise LLMNotFoundError(msg)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("name", "provider", "model_name", "priority", "scope", "auth_meta", "config")
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


# -- commands --------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    """``llmpool list``."""
    with _pool(args) as pool:
        rows = pool.store.list_llms(
            enabled_only=args.enabled,
            scope=None if args.all_scopes else args.scope,
            provider=args.provider,
            search=args.search,
        )
    if args.disabled:
        rows = [r for r in rows if not r.enabled]
    data = [_row(r) for r in rows]
    _emit(args, data, lambda: _table(data, _LIST_COLUMNS))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``llmpool show ID|NAME``."""
    with _pool(args) as pool:
        config = _find(pool, args.ref)
    data = _row(config)
    _emit(args, data, lambda: "\n".join(f"{k:>11}: {_cell(v)}" for k, v in data.items()))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """``llmpool add``."""
    if args.from_json:
        text = sys.stdin.read() if args.from_json == "-" else _read(args.from_json)
        try:
            loaded = json.loads(text)
        except ValueError as error:
            msg = f"{args.from_json} is not valid JSON: {error}"
            raise UsageError(msg) from None
        items = loaded if isinstance(loaded, list) else [loaded]
    else:
        missing = [f for f in ("name", "provider", "model_name") if getattr(args, f) is None]
        if missing:
            flags = ", ".join("--" + ("model" if f == "model_name" else f) for f in missing)
            msg = f"add needs {flags} (or --from-json FILE)"
            raise UsageError(msg)
        item = _changes(args)
        item["enabled"] = not args.disabled
        item["is_default"] = args.is_default
        items = [item]
    with _pool(args) as pool:
        store = pool.store
        added = [store.add(item, actor=args.actor) for item in items]
    data = [_row(c) for c in added]
    _emit(
        args,
        data if len(data) > 1 else data[0],
        lambda: "\n".join(f"added {c.describe()}" for c in added),
    )
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise UsageError(msg) from None


def cmd_edit(args: argparse.Namespace) -> int:
    """``llmpool edit ID ...``."""
    changes = _changes(args)
    if not changes:
        msg = "edit needs at least one field to change (e.g. --priority 5)"
        raise UsageError(msg)
    with _pool(args) as pool:
        after = pool.store.update(args.id, changes, actor=args.actor)
    _emit(args, _row(after), lambda: f"updated {after.describe()}")
    return 0


def _bulk(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _pool(args) as pool:
            rows = getattr(pool.store, action)(args.ids, actor=args.actor)
        data = [_row(r) for r in rows]
        _emit(args, data, lambda: "\n".join(f"{action}d {r.describe()}" for r in rows))
        return 0

    return run


def cmd_delete(args: argparse.Namespace) -> int:
    """``llmpool delete ID... [--yes]``."""
    if not args.yes:
        if not sys.stdin.isatty():
            msg = "delete asks for confirmation; pass --yes when not on a terminal"
            raise UsageError(msg)
        answer = input(f"Delete {len(args.ids)} LLM(s) {', '.join(args.ids)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    with _pool(args) as pool:
        count = pool.store.delete(args.ids, actor=args.actor)
    _emit(args, {"deleted": count}, lambda: f"deleted {count} LLM(s)")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    """``llmpool set-default ID``."""
    with _pool(args) as pool:
        after = pool.store.set_default(args.id, actor=args.actor)
    _emit(args, _row(after), lambda: f"{after.describe()} is now the default of {after.scope!r}")
    return 0


def _why_not(pool: LLMPool, config: LLMConfig) -> tuple[str, str | None]:
    """Return (status, reason) for one row of a chain."""
    if not config.enabled:
        return "skipped", "disabled"
    try:
        pool.registry.build(config, allowlist=pool.allowlist)
    except MissingSecretError as error:
        return "skipped", f"missing environment variable {error.variable}"
    except ProviderNotInstalledError as error:
        return "skipped", f"provider package not installed: {str(error).split('run: ')[-1]}"
    except EnvNotAllowedError as error:
        return "skipped", f"not on the allowlist: {error.field}"
    except UnknownProviderError:
        return "skipped", f"unknown provider {config.provider!r}"
    except LLMPoolError as error:
        return "skipped", str(error).splitlines()[0]
    from llmpool.breaker import Admission

    if pool.breakers.admit(config.id) is Admission.OPEN:
        return "skipped", "cooling down after repeated failures"
    return "would be tried", None


def cmd_chain(args: argparse.Namespace) -> int:
    """``llmpool chain``: the fallback order and why a row would not be tried."""
    with _pool(args) as pool:
        rows = pool.store.list_llms(scope=args.scope)
        data = []
        for position, config in enumerate(rows, 1):
            status, reason = _why_not(pool, config)
            data.append(
                {
                    "position": position,
                    "id": config.id,
                    "name": config.name,
                    "provider": config.provider,
                    "priority": config.priority,
                    "status": status,
                    "reason": reason,
                }
            )
    _emit(
        args,
        data,
        lambda: _table(data, ("position", "name", "provider", "priority", "status", "reason")),
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``llmpool check``: build each row and send a tiny prompt."""
    with _pool(args) as pool:
        store = pool.store
        rows = [store.get(i) for i in args.ids] if args.ids else store.list_llms(scope=args.scope)
        data = []
        for config in rows:
            started = time.perf_counter()
            entry: dict[str, Any] = {
                "id": config.id,
                "name": config.name,
                "provider": config.provider,
                "enabled": config.enabled,
            }
            try:
                model = pool.create_llm_instance(config)
                reply = model.invoke("Reply with the single word OK.")
                entry.update(
                    ok=True,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                    reply=str(reply.content)[:60],
                    error=None,
                )
            except Exception as error:  # a health check reports every failure, then goes on
                entry.update(
                    ok=False,
                    latency_ms=None,
                    reply=None,
                    error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    if str(error)
                    else type(error).__name__,
                )
            data.append(entry)
    _emit(
        args,
        data,
        lambda: _table(data, ("name", "provider", "enabled", "ok", "latency_ms", "error")),
    )
    return 0 if all(d["ok"] for d in data) else 1


_RELATIVE = re.compile(r"^(\d+)([smhdw])$")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        delta = timedelta(**{unit[match.group(2)]: int(match.group(1))})
        return datetime.now(timezone.utc) - delta
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        msg = f"--since {text!r}: use an ISO date/time or 30m, 12h, 7d"
        raise UsageError(msg) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_audit(args: argparse.Namespace) -> int:
    """``llmpool audit``."""
    since = _since(args.since)
    with _pool(args) as pool:
        entries = pool.store.audit_log(llm_id=args.llm_id, since=since, limit=args.limit)
    data = [e.model_dump(mode="json") for e in entries]
    rows = [{**d, "name": (d["after"] or d["before"] or {}).get("name")} for d in data]
    _emit(args, data, lambda: _table(rows, ("at", "actor", "action", "name", "llm_id")))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """``llmpool migrate [--seed]``."""
    from llmpool.migrate import migrate, seed_starter_rows

    applied = migrate(args.database_url)
    seeded: list[str] = []
    if args.seed:
        with _pool(args, auto_migrate=False) as pool:
            seeded = [c.name for c in seed_starter_rows(pool.store, actor=args.actor)]
    data = {"applied": applied, "seeded": seeded}
    _emit(
        args,
        data,
        lambda: (
            "\n".join([f"applied {name}" for name in applied] or ["database is up to date"])
            + "".join(f"\nseeded {name}" for name in seeded)
        ),
    )
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    """``llmpool providers``."""
    import importlib.util

    from llmpool.providers import ChatProvider, get_registry

    registry = get_registry()
    data = []
    for provider in registry:
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
            }
        )
    failed = [{"distribution": e.distribution, "error": str(e)} for e in registry.load_errors]
    payload = {"providers": data, "load_errors": failed}

    def table() -> str:
        text = _table(data, ("name", "extra", "installed", "distribution"))
        if failed:
            text += "\n\nplugins that failed to load:\n" + "\n".join(
                f"  {f['distribution']}: {f['error']}" for f in failed
            )
        return text

    _emit(args, payload, table)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "add": cmd_add,
    "edit": cmd_edit,
    "enable": _bulk("enable"),
    "disable": _bulk("disable"),
    "delete": cmd_delete,
    "set-default": cmd_set_default,
    "chain": cmd_chain,
    "check": cmd_check,
    "audit": cmd_audit,
    "migrate": cmd_migrate,
    "providers": cmd_providers,
}


def _register_demo() -> None:
    from llmpool.cli_demo import cmd_demo

    COMMANDS["demo"] = cmd_demo


_register_demo()
