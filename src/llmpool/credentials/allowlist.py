"""Resolve a row's ``auth_meta`` references into values, within an allowlist.

A key ending in ``_env`` names an environment variable and a key ending in ``_file`` names a
secret file (Docker and Kubernetes secrets); the resolved key drops the suffix
(``api_key_env`` -> ``api_key``).

Why an allowlist: whoever can edit a row chooses a model, and must not be able to read any other
secret of the service (``DATABASE_URL``, another provider's key, a mounted service-account
token) or send one to a server of their own. So:

- A row may reference only the variables its provider declares (`Provider` ``secret_env`` and
  ``plain_env``: ``OPENAI_*`` for openai rows, ``AWS_*`` for bedrock rows...) and those the
  operator allows, in code (`EnvAllowlist.extend`) or with ``LLMPOOL_ALLOWED_ENV``, never through
  the database. ``DATABASE_URL`` and ``LLMPOOL_*`` are never allowed.
- A value read from a variable is a secret (a `SecretStr`, remembered by
  `llmpool.credentials.redaction`) unless the variable is a declared plain setting (a base
  URL, a region, an API version); an operator marks one of theirs plain as ``NAME:plain``.
  A provider passes a secret only to a client parameter typed as secret.
- ``_file`` references may only point inside llmpool's own secret directories
  (``/run/secrets/llmpool``, ``/var/run/secrets/llmpool``) or those in ``LLMPOOL_SECRET_DIRS``.
- Every endpoint written into a row (``base_url``, ``azure_openai_api_base``, ``openai_proxy``, a
  URL nested in ``client_kwargs``...) is checked: never with user info (``user@host``), and,
  when ``LLMPOOL_ALLOWED_ENDPOINTS`` is set, within one of its URLs (same scheme, host and port,
  and a path under the allowed one). When it is not set, a row that writes an endpoint may
  reference only its provider's own credentials. Endpoints read from referenced variables are
  the operator's and not checked.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llmpool.credentials.checks import (
    shown_reference,
)
from llmpool.credentials.endpoints import (
    Endpoint,
    has_userinfo,
    host_of,
    literal_endpoints,
    parse_endpoint,
)
from llmpool.errors import EnvNotAllowedError, LLMPoolError
from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry

__all__ = [
    "DEFAULT_ALLOWED_ENV",  # noqa: F822 - read from the providers on first use (__getattr__)
    "DEFAULT_SECRET_DIRS",
    "NEVER_ALLOWED_ENV",
    "EnvAllowlist",
]

logger = logging.getLogger(__name__)

#: Never allowed, whatever the configuration or a provider says.
NEVER_ALLOWED_ENV = ("DATABASE_URL", "LLMPOOL_*")


def _never_allowed(name: object) -> bool:
    return isinstance(name, str) and any(
        fnmatch.fnmatchcase(name, banned) for banned in NEVER_ALLOWED_ENV
    )


#: llmpool's own secret directories; others only through ``LLMPOOL_SECRET_DIRS``.
DEFAULT_SECRET_DIRS = ("/run/secrets/llmpool", "/var/run/secrets/llmpool")

_MARKS = ("plain", "secret")

Kind = Literal["secret", "plain"]


def _split(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def __getattr__(name: str) -> frozenset[str]:
    if name == "DEFAULT_ALLOWED_ENV":
        return _builtin_env()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _builtin_env() -> frozenset[str]:
    """The variables the built-in providers declare, together (``DEFAULT_ALLOWED_ENV``).

    Each is admitted only to rows of the provider that declares it: an openai row may not
    reference ``AWS_SECRET_ACCESS_KEY``. Read from the providers, so a provider's variables are
    declared in one place.
    """
    from llmpool.providers import declared_env
    from llmpool.providers.builtin import BUILTINS

    names: set[str] = set()
    for provider in BUILTINS:
        secret, plain = declared_env(provider)
        names |= secret | plain
    return frozenset(names)


def _parse_names(names: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    bare: set[str] = set()
    plain: set[str] = set()
    for item in names:
        name, sep, mark = item.strip().partition(":")
        if sep and mark.lower() not in _MARKS:
            msg = (
                f"allowed variable {shown_reference(name)} has an unknown mark; "
                "write NAME or NAME:plain"
            )
            raise ValueError(msg)
        if not name:
            continue
        bare.add(name)
        if mark.lower() == "plain":
            plain.add(name)
    return frozenset(bare), frozenset(plain)


@dataclass(frozen=True)
class EnvAllowlist:
    """Which environment variables, secret directories and endpoints a row may use.

    A row may reference its provider's declared variables (see `llmpool.providers.Provider`)
    and ``names``. A value read from a variable is a secret unless the provider declares it a
    plain setting or it is in ``plain``. Callable as a store validator:
    ``SQLStore(url, validators=[EnvAllowlist.from_env()])`` refuses a write that uses anything
    outside it (`llmpool.repository.sql.store.SQLStore` does so by default).

    Attributes:
        names: Variable names (``PREFIX_*`` patterns too) the operator allows to rows of any
            provider; ``NAME:plain`` marks a plain setting.
        secret_dirs: Directories that ``*_file`` references may point inside.
        endpoints: URLs a row's literal endpoints must be within; empty: any (but a row that
            writes one may then reference only its provider's own credentials).
        plain: Names (or patterns) among ``names`` whose values are plain settings, not secrets.
        registry: Where a row's provider is looked up; the process-wide registry by default.

    Example:
        >>> allow = EnvAllowlist.from_env({}).extend("MYCO_LLM_KEY", "MYCO_BASE_URL:plain")
        >>> allow.allows("MYCO_LLM_KEY"), allow.allows("DATABASE_URL")
        (True, False)
        >>> allow.kind("MYCO_BASE_URL"), allow.kind("OPENAI_API_KEY", provider="openai")
        ('plain', 'secret')
    """

    names: frozenset[str] = frozenset()
    secret_dirs: tuple[str, ...] = DEFAULT_SECRET_DIRS
    endpoints: tuple[str, ...] = ()
    plain: frozenset[str] = frozenset()
    registry: ProviderRegistry | None = field(default=None, repr=False, compare=False)
    _patterns: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _plain_patterns: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _allowed: tuple[Endpoint, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        names, marked = _parse_names(self.names)
        plain = _parse_names(self.plain)[0] | marked
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "plain", plain)
        wild = ("*", "?", "[")
        object.__setattr__(self, "_patterns", tuple(n for n in names if any(w in n for w in wild)))
        object.__setattr__(
            self, "_plain_patterns", tuple(n for n in plain if any(w in n for w in wild))
        )
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
        """Return the allowlist the environment configures.

        ``LLMPOOL_ALLOWED_ENV`` (names or ``PREFIX_*`` patterns, comma- or space-separated;
        ``NAME:plain`` for a plain setting), ``LLMPOOL_SECRET_DIRS`` (``os.pathsep``-separated,
        added to `DEFAULT_SECRET_DIRS`) and ``LLMPOOL_ALLOWED_ENDPOINTS`` (URLs, comma- or
        space-separated).

        Args:
            environ: The environment to read; ``os.environ`` by default.

        Example:
            >>> EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY"}).allows("MYCO_KEY")
            True
        """
        env = os.environ if environ is None else environ
        dirs = DEFAULT_SECRET_DIRS + tuple(
            item for item in env.get("LLMPOOL_SECRET_DIRS", "").split(os.pathsep) if item
        )
        return cls(
            names=frozenset(_split(env.get("LLMPOOL_ALLOWED_ENV", ""))),
            secret_dirs=dirs,
            endpoints=tuple(_split(env.get("LLMPOOL_ALLOWED_ENDPOINTS", ""))),
        )

    def extend(
        self,
        *names: str,
        plain: Iterable[str] = (),
        secret_dirs: Iterable[str] = (),
        endpoints: Iterable[str] = (),
    ) -> EnvAllowlist:
        """Return a copy that also allows ``names`` (and ``secret_dirs``, ``endpoints``).

        Args:
            *names: Variable names or patterns; ``NAME:plain`` marks a plain setting.
            plain: More names whose values are plain settings.
            secret_dirs: More directories for ``*_file`` references.
            endpoints: More allowed endpoint URLs.

        Example:
            >>> EnvAllowlist().extend("TEAM_*").allows("TEAM_KEY")
            True
        """
        extra, marked = _parse_names((*names, *(f"{name}:plain" for name in plain)))
        return EnvAllowlist(
            names=self.names | extra,
            secret_dirs=self.secret_dirs + tuple(secret_dirs),
            endpoints=self.endpoints + tuple(endpoints),
            plain=self.plain | marked,
            registry=self.registry,
        )

    # -- variables ---------------------------------------------------------------------------

    def _lookup(self, name: str) -> object | None:
        from llmpool.providers import get_registry

        registry = self.registry if self.registry is not None else get_registry()
        try:
            return registry.get(name)
        except LLMPoolError:  # unknown or broken: it declares nothing
            return None

    def provider_of(self, config: LLMConfig) -> object | None:
        """Return the row's provider from `registry`, or ``None`` when it has none usable."""
        return self._lookup(config.provider)

    def _declared(self, provider: object) -> tuple[frozenset[str], frozenset[str]]:
        from llmpool.providers import declared_env

        if isinstance(provider, str):
            provider = self._lookup(provider)
        return declared_env(provider)

    @staticmethod
    def _matches(name: str, names: frozenset[str], patterns: tuple[str, ...]) -> bool:
        return name in names or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    def _kind(self, name: str, declared: tuple[frozenset[str], frozenset[str]]) -> Kind | None:
        if any(fnmatch.fnmatchcase(name, banned) for banned in NEVER_ALLOWED_ENV):
            return None
        secret_env, plain_env = declared
        if name in plain_env:
            return "plain"
        if name in secret_env:
            return "secret"
        if self._matches(name, self.names, self._patterns):
            plain = self._matches(name, self.plain, self._plain_patterns)
            return "plain" if plain else "secret"
        return None

    def kind(self, name: str, provider: object = None) -> Kind | None:
        """Return how a row of ``provider`` may use variable ``name``: ``"secret"``,
        ``"plain"``, or ``None`` when it may not reference it at all.

        Args:
            name: The variable.
            provider: A provider name or object; ``None``: only what the operator allows.

        Example:
            >>> allow = EnvAllowlist()
            >>> allow.kind("OPENAI_API_BASE", "openai"), allow.kind("AWS_SECRET_ACCESS_KEY",
            ...     "openai")
            ('plain', None)
        """
        return self._kind(name, self._declared(provider))

    def allows(self, name: str, provider: object = None) -> bool:
        """Return whether a row of ``provider`` may reference the environment variable ``name``.

        Args:
            name: The variable.
            provider: A provider name or object; ``None``: only what the operator allows.

        Example:
            >>> EnvAllowlist().allows("AWS_SECRET_ACCESS_KEY", provider="bedrock")
            True
            >>> EnvAllowlist().allows("AWS_SECRET_ACCESS_KEY", provider="openai")
            False
        """
        return self.kind(name, provider) is not None

    def allows_file(self, path: str) -> bool:
        """Return whether a row may reference the secret file ``path``."""
        real = Path(os.path.realpath(path))
        return any(
            real.is_relative_to(os.path.realpath(directory)) for directory in self.secret_dirs
        )

    # -- endpoints ---------------------------------------------------------------------------

    def allows_endpoint(self, url: str) -> bool:
        """Return whether a row may send requests to ``url``.

        Never with user info (``user@host``). When endpoints are set, ``url`` must have the
        scheme, host and port of one of them (host case and a trailing dot ignored, default
        ports made explicit) and a path under its path, on segment boundaries. Without them,
        any other URL passes.

        Example:
            >>> allow = EnvAllowlist(endpoints=("https://api.openai.com/v1",))
            >>> [allow.allows_endpoint(url) for url in ("https://API.openai.com:443/v1/chat",
            ...     "https://api.openai.com.evil.example/v1", "https://api.openai.com/v1evil")]
            [True, False, False]
        """
        if has_userinfo(url):
            return False
        if not self.endpoints:
            return True
        parsed = parse_endpoint(url)
        return parsed is not None and any(parsed.within(allowed) for allowed in self._allowed)

    # -- the check ---------------------------------------------------------------------------

    def check(self, config: LLMConfig, provider: object = None) -> dict[str, Kind]:
        """Refuse a row that uses a variable, file or endpoint outside the allowlist.

        Args:
            config: The row.
            provider: Its provider object; looked up in `registry` when ``None``.

        Returns:
            Each ``*_env`` / ``*_file`` key of ``auth_meta`` -> whether its value is a secret
            or a plain setting.

        Raises:
            EnvNotAllowedError: Naming the row, the field and (when it is a conventional name)
                the variable; never a value.
        """
        if provider is None:
            provider = self.provider_of(config)
        kinds, foreign = self._check_references(config, self._declared(provider))
        self._check_endpoints(config, literal_endpoints(config, provider), foreign)
        return kinds

    def _check_references(
        self, config: LLMConfig, declared: tuple[frozenset[str], frozenset[str]]
    ) -> tuple[dict[str, Kind], tuple[str, str] | None]:
        """Return each reference's kind and the first credential not the provider's own."""
        kinds: dict[str, Kind] = {}
        foreign: tuple[str, str] | None = None
        for key, value in config.auth_meta.items():
            where = f"auth_meta.{key}"
            if key.endswith("_env"):
                kind = self._kind(value, declared) if isinstance(value, str) else None
                if kind is None:
                    remedy = (
                        "allow it in code (EnvAllowlist.extend) or with LLMPOOL_ALLOWED_ENV"
                        if not _never_allowed(value)
                        else "it holds llmpool's own settings and is never allowed, "
                        "LLMPOOL_ALLOWED_ENV cannot allow it; reference the variable that "
                        "holds the provider's key"
                    )
                    msg = (
                        f"{config.describe()}: {where} references environment variable "
                        f"{shown_reference(value)}, which is not on the allowlist for provider "
                        f"{config.provider!r}; {remedy}"
                    )
                    raise EnvNotAllowedError(
                        msg, llm_name=config.name, llm_id=config.id, field=where
                    )
                kinds[key] = kind
                if kind == "secret" and value not in declared[0] and foreign is None:
                    foreign = (where, f"variable {shown_reference(value)}")
            elif key.endswith("_file"):
                if not isinstance(value, str) or not self.allows_file(value):
                    msg = (
                        f"{config.describe()}: {where} points outside the secret "
                        f"directories ({', '.join(self.secret_dirs)}); add its directory to "
                        "LLMPOOL_SECRET_DIRS"
                    )
                    raise EnvNotAllowedError(
                        msg, llm_name=config.name, llm_id=config.id, field=where
                    )
                kinds[key] = "secret"
                foreign = foreign or (where, "a secret file")
        return kinds, foreign

    def _check_endpoints(
        self,
        config: LLMConfig,
        endpoints: list[tuple[str, str]],
        foreign: tuple[str, str] | None,
    ) -> None:
        for where, url in endpoints:
            if not self.allows_endpoint(url):
                reason = (
                    "which has user info before its host (user@host): write it without"
                    if has_userinfo(url)
                    else f"which is outside the allowed endpoints ({', '.join(self.endpoints)}); "
                    "extend LLMPOOL_ALLOWED_ENDPOINTS or reference a variable instead"
                )
                msg = f"{config.describe()}: {where} points at host {host_of(url)}, {reason}"
                raise EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=where)
        if endpoints and foreign is not None and not self.endpoints:
            # With no endpoints configured, a row's own endpoint may only get its provider's
            # own credentials: an operator's key or a secret file could go anywhere.
            where, url = endpoints[0]
            msg = (
                f"{config.describe()}: {where} sends requests to host {host_of(url)} with "
                f"{foreign[0]} ({foreign[1]}), which is not provider {config.provider!r}'s own "
                "credential; set LLMPOOL_ALLOWED_ENDPOINTS to the endpoints rows may use, or "
                "reference the endpoint from a variable"
            )
            raise EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=where)

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row that uses a variable, file or endpoint outside the allowlist.

        Raises:
            EnvNotAllowedError: Naming the row, the field and the variable.
        """
        self.check(config)
