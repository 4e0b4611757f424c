"""LiteLLM Router and proxy configs (``config.yaml``) as `llmpool.repository.declarative`
documents, for ``llmpool apply --from-litellm config.yaml``.

Each ``model_list`` entry (a deployment) becomes a row of the scope its ``model_name`` (the
model group) names; ``fallbacks`` copy the fallback groups' rows into the scope at lower
priority; ``router_settings.routing_strategy`` routes every scope. Credentials must be
``os.environ/NAME`` references: a literal one anywhere in ``model_list`` refuses the whole file
(`LiteralSecretError`, naming each entry and field, never the value). What has no llmpool
equivalent is returned as `Unmapped` items, a path and a reason (never a value), not dropped
in silence. Pure: no I/O. The README's "Switching from LiteLLM" has the mapping table.

Example:
    >>> config = {"model_list": [{"model_name": "gpt-4o", "litellm_params": {
    ...     "model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY", "rpm": 60}}]}
    >>> translation = from_litellm(config)
    >>> translation.document["llms"][0]["auth_meta"], translation.document["scopes"]
    ({'api_key_env': 'OPENAI_API_KEY'}, {'gpt-4o': {'routing': 'weighted'}})
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmpool.errors import InvalidConfigError, LiteralSecretError, shorten, visible

__all__ = ["PROVIDERS", "ROUTING", "SERVICES", "Translation", "Unmapped", "from_litellm"]

#: How LiteLLM marks a value read from the environment: ``os.environ/NAME``.
ENV_PREFIX = "os.environ/"

#: LiteLLM's provider prefixes (``azure/gpt-4o``) -> llmpool's built-in providers.
PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "hosted_vllm": "openai",
    "azure": "azure_openai",
    "anthropic": "anthropic",
    "bedrock": "bedrock",
    "vertex_ai": "vertexai",
    "vertex_ai_beta": "vertexai",
    "fireworks_ai": "fireworks",
    "ollama": "ollama",
    "ollama_chat": "ollama",
}

#: OpenAI-compatible services LiteLLM names, served by the ``openai`` provider: their endpoint
#: and the key variable LiteLLM reads for them (else the client would send OPENAI_API_KEY there).
SERVICES: Mapping[str, tuple[str, str]] = {
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together_ai": ("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "deepseek": ("https://api.deepseek.com", "DEEPSEEK_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"),
}

#: What LiteLLM reads for an Azure deployment that leaves these out (LangChain reads others).
_AZURE_ENV = {
    "api_key": "AZURE_API_KEY",
    "api_base": "AZURE_API_BASE",
    "api_version": "AZURE_API_VERSION",
}

#: ``router_settings.routing_strategy`` -> a scope's routing (absent: LiteLLM's simple-shuffle).
ROUTING: Mapping[str, str] = {
    "simple-shuffle": "weighted",
    "latency-based-routing": "latency",
    "least-busy": "least_busy",
}

#: litellm_params that carry a credential: taken only as ``os.environ/NAME`` references.
_CREDENTIALS = (
    "api_key",
    "azure_ad_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)

#: litellm_params that are client parameters (``config``), under the client's name.
_PARAMETERS = {
    **{name: name for name in ("temperature", "max_tokens", "top_p", "seed", "stop", "timeout")},
    **{name: name for name in ("frequency_penalty", "presence_penalty", "organization")},
    "api_version": "api_version",
    "aws_region_name": "region_name",
    "vertex_project": "project",
    "vertex_location": "location",
    "input_cost_per_token": "input_cost_per_token",  # prices llmpool reads itself
    "output_cost_per_token": "output_cost_per_token",
}

#: LiteLLM's ``budget_duration`` values that llmpool's budget periods (UTC) are.
_PERIODS = {"1d": "day", "24h": "day", "1mo": "month"}

#: The client parameter an ``api_base`` becomes, by llmpool provider (else ``base_url``).
_ENDPOINTS = {
    "azure_openai": "azure_endpoint",
    "bedrock": "endpoint_url",
    "vertexai": "api_endpoint",
}

#: Model names LiteLLM sends to OpenAI (or Anthropic) without a prefix.
_BARE_MODELS = (
    (re.compile(r"(gpt-|chatgpt-|o\d|text-embedding-|ft:gpt)"), "openai"),
    (re.compile(r"claude-"), "anthropic"),
)

#: Where llmpool puts a row without an ``order`` (its default priority).
DEFAULT_PRIORITY = 100

#: Settings that are mapped, or that llmpool always does (``enable_pre_call_checks``).
_HANDLED = {
    "router_settings": {"routing_strategy", "fallbacks", "default_fallbacks"}
    | {"enable_pre_call_checks"},
    "litellm_settings": {"fallbacks", "default_fallbacks"},
}

_RETRIES = (
    "llmpool's FallbackPolicy and breakers set retries, timeouts and cool-downs (see Fallback "
    "and resilience); a row's config.timeout sets its client's"
)
_REASONS = {
    **dict.fromkeys(("num_retries", "retry_policy", "allowed_fails", "cooldown_time"), _RETRIES),
    **dict.fromkeys(("timeout", "request_timeout", "stream_timeout", "max_retries"), _RETRIES),
    **dict.fromkeys(
        ("context_window_fallbacks", "content_policy_fallbacks"),
        "llmpool falls back on any provider error, not by kind of error; list the groups "
        "under fallbacks if they should serve every failure",
    ),
    "model_group_alias": "scopes have no aliases: call the scope by its name",
    "drop_params": "llmpool refuses a parameter a client does not take when the row is written",
    **dict.fromkeys(
        ("callbacks", "success_callback", "failure_callback"),
        "llmpool reports calls through its hooks and OpenTelemetry (see Observability)",
    ),
    **dict.fromkeys(
        ("redis_host", "redis_port", "redis_password", "redis_url", "cache_params"),
        "replicas share breakers and limits through llmpool's Redis option (see Running a fleet)",
    ),
    "general_settings": "a proxy server setting: llmpool is a library, with no proxy server",
    "environment_variables": "set these in the environment of the hosts that serve the models",
    "litellm_credential_name": "no shared credentials: reference each variable (os.environ/NAME)",
    "credential_list": "no shared credentials: reference each variable (os.environ/NAME)",
    "vertex_credentials": "point GOOGLE_APPLICATION_CREDENTIALS at the file on the hosts instead",
    **dict.fromkeys(
        ("max_budget", "budget_duration"),
        "llmpool's budget (config.max_spend) needs both, over 1d or 1mo (a UTC day or month)",
    ),
}


_NO_FIELD = "no llmpool row field; add it to the row's config if its client takes it"


@dataclass(frozen=True)
class Unmapped:
    """Something of a LiteLLM config llmpool has no place for: where (``path``) and why."""

    path: str
    reason: str

    def describe(self) -> str:
        """Return the item as one line: ``path: reason``."""
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Translation:
    """A LiteLLM config as an apply ``document``, with what could not be mapped."""

    document: dict[str, Any]
    unmapped: tuple[Unmapped, ...] = ()
    #: Where each row of the document came from: ``model_list[3] ('gpt-4')``, or its fallbacks.
    sources: tuple[str, ...] = ()

    def locate(self, message: str) -> str:
        """Return a plan's message about ``entry N`` of the document naming its source instead.

        Example:
            >>> Translation({}, sources=("model_list[4] ('g')",)).locate("entry 0: LLM 'm': ...")
            "model_list[4] ('g'): LLM 'm': ..."
        """
        found = re.match(r"entry (\d+)\b", message)
        if found is None or int(found[1]) >= len(self.sources):
            return message
        return self.sources[int(found[1])] + message[found.end() :]

    def render(self) -> str:
        """Return the unmapped items, one per line under a count (``""`` when none)."""
        if not self.unmapped:
            return ""
        lines = [f"not mapped ({len(self.unmapped)}):"]
        return "\n".join(lines + [f"  {item.describe()}" for item in self.unmapped])


@dataclass
class _Deployment:
    """One ``model_list`` entry as a row, with the id fallbacks may name it by."""

    where: str
    group: str
    row: dict[str, Any]
    ident: str | None
    weights: dict[str, int | None]


def from_litellm(config: Mapping[str, Any]) -> Translation:
    """Translate a LiteLLM proxy ``config.yaml`` (or Router arguments) into an apply document.

    Args:
        config: the parsed config: ``model_list``, ``router_settings``, ``litellm_settings``...

    Returns:
        The document (rows and scope routing) and what it leaves unmapped.

    Raises:
        LiteralSecretError: a deployment holds a literal credential (each one named, no value).
        InvalidConfigError: the config is malformed (the entry and field named).

    Example:
        >>> t = from_litellm({"model_list": [{"model_name": "*", "litellm_params": {
        ...     "model": "openai/*"}}], "general_settings": {"master_key": "sk-1234"}})
        >>> print(t.render())
        not mapped (2):
          model_list[0] ('*'): a wildcard: add an entry for each model it should serve
          general_settings.master_key: a proxy server setting: llmpool is a library, ...
    """
    entries = config.get("model_list") or []
    if not isinstance(entries, list):
        raise InvalidConfigError("model_list must be a list of deployments", field="model_list")
    _refuse_literal_credentials(entries)
    unmapped: list[Unmapped] = []
    settings = {name: _section(config, name) for name in ("router_settings", "litellm_settings")}
    strategy = settings["router_settings"].get("routing_strategy", "simple-shuffle")
    routing = ROUTING.get(strategy) if isinstance(strategy, str) else None
    if routing is None:
        reason = f"{_quoted(strategy)} has no llmpool strategy; the scopes keep theirs"
        unmapped.append(Unmapped("router_settings.routing_strategy", reason))
    deployments = [d for i, e in enumerate(entries) if (d := _deployment(i, e, unmapped))]
    groups: dict[str, list[_Deployment]] = {}
    for deployment in deployments:
        groups.setdefault(deployment.group, []).append(deployment)
    for members in groups.values():
        _weigh(members, weighted=routing == "weighted")
    rows = [d.row for d in deployments]
    _name_uniquely(rows)  # before the copies, which carry their source's name
    copies = _fallback_rows(groups, _fallbacks(settings), unmapped)
    rows += copies
    _name_uniquely(rows)
    sources = [d.where for d in deployments]
    sources += [f"the fallbacks of {_quoted(row['scope'])}" for row in copies]
    unmapped += _unmapped_settings(config)
    document: dict[str, Any] = {"llms": rows}
    if routing is not None and groups:
        document["scopes"] = {group: {"routing": routing} for group in groups}
    return Translation(document, tuple(unmapped), tuple(sources))


def _quoted(value: Any) -> str:
    return repr(shorten(visible(str(value))))


def _key(key: Any) -> str:
    return shorten(visible(str(key)))


def _where(index: int, group: Any = None) -> str:
    return f"model_list[{index}]" + (f" ({_quoted(group)})" if isinstance(group, str) else "")


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise InvalidConfigError(f"{name} must be an object of settings", field=name)
    return section


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def _refuse_literal_credentials(entries: list[Any]) -> None:
    found = [
        f"{_where(index, entry.get('model_name'))} litellm_params.{key}"
        for index, entry in enumerate(entries)
        if isinstance(entry, Mapping) and isinstance(entry.get("litellm_params"), Mapping)
        for key in _CREDENTIALS
        if entry["litellm_params"].get(key) not in (None, "")
        and not _is_reference(entry["litellm_params"][key])
    ]
    if found:
        msg = (
            f"{len(found)} credential(s) in model_list are literal values, which llmpool never "
            f"stores: {'; '.join(found)}. Write each as os.environ/NAME, NAME being the "
            "environment variable that holds it, and run again; nothing was imported"
        )
        raise LiteralSecretError(msg, field=found[0].rpartition(" ")[2])


def _integer(params: Mapping[str, Any], key: str, where: str) -> int | None:
    value = params.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    msg = f"{where}: {key} must be an integer"
    raise InvalidConfigError(msg, field=f"litellm_params.{key}")


def _provider(model: str) -> tuple[str, str, str] | None:
    """Return (LiteLLM's provider, llmpool's, the model name), or ``None`` if unknown."""
    prefix, slash, rest = model.partition("/")
    if slash and prefix in PROVIDERS:
        if prefix == "bedrock":  # the API LiteLLM calls, not part of the model id
            rest = re.sub(r"^(converse|invoke)/", "", rest)
        return prefix, PROVIDERS[prefix], rest
    if slash and prefix in SERVICES:
        return prefix, "openai", rest
    for pattern, provider in _BARE_MODELS:
        if not slash and pattern.match(model):
            return provider, provider, model
    return None


def _deployment(index: int, entry: Any, unmapped: list[Unmapped]) -> _Deployment | None:
    where = _where(index)
    if not isinstance(entry, Mapping):
        raise InvalidConfigError(f"{where} is not an object", field=where)
    group = entry.get("model_name")
    if not isinstance(group, str) or not group.strip():
        msg = f"{where} has no model_name (the model group it serves)"
        raise InvalidConfigError(msg, field=f"{where}.model_name")
    where = _where(index, group)
    params = entry.get("litellm_params")
    if not isinstance(params, Mapping) or not isinstance(params.get("model"), str):
        msg = f"{where} has no litellm_params.model"
        raise InvalidConfigError(msg, field=f"{where}.litellm_params.model")
    model: str = params["model"]
    info = entry.get("model_info") or {}
    info = info if isinstance(info, Mapping) else {}
    if "*" in group or "*" in model:
        unmapped.append(Unmapped(where, "a wildcard: add an entry for each model it should serve"))
        return None
    found = _provider(model)
    if found is None:
        reason = (
            f"no llmpool provider for model {_quoted(model)}: prefix it with one of "
            f"{', '.join(sorted({*PROVIDERS, *SERVICES}))}, or add its row by hand"
        )
        unmapped.append(Unmapped(where, reason))
        return None
    litellm_provider, provider, model_name = found
    mode = info.get("mode") or ("embedding" if "embed" in model_name.lower() else "chat")
    if mode not in ("chat", "embedding"):
        unmapped.append(Unmapped(where, f"mode {_quoted(mode)}: llmpool serves chat and embedding"))
        return None
    order = _integer(params, "order", where)
    row: dict[str, Any] = {
        "name": str(info.get("id") or model),
        "scope": group,
        "provider": provider,
        "model_name": model_name,
        "priority": DEFAULT_PRIORITY if order is None else order,
    }
    if mode == "embedding":
        row["kind"] = "embedding"
    for key in ("rpm", "tpm"):  # in litellm_params, or beside them (the older form)
        value = _integer(params, key, where) or _integer(entry, key, where)
        if value is not None:
            row[key] = value
    weights = {key: _integer(params, key, where) for key in ("weight", "rpm", "tpm")}
    auth_meta, client = _parameters(params, provider, litellm_provider)
    period = _PERIODS.get(str(params.get("budget_duration")))
    if params.get("max_budget") is not None and period is not None:
        client["max_spend"] = {"amount": params["max_budget"], "period": period}
    row |= {k: v for k, v in (("auth_meta", auth_meta), ("config", client)) if v}
    handled = {"model", "order", "rpm", "tpm", "weight", *_CREDENTIALS, *_PARAMETERS, "api_base"}
    handled |= {"max_budget", "budget_duration"} if "max_spend" in client else set()
    for key in params:
        if key not in handled:
            reason = _REASONS.get(str(key), _NO_FIELD)
            unmapped.append(Unmapped(f"{where} litellm_params.{_key(key)}", reason))
    for key in entry:
        if key not in ("model_name", "litellm_params", "model_info", "rpm", "tpm"):
            unmapped.append(Unmapped(f"{where} {_key(key)}", "not a deployment field llmpool maps"))
    fit = _fit(info, where)
    if fit and mode == "chat":
        row.setdefault("config", {})["model_info"] = fit
    for key in info:
        if key not in ("id", "mode", *_FIT_SIZES, *_FIT_FLAGS):
            path = f"{where} model_info.{_key(key)}"
            unmapped.append(Unmapped(path, "metadata llmpool keeps none of"))
    return _Deployment(where, group, row, str(info["id"]) if info.get("id") else None, weights)


#: LiteLLM's ``model_info`` sizes and capability flags, as llmpool's ``config.model_info``.
_FIT_SIZES = {"max_input_tokens": "context_window", "max_output_tokens": "max_output_tokens"}
_FIT_FLAGS = {
    "supports_function_calling": "tools",
    "supports_response_schema": "structured_output",
    "supports_vision": "vision",
    "supports_native_streaming": "streaming",
}


def _fit(info: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return what a deployment's ``model_info`` says its model can take: its sizes, and its
    capabilities when a flag says one is missing (a flag left out is no reason to skip it)."""
    fit: dict[str, Any] = {}
    for key, name in _FIT_SIZES.items():
        value = _integer(info, key, f"{where} model_info")
        if value is not None:
            fit[name] = value
    missing = {name for key, name in _FIT_FLAGS.items() if info.get(key) is False}
    if missing:
        fit["capabilities"] = sorted(set(_FIT_FLAGS.values()) - missing)
    return fit


def _parameters(
    params: Mapping[str, Any], provider: str, litellm_provider: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the row's ``auth_meta`` (references) and ``config`` (client parameters)."""
    names = {**_PARAMETERS, "api_base": _ENDPOINTS.get(provider, "base_url")}
    names |= {key: key for key in _CREDENTIALS}
    given = {key: value for key, value in params.items() if key in names and value is not None}
    if litellm_provider in SERVICES:
        endpoint, key_variable = SERVICES[litellm_provider]
        given = {"api_base": endpoint, "api_key": ENV_PREFIX + key_variable, **given}
    elif litellm_provider == "azure":
        given = {k: ENV_PREFIX + v for k, v in _AZURE_ENV.items()} | given
    auth_meta: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in given.items():
        if _is_reference(value):
            auth_meta[f"{names[key]}_env"] = value[len(ENV_PREFIX) :]
        elif value != "":
            client[names[key]] = value
    return auth_meta, client


def _weigh(members: list[_Deployment], *, weighted: bool) -> None:
    """Set each row's weight as LiteLLM's simple-shuffle draws: by ``weight``, else by ``rpm``,
    else by ``tpm`` (reduced by their common divisor), the first that any deployment sets."""
    for key in ("weight", "rpm", "tpm") if weighted else ("weight",):
        values = [m.weights[key] or 0 for m in members]
        if any(values):
            divisor = 1 if key == "weight" else math.gcd(*values)
            for member, value in zip(members, values, strict=True):
                member.row["weight"] = value // divisor
            return


def _fallbacks(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Return each group's fallback groups (key ``*``: of a group naming none), in order."""
    chains: dict[str, list[str]] = {}
    for name, section in settings.items():
        listed = section.get("fallbacks") or []
        items = [*listed] if isinstance(listed, list) else [listed]
        items.append({"*": section.get("default_fallbacks") or []})
        for item in items:
            if not isinstance(item, Mapping):
                msg = f'{name}.fallbacks must be a list like [{{"gpt-4": ["claude"]}}]'
                raise InvalidConfigError(msg, field=f"{name}.fallbacks")
            for group, targets in item.items():
                targets = [targets] if isinstance(targets, str) else targets
                if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                    msg = f"{name}.fallbacks of {_quoted(group)} must be a list of model names"
                    raise InvalidConfigError(msg, field=f"{name}.fallbacks")
                chain = chains.setdefault(str(group), [])
                chain += [target for target in targets if target not in chain]
    return chains


def _fallback_rows(
    groups: Mapping[str, list[_Deployment]],
    chains: Mapping[str, list[str]],
    unmapped: list[Unmapped],
) -> list[dict[str, Any]]:
    """Return, for each scope, its fallback groups' rows (or the one row a ``model_info.id``
    names) at lower priority: a thousand per step, more if an ``order`` reaches that."""
    by_id = {d.ident: d for members in groups.values() for d in members if d.ident}
    largest = max((d.row["priority"] for m in groups.values() for d in m), default=0)
    step = 1000
    while step <= largest:
        step *= 10
    rows: list[dict[str, Any]] = []
    for group in [g for g in chains if g not in groups and g != "*"]:
        unmapped.append(Unmapped(f"fallbacks of {_quoted(group)}", "no model_list entry serves it"))
    for scope in groups:
        targets = [t for t in chains.get(scope) or chains.get("*") or [] if t != scope]
        for level, target in enumerate(targets, 1):
            if target in groups:
                sources = [(f"fallback {target}: {d.row['name']}", d) for d in groups[target]]
            elif target in by_id:
                sources = [(f"fallback {target}", by_id[target])]
            else:
                reason = f"{_quoted(target)} is no model_name nor model_info.id of model_list"
                unmapped.append(Unmapped(f"fallbacks of {_quoted(scope)}", reason))
                continue
            for name, source in sources:
                priority = level * step + source.row["priority"]
                rows.append({**source.row, "name": name, "scope": scope, "priority": priority})
    return rows


def _name_uniquely(rows: list[dict[str, Any]]) -> None:
    """Give the second row of a scope with a name ``name #2``, the third ``name #3``..."""
    taken: set[tuple[str, str]] = set()
    for row in rows:
        name, count = row["name"], 1
        while (row["scope"], row["name"]) in taken:
            count += 1
            row["name"] = f"{name} #{count}"
        taken.add((row["scope"], row["name"]))


def _unmapped_settings(config: Mapping[str, Any]) -> list[Unmapped]:
    """Return every setting outside ``model_list`` that is not mapped, by its key alone."""
    items: list[Unmapped] = []
    for key in config:
        if key == "model_list":
            continue
        section = config[key]
        if str(key).endswith("_settings") and isinstance(section, Mapping) and section:
            for name in section:
                if name not in _HANDLED.get(key, ()):
                    reason = _REASONS.get(key) or _REASONS.get(str(name), "no llmpool equivalent")
                    items.append(Unmapped(f"{key}.{_key(name)}", reason))
        elif section:
            items.append(Unmapped(_key(key), _REASONS.get(str(key), "no llmpool equivalent")))
    return items
