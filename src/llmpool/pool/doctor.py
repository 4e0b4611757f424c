"""What is wrong in the ``llms`` table, row by row, with the command that fixes each problem.

`diagnose` reads every row as stored (`llmpool.repository.stored`) and reports each of `KINDS`,
each finding with a severity (`SEVERITIES`, `SEVERITY`): an ``error`` breaks calls or leaks a
secret, a ``warning`` still serves, or depends on where the check runs; a provider or reference
problem of a disabled row, which serves nothing until enabled, is one step lower (to ``info``).

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
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from shlex import quote
from typing import TYPE_CHECKING, Any

from llmpool.errors import (
    EnvNotAllowedError,
    InvalidConfigError,
    LiteralSecretError,
    LLMPoolError,
    MissingSecretError,
    MixedSpacesError,
    UnknownProviderError,
    describe_row,
    shorten,
    visible,
)

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry
    from llmpool.providers.allowlist import EnvAllowlist
    from llmpool.repository.stored import StoredRow


#: Every kind of problem `diagnose` reports, in the order it reports them.
KINDS = (
    "invalid_row",  # fails validation (a field written by raw SQL): skipped
    "literal_secret",  # a secret value instead of a reference: skipped, and to be rotated
    "unresolvable_reference",  # refused by the allowlist, or not set where the check runs
    "unknown_provider",  # no provider of that name is installed here
    "unknown_config_key",  # a config key the provider does not accept
    "similar_names",  # names of one scope that differ only by case or surrounding spaces
    "disabled_default",  # a scope's default is disabled: get_llm() has no default
    "invalid_routing",  # a scope's stored routing is not a strategy: served by priority
    "invalid_experiment",  # an experiment's arm names no enabled row, or its definition is bad
    "mixed_spaces",  # a scope's enabled embedding rows span several vector spaces
)

#: The severities of a finding, least serious first.
SEVERITIES = ("info", "warning", "error")

#: Each kind's severity on an enabled row. A reference is judged from the environment of the
#: check (a CI job holds no provider keys), routing that is no strategy still serves, and
#: similar names only confuse a reader.
SEVERITY = {
    **dict.fromkeys(KINDS, "error"),
    **dict.fromkeys(
        ("unresolvable_reference", "similar_names", "invalid_routing", "invalid_experiment"),
        "warning",
    ),
}


@dataclass(frozen=True)
class Finding:
    """One problem of one row, or of one scope (``llm_id`` empty), with its fix."""

    kind: str
    llm_id: str
    name: str | None
    scope: str | None
    field: str | None
    problem: str
    fix: str
    severity: str

    def as_dict(self) -> dict[str, Any]:
        """Return the finding as a JSON-ready dict."""
        return asdict(self)


def _about(
    row: LLMConfig | StoredRow, kind: str, field: str | None, problem: str | Exception, fix: str
) -> Finding:
    if isinstance(problem, Exception):  # its message, cut short
        problem = shorten(str(problem), 1000)
    return Finding(kind, row.id, row.name, row.scope, field, problem, fix, SEVERITY[kind])


def _lowered(finding: Finding) -> Finding:
    # A problem of a disabled row waits until the row is enabled: one step less serious.
    lower = SEVERITIES[max(0, SEVERITIES.index(finding.severity) - 1)]
    return replace(finding, severity=lower)


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
        fix = f"llmpool edit {row.id} --unset {quote(field)}  (or --set {quote(field)}=VALUE)"
    elif field:
        fix = f"llmpool edit {row.id} --set {quote(field)}=VALUE"
    else:
        fix = f"llmpool show {row.id}, then llmpool edit {row.id} --set FIELD=VALUE"
    fix += f"; or llmpool delete {row.id} --yes"
    return _about(row, "literal_secret" if literal else "invalid_row", field, error, fix)


def _references(
    config: LLMConfig, allowlist: EnvAllowlist, environ: Mapping[str, str]
) -> list[Finding]:
    from llmpool.providers.allowlist import resolve_auth

    try:
        resolve_auth(config, allowlist=allowlist, environ=environ)
    except (MissingSecretError, EnvNotAllowedError) as error:
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
        return [_about(config, "unresolvable_reference", field, error, fix)]
    except LLMPoolError:
        return []  # e.g. an unknown provider: reported as such
    return []


def _provider(config: LLMConfig, registry: ProviderRegistry) -> list[Finding]:
    from llmpool.providers import ALIASES, ConfigKeysCheck

    try:
        registry.get(config.provider)
    except UnknownProviderError:
        close = difflib.get_close_matches(config.provider, {*registry.names(), *ALIASES}, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        problem = f"{config.describe()}: provider {config.provider!r} is not installed here{guess}"
        target = close[0] if close else "PROVIDER"
        fix = f"llmpool edit {config.id} --set provider={target} (or install its plugin)"
        return [_about(config, "unknown_provider", "provider", problem, fix)]
    except LLMPoolError:
        return []  # installed but broken: `llmpool providers` says why
    try:
        ConfigKeysCheck(registry)(config)
    except LLMPoolError as error:
        field = getattr(error, "field", None) or "config"
        fix = f"llmpool edit {config.id} --unset {quote(field)}"
        return [_about(config, "unknown_config_key", field, error, fix)]
    return []


def _similar_names(rows: list[StoredRow]) -> list[Finding]:
    groups: dict[tuple[str | None, str], list[StoredRow]] = defaultdict(list)
    for row in rows:
        if row.name is not None:
            groups[(row.scope, row.name.strip().casefold())].append(row)
    findings: list[Finding] = []
    for (scope, _), group in sorted(groups.items(), key=lambda item: str(item[0])):
        names = ", ".join(describe_row(r.name, r.id) for r in group)
        problem = (
            f"{len(group)} rows of scope {shorten(scope or '?')!r} have names that differ "
            f"only by case or spaces: {names}"
        )
        for row in group[1:]:
            fix = f"llmpool edit {row.id} --set name='NEW NAME' (or llmpool delete {row.id} --yes)"
            findings.append(_about(row, "similar_names", "name", problem, fix))
    return findings


def _disabled_default(config: LLMConfig) -> list[Finding]:
    if not (config.is_default and not config.enabled):
        return []
    problem = (
        f"{config.describe()} is the default of scope {config.scope!r} but is disabled: "
        "get_llm() finds no default there"
    )
    fix = (
        f"llmpool enable {config.id}; or llmpool set-default OTHER_ID_OR_NAME "
        f"--scope {quote(config.scope)}"
    )
    return [_about(config, "disabled_default", "enabled", problem, fix)]


def _invalid_routing(store: Any, scope: str | None) -> list[Finding]:
    from llmpool.repository.scopes import STRATEGIES

    scope_routing = getattr(store, "scope_routing", None)
    if scope_routing is None:
        return []
    return [
        Finding(
            "invalid_routing",
            "",
            None,
            name,
            "routing",
            f"scope {shorten(visible(name))!r} has the stored routing "
            f"{shorten(visible(stored), 40)!r}, which is not a strategy "
            f"({', '.join(STRATEGIES)}): the scope is served by priority",
            f"llmpool routing {quote(name)} priority (or another strategy)",
            SEVERITY["invalid_routing"],
        )
        for name, stored in sorted(scope_routing().items())
        if stored not in STRATEGIES and (scope is None or name == scope)
    ]


def _invalid_experiments(store: Any, scope: str | None, rows: list[StoredRow]) -> list[Finding]:
    # A scope routed as an experiment whose definition is bad (raw SQL; served by priority), or
    # whose arm names no enabled row of the scope (renamed, deleted, disabled): its calls go
    # to the scope's other rows, and its share of the report is empty.
    from llmpool.repository.experiments import check_experiment

    scope_experiments = getattr(store, "scope_experiments", None)
    if scope_experiments is None:
        return []
    routing = store.scope_routing()
    findings = []
    for name, stored in sorted(scope_experiments().items()):
        if routing.get(name) != "experiment" or scope not in (None, name):
            continue
        enabled = {
            r.config.name for r in rows if r.config and r.config.scope == name and r.config.enabled
        }
        fix = (
            f"llmpool experiment set {quote(name)} --arm NAME=ROW ... (or llmpool routing "
            f"{quote(name)} priority)"
        )
        try:
            experiment = check_experiment(name, stored)
        except InvalidConfigError as error:
            problem = f"{error} (the scope is served by priority)"
            findings.append(
                Finding(
                    "invalid_experiment",
                    "",
                    None,
                    name,
                    error.field,
                    problem,
                    fix,
                    SEVERITY["invalid_experiment"],
                )
            )
            continue
        for arm in experiment.arms:
            missing = [row for row in arm.rows if row not in enabled]
            if missing:
                problem = (
                    f"scope {shorten(visible(name))!r}: experiment arm {arm.name!r} names "
                    f"{', '.join(repr(shorten(visible(r))) for r in missing)}, no enabled row of "
                    "the scope: the arm's calls go to the other rows"
                )
                field = f"experiment.arms.{arm.name}.rows"
                findings.append(
                    Finding(
                        "invalid_experiment",
                        "",
                        None,
                        name,
                        field,
                        problem,
                        fix,
                        SEVERITY["invalid_experiment"],
                    )
                )
    return findings


def _mixed_spaces(rows: list[StoredRow]) -> list[Finding]:
    from llmpool.repository.spaces import one_space

    scopes: dict[str, list[LLMConfig]] = defaultdict(list)
    for row in rows:
        if row.config is not None and row.config.kind == "embedding" and row.config.enabled:
            scopes[row.config.scope].append(row.config)
    fix = (
        "llmpool edit ID --space LABEL on the rows that serve the same vectors and llmpool "
        "disable ID on the others, or ask for one space (get_embeddings_with_fallback(space=...))"
    )
    findings: list[Finding] = []
    for name, configs in sorted(scopes.items()):
        try:
            one_space(configs, scope=name)
        except MixedSpacesError as error:
            problem = shorten(str(error), 1000)
            severity = SEVERITY["mixed_spaces"]
            findings.append(
                Finding("mixed_spaces", "", None, name, "space", problem, fix, severity)
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
    """Return every problem of the table's rows (of one scope, or all), by `KINDS` order, each
    with its severity."""
    from llmpool.providers import get_registry
    from llmpool.providers.allowlist import EnvAllowlist
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
        found = _references(row.config, allow, env) + _provider(row.config, registry)
        findings += found if row.config.enabled else [_lowered(f) for f in found]
        findings += _disabled_default(row.config)
    findings += _similar_names(rows)
    findings += _invalid_routing(store, scope)
    findings += _invalid_experiments(store, scope, rows)
    findings += _mixed_spaces(rows)
    order = {kind: index for index, kind in enumerate(KINDS)}
    return sorted(findings, key=lambda f: (order[f.kind], f.scope or "", f.name or "", f.llm_id))
