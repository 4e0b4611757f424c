"""What is wrong in the ``llms`` table, row by row, with the command that fixes each problem.

`diagnose` reads every row as stored (`llmpool.repository.stored`) and reports:

- ``invalid_row``: the row fails validation (a bad field written by raw SQL), so it is skipped;
- ``literal_secret``: ``auth_meta`` (or ``config``) holds a secret value instead of a reference;
  the row is skipped, and the secret should be rotated: it was stored in the database;
- ``unresolvable_reference``: an ``*_env`` / ``*_file`` reference that the allowlist refuses, or
  that is not set in the environment the check runs in (run it where the models are served);
- ``unknown_provider``: no provider of that name is installed here;
- ``unknown_config_key``: a ``config`` key the provider does not accept;
- ``similar_names``: names in one scope that differ only by case or surrounding spaces
  (``GPT-4`` and ``gpt-4 ``), which an admin cannot tell apart; the same name in different
  scopes is fine;
- ``disabled_default``: a scope's default is disabled, so ``get_llm()`` has no default;
- ``invalid_routing``: a scope's stored routing (``llm_scopes``, written by raw SQL) is not a
  strategy, so the scope is served by priority; the finding's ``llm_id`` is empty.

Example:
    >>> from llmpool.repository.memory import InMemoryStore
    >>> store = InMemoryStore([{"name": "A", "provider": "fake", "model_name": "m",
    ...                         "is_default": True, "enabled": False}])
    >>> [f.kind for f in diagnose(store)]
    ['disabled_default']
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmpool.errors import LiteralSecretError, LLMPoolError, describe_row, shorten, visible

if TYPE_CHECKING:
    from llmpool.credentials.allowlist import EnvAllowlist
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry
    from llmpool.repository.stored import StoredRow

__all__ = ["KINDS", "Finding", "diagnose"]

#: Every kind of problem `diagnose` reports, in the order it reports them.
KINDS = (
    "invalid_row",
    "literal_secret",
    "unresolvable_reference",
    "unknown_provider",
    "unknown_config_key",
    "similar_names",
    "disabled_default",
    "invalid_routing",
)


@dataclass(frozen=True)
class Finding:
    """One problem of one row (or of one scope's routing).

    Attributes:
        kind: One of `KINDS`.
        llm_id: The row's id; empty for a scope's problem (``invalid_routing``).
        name: The row's name, when it is readable.
        scope: The row's scope, when it is readable.
        field: The field at fault, when there is one (``auth_meta.api_key``).
        problem: What is wrong, naming the field and never a value.
        fix: The command that fixes it.
    """

    kind: str
    llm_id: str
    name: str | None
    scope: str | None
    field: str | None
    problem: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        """Return the finding as a JSON-ready dict."""
        return asdict(self)


def _q(text: str) -> str:
    return shlex.quote(text)


def _invalid(row: StoredRow) -> Finding:
    error = row.error
    assert error is not None
    field = error.field
    literal = isinstance(error, LiteralSecretError)
    if literal and field and field.startswith("auth_meta."):
        key = field.partition(".")[2]
        fix = (
            f"llmpool edit {row.id} --unset {field} --set auth_meta.{key}_env=VARIABLE "
            "(then rotate the key: it was stored in the database)"
        )
    elif field and "." in field:
        fix = f"llmpool edit {row.id} --unset {_q(field)}  (or --set {_q(field)}=VALUE)"
    elif field:
        fix = f"llmpool edit {row.id} --set {_q(field)}=VALUE"
    else:
        fix = f"llmpool show {row.id}, then llmpool edit {row.id} --set FIELD=VALUE"
    fix += f"; or llmpool delete {row.id} --yes"
    return Finding(
        "literal_secret" if literal else "invalid_row",
        row.id,
        row.name,
        row.scope,
        field,
        shorten(str(error), 1000),
        fix,
    )


def _references(
    config: LLMConfig, allowlist: EnvAllowlist, environ: Mapping[str, str]
) -> list[Finding]:
    from llmpool.credentials.resolve import resolve_auth

    try:
        resolve_auth(config, allowlist=allowlist, environ=environ)
    except LLMPoolError as error:
        if type(error).__name__ not in ("MissingSecretError", "EnvNotAllowedError"):
            return []  # e.g. an unknown provider: reported as such
        field = getattr(error, "field", None)
        variable = getattr(error, "variable", None)
        if variable and not field:
            field = next(
                (f"auth_meta.{k}" for k, v in config.auth_meta.items() if v == variable), None
            )
        fix = (
            f"set {variable} where the models are served, or llmpool edit {config.id} "
            f"--set {field or 'auth_meta.KEY'}=OTHER_VARIABLE"
            if variable
            else f"llmpool edit {config.id} --set {field or 'auth_meta.KEY'}=VARIABLE "
            "(or allow it with LLMPOOL_ALLOWED_ENV / LLMPOOL_SECRET_DIRS)"
        )
        return [
            Finding(
                "unresolvable_reference",
                config.id,
                config.name,
                config.scope,
                field,
                shorten(str(error), 1000),
                fix,
            )
        ]
    return []


def _provider(config: LLMConfig, registry: ProviderRegistry) -> list[Finding]:
    from llmpool.errors import UnknownProviderError
    from llmpool.providers import ALIASES, ConfigKeysCheck

    try:
        registry.get(config.provider)
    except UnknownProviderError:
        known = sorted({*registry.names(), *ALIASES})
        close = difflib.get_close_matches(config.provider, known, n=1)
        target = close[0] if close else "PROVIDER"
        return [
            Finding(
                "unknown_provider",
                config.id,
                config.name,
                config.scope,
                "provider",
                f"{config.describe()}: provider {config.provider!r} is not installed here"
                + (f"; did you mean {close[0]!r}?" if close else ""),
                f"llmpool edit {config.id} --set provider={target} (or install its plugin)",
            )
        ]
    except LLMPoolError:
        return []  # installed but broken: `llmpool providers` says why
    try:
        ConfigKeysCheck(registry)(config)
    except LLMPoolError as error:
        field = getattr(error, "field", None) or "config"
        return [
            Finding(
                "unknown_config_key",
                config.id,
                config.name,
                config.scope,
                field,
                shorten(str(error), 1000),
                f"llmpool edit {config.id} --unset {_q(field)}",
            )
        ]
    return []


def _similar_names(rows: list[StoredRow]) -> list[Finding]:
    groups: dict[tuple[str | None, str], list[StoredRow]] = defaultdict(list)
    for row in rows:
        if row.name is not None:
            groups[(row.scope, row.name.strip().casefold())].append(row)
    findings: list[Finding] = []
    for (scope, _), group in sorted(groups.items(), key=lambda item: str(item[0])):
        if len(group) < 2:
            continue
        names = ", ".join(describe_row(r.name, r.id) for r in group)
        for row in group[1:]:
            findings.append(
                Finding(
                    "similar_names",
                    row.id,
                    row.name,
                    scope,
                    "name",
                    f"{len(group)} rows of scope {shorten(scope or '?')!r} have names that "
                    f"differ only by case or spaces: {names}",
                    f"llmpool edit {row.id} --set name={_q('NEW NAME')} (or llmpool delete "
                    f"{row.id} --yes)",
                )
            )
    return findings


def _disabled_default(config: LLMConfig) -> list[Finding]:
    if not (config.is_default and not config.enabled):
        return []
    return [
        Finding(
            "disabled_default",
            config.id,
            config.name,
            config.scope,
            "enabled",
            f"{config.describe()} is the default of scope {config.scope!r} but is disabled: "
            "get_llm() finds no default there",
            f"llmpool enable {config.id}; or llmpool set-default OTHER_ID_OR_NAME "
            f"--scope {_q(config.scope)}",
        )
    ]


def _invalid_routing(store: Any, scope: str | None) -> list[Finding]:
    from llmpool.repository.scopes import STRATEGIES

    scope_routing = getattr(store, "scope_routing", None)
    if scope_routing is None:
        return []
    findings: list[Finding] = []
    for name, stored in sorted(scope_routing().items()):
        if stored in STRATEGIES or (scope is not None and name != scope):
            continue
        shown = shorten(visible(stored), 40)
        findings.append(
            Finding(
                "invalid_routing",
                "",
                None,
                name,
                "routing",
                f"scope {shorten(visible(name))!r} has the stored routing {shown!r}, which is "
                f"not a strategy ({', '.join(STRATEGIES)}): the scope is served by priority",
                f"llmpool routing {_q(name)} priority (or another strategy)",
            )
        )
    return findings


def diagnose(
    store: Any,
    *,
    scope: str | None = None,
    registry: ProviderRegistry | None = None,
    allowlist: EnvAllowlist | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Return every problem of the table's rows (of one scope, or all), each with its fix.

    Args:
        store: An `LLMStore`; a SQL store is read as stored, invalid rows included.
        scope: Only this scope; ``None`` for every scope.
        registry: Where providers are looked up; the process-wide registry by default.
        allowlist: What rows may reference; `EnvAllowlist.from_env` by default.
        environ: Where references are resolved; ``os.environ`` by default.

    Returns:
        The findings, grouped by kind in the order of `KINDS`; empty when all is well.
    """
    from llmpool.credentials.allowlist import EnvAllowlist
    from llmpool.providers import get_registry
    from llmpool.repository.stored import stored_rows

    registry = registry if registry is not None else get_registry()
    env = os.environ if environ is None else environ
    allow = allowlist if allowlist is not None else EnvAllowlist.from_env(env)
    rows = stored_rows(store, scope=scope)
    findings: list[Finding] = []
    for row in rows:
        if row.config is None:
            findings.append(_invalid(row))
            continue
        findings += _references(row.config, allow, env)
        findings += _provider(row.config, registry)
        findings += _disabled_default(row.config)
    findings += _similar_names(rows)
    findings += _invalid_routing(store, scope)
    order = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(findings, key=lambda f: (order[f.kind], f.scope or "", f.name or "", f.llm_id))
