"""What a row may reference and where it may send requests (`EnvAllowlist`), and its
``auth_meta`` resolved within that (`resolve_auth`).

Whoever can edit a row must not read another secret of the service (``DATABASE_URL``, another
provider's key, a mounted token) nor send one to a server of their own.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from llmpool.contracts import log_fields
from llmpool.credentials.checks import find_secret, is_secret_key, shown_reference
from llmpool.credentials.endpoints import (
    Endpoint,
    has_userinfo,
    host_of,
    literal_endpoints,
    parse_endpoint,
)
from llmpool.credentials.redaction import remember
from llmpool.errors import EnvNotAllowedError, LLMPoolError, MissingSecretError
from llmpool.providers import get_registry
from llmpool.providers.declarations import declared_env

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry

logger = logging.getLogger(__name__)

#: Never allowed, whatever the configuration or a provider says.
NEVER_ALLOWED_ENV = ("DATABASE_URL", "LLMPOOL_*")

#: llmpool's own secret directories; others only through ``LLMPOOL_SECRET_DIRS``.
DEFAULT_SECRET_DIRS = ("/run/secrets/llmpool", "/var/run/secrets/llmpool")

Kind = Literal["secret", "plain"]


def _matches(name: object, patterns: Iterable[str]) -> bool:
    return isinstance(name, str) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _parse_names(names: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Return the names, and those marked ``NAME:plain``."""
    bare: set[str] = set()
    plain: set[str] = set()
    for item in names:
        name, sep, mark = item.strip().partition(":")
        if sep and mark.lower() not in ("plain", "secret"):
            msg = (
                f"allowed variable {shown_reference(name)} has an unknown mark; "
                "write NAME or NAME:plain"
            )
            raise ValueError(msg)
        if name:
            bare.add(name)
            if mark.lower() == "plain":
                plain.add(name)
    return frozenset(bare), frozenset(plain)


@dataclass(frozen=True)
class EnvAllowlist:
    """Which environment variables, secret directories and endpoints a row may use.

    A row may reference its provider's declared variables and ``names`` (``PREFIX_*`` too),
    never ``DATABASE_URL`` or ``LLMPOOL_*``; values are secrets unless declared plain or in
    ``plain``. Without ``endpoints``, a row writing its own endpoint may use only its
    provider's own credentials. As a store validator it refuses a write.

    Example:
        >>> allow = EnvAllowlist.from_env({}).extend("MYCO_LLM_KEY", "MYCO_BASE_URL:plain")
        >>> allow.allows("MYCO_LLM_KEY"), allow.allows("DATABASE_URL")
        (True, False)
        >>> allow.kind("MYCO_BASE_URL"), allow.kind("OPENAI_API_KEY", provider="openai")
        ('plain', 'secret')
        >>> allow.allows("AWS_SECRET_ACCESS_KEY", provider="openai")
        False
    """

    names: frozenset[str] = frozenset()
    secret_dirs: tuple[str, ...] = DEFAULT_SECRET_DIRS
    endpoints: tuple[str, ...] = ()
    plain: frozenset[str] = frozenset()
    registry: ProviderRegistry | None = field(default=None, repr=False, compare=False)
    _allowed: tuple[Endpoint, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        names, marked = _parse_names(self.names)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "plain", _parse_names(self.plain)[0] | marked)
        allowed = []
        for entry in self.endpoints:
            parsed = parse_endpoint(entry)
            if parsed is None:
                logger.warning(
                    "allowed endpoint ignored: not a plain URL",
                    extra=log_fields("endpoint_ignored", endpoint_host=host_of(entry)),
                )
            else:
                allowed.append(parsed)
        object.__setattr__(self, "_allowed", tuple(allowed))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnvAllowlist:
        """Return the allowlist of ``LLMPOOL_ALLOWED_ENV``, ``LLMPOOL_SECRET_DIRS`` (added to
        `DEFAULT_SECRET_DIRS`) and ``LLMPOOL_ALLOWED_ENDPOINTS`` (``os.environ`` by default).

        Example:
            >>> EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY"}).allows("MYCO_KEY")
            True
        """
        env = os.environ if environ is None else environ
        dirs = env.get("LLMPOOL_SECRET_DIRS", "").split(os.pathsep)
        return cls(
            names=frozenset(env.get("LLMPOOL_ALLOWED_ENV", "").replace(",", " ").split()),
            secret_dirs=DEFAULT_SECRET_DIRS + tuple(item for item in dirs if item),
            endpoints=tuple(env.get("LLMPOOL_ALLOWED_ENDPOINTS", "").replace(",", " ").split()),
        )

    def extend(
        self,
        *names: str,
        plain: Iterable[str] = (),
        secret_dirs: Iterable[str] = (),
        endpoints: Iterable[str] = (),
    ) -> EnvAllowlist:
        """Return a copy that also allows ``names`` (``NAME:plain``: a plain setting), ``plain``,
        ``secret_dirs`` and ``endpoints``.

        Example:
            >>> EnvAllowlist().extend("TEAM_*").allows("TEAM_KEY")
            True
        """
        return replace(
            self,
            names=self.names | {*names, *plain},
            secret_dirs=self.secret_dirs + tuple(secret_dirs),
            endpoints=self.endpoints + tuple(endpoints),
            plain=self.plain | set(plain),
        )

    def _provider(self, provider: object) -> object:
        # The provider object a name stands for; None when it has none usable.
        if not isinstance(provider, str):
            return provider
        try:
            return (self.registry if self.registry is not None else get_registry()).get(provider)
        except LLMPoolError:  # unknown or broken: it declares nothing
            return None

    def _kind(self, name: str, declared: tuple[frozenset[str], frozenset[str]]) -> Kind | None:
        secret_env, plain_env = declared
        if _matches(name, NEVER_ALLOWED_ENV):
            return None
        if name in plain_env:
            return "plain"
        if name in secret_env:
            return "secret"
        if _matches(name, self.names):
            return "plain" if _matches(name, self.plain) else "secret"
        return None

    def kind(self, name: str, provider: object = None) -> Kind | None:
        """Return how a row of ``provider`` may use variable ``name`` (``None``: it may not)."""
        return self._kind(name, declared_env(self._provider(provider)))

    def allows(self, name: str, provider: object = None) -> bool:
        """Return whether a row of ``provider`` (a name or object) may reference ``name``."""
        return self.kind(name, provider) is not None

    def allows_file(self, path: str) -> bool:
        """Return whether a row may reference the secret file ``path``."""
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(os.path.realpath(d)) for d in self.secret_dirs)

    def allows_endpoint(self, url: str) -> bool:
        """Return whether a row may send requests to ``url`` (no user info, within `endpoints`)."""
        if has_userinfo(url):
            return False
        parsed = parse_endpoint(url)
        return not self.endpoints or (
            parsed is not None and any(parsed.within(allowed) for allowed in self._allowed)
        )

    def check(self, config: LLMConfig, provider: object = None) -> dict[str, Kind]:
        """Refuse a row that reaches outside the allowlist; return each reference's kind."""
        provider = self._provider(config.provider if provider is None else provider)
        declared = declared_env(provider)
        kinds: dict[str, Kind] = {}
        foreign: tuple[str, str] | None = None  # the first credential not the provider's own
        for key, value in config.auth_meta.items():
            where = f"auth_meta.{key}"
            if key.endswith("_env"):
                kind = self._kind(value, declared) if isinstance(value, str) else None
                if kind is None:
                    remedy = (
                        "it holds llmpool's own settings and is never allowed, "
                        "LLMPOOL_ALLOWED_ENV cannot allow it; reference the variable that "
                        "holds the provider's key"
                        if _matches(value, NEVER_ALLOWED_ENV)
                        else "allow it in code (EnvAllowlist.extend) or with LLMPOOL_ALLOWED_ENV"
                    )
                    raise _refused(
                        config,
                        where,
                        f"references environment variable {shown_reference(value)}, which is "
                        f"not on the allowlist for provider {config.provider!r}; {remedy}",
                    )
                kinds[key] = kind
                if kind == "secret" and value not in declared[0] and foreign is None:
                    foreign = (where, f"variable {shown_reference(value)}")
            elif key.endswith("_file"):
                if not isinstance(value, str) or not self.allows_file(value):
                    dirs = ", ".join(self.secret_dirs)
                    raise _refused(
                        config,
                        where,
                        f"points outside the secret directories ({dirs}); add its directory "
                        "to LLMPOOL_SECRET_DIRS",
                    )
                kinds[key] = "secret"
                foreign = foreign or (where, "a secret file")
        endpoints = literal_endpoints(config, provider)
        for where, url in endpoints:
            if not self.allows_endpoint(url):
                reason = (
                    "which has user info before its host (user@host): write it without"
                    if has_userinfo(url)
                    else f"which is outside the allowed endpoints ({', '.join(self.endpoints)}); "
                    "extend LLMPOOL_ALLOWED_ENDPOINTS or reference a variable instead"
                )
                raise _refused(config, where, f"points at host {host_of(url)}, {reason}")
        if endpoints and foreign is not None and not self.endpoints:
            # Without allowed endpoints, an operator's key or a secret file could go anywhere.
            where, url = endpoints[0]
            raise _refused(
                config,
                where,
                f"sends requests to host {host_of(url)} with {foreign[0]} ({foreign[1]}), which "
                f"is not provider {config.provider!r}'s own credential; set "
                "LLMPOOL_ALLOWED_ENDPOINTS to the endpoints rows may use, or reference the "
                "endpoint from a variable",
            )
        return kinds

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row that uses a variable, file or endpoint outside the allowlist."""
        self.check(config)


def _refused(config: LLMConfig, where: str, problem: str) -> EnvNotAllowedError:
    msg = f"{config.describe()}: {where} {problem}"
    return EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=where)


def _missing(
    config: LLMConfig, what: str, key: str, problem: str, variable: str
) -> MissingSecretError:
    msg = f"{config.describe()}: {what} (auth_meta.{key}) {problem}"
    return MissingSecretError(msg, variable=variable, llm_name=config.name, llm_id=config.id)


def _read_file(config: LLMConfig, key: str, path: str) -> str:
    """Return a secret file's content, stripped; its path is shown only if it reads as one."""
    shown = path if os.path.isabs(path) and find_secret(path) is None else None
    shown = shown or "(a path that is not shown)"
    try:
        # The path that was checked, links resolved.
        value = Path(os.path.realpath(path)).read_text("utf-8").strip()
    except OSError as error:
        problem = f"cannot be read ({error.strerror or type(error).__name__})"
    else:
        if value:
            return value
        problem = "is empty"
    raise _missing(config, f"secret file {shown}", key, problem, shown)


def resolve_auth(
    config: LLMConfig,
    *,
    allowlist: EnvAllowlist | None = None,
    environ: Mapping[str, str] | None = None,
    provider: object = None,
) -> dict[str, Any]:
    """Resolve a row's ``auth_meta`` into client arguments, within ``allowlist``.

    ``*_env`` names a variable of ``environ`` (``os.environ`` by default), ``*_file`` a secret
    file; the key drops the suffix. Secrets come back as `SecretStr`, remembered for redaction.

    Raises:
        EnvNotAllowedError: A reference or an endpoint is outside the allowlist.
        MissingSecretError: A variable is unset or empty, or a file unreadable or empty.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="GPT-4", provider="openai", model_name="gpt-4",
        ...                 auth_meta={"api_key_env": "OPENAI_API_KEY"})
        >>> resolve_auth(row, environ={"OPENAI_API_KEY": "sk-test"})
        {'api_key': SecretStr('**********')}
    """
    env = os.environ if environ is None else environ
    allow = allowlist if allowlist is not None else EnvAllowlist.from_env(env)
    kinds = allow.check(config, provider)
    resolved: dict[str, Any] = {}
    for key, reference in config.auth_meta.items():
        name = key.rsplit("_", 1)[0]  # api_key_env -> api_key
        if key.endswith("_env"):
            value = env.get(reference)
            if not value:
                shown = shown_reference(reference)
                raise _missing(config, f"environment variable {shown}", key, "is not set", shown)
        elif key.endswith("_file"):
            value = _read_file(config, key, reference)
        else:
            resolved[key] = reference
            continue
        if kinds.get(key) == "secret" or is_secret_key(name):
            remember(value)
            resolved[name] = SecretStr(value)
        else:
            resolved[name] = value
    return resolved
