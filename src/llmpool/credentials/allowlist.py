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
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import SecretStr

from llmpool.credentials.checks import (
    MAX_DEPTH,
    REFERENCE_SUFFIXES,
    find_secret,
    is_secret_key,
    shown_reference,
    url_userinfo,
)
from llmpool.credentials.redaction import remember
from llmpool.errors import EnvNotAllowedError, LLMPoolError, MissingSecretError

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry

__all__ = [
    "DEFAULT_ALLOWED_ENV",  # noqa: F822 - read from the providers on first use (__getattr__)
    "DEFAULT_PORTS",
    "DEFAULT_SECRET_DIRS",
    "ENDPOINT_KEYS",
    "NEVER_ALLOWED_ENV",
    "EnvAllowlist",
    "literal_endpoints",
    "resolve_auth",
]

logger = logging.getLogger(__name__)

#: Never allowed, whatever the configuration or a provider says.
NEVER_ALLOWED_ENV = ("DATABASE_URL", "LLMPOOL_*")

#: llmpool's own secret directories; others only through ``LLMPOOL_SECRET_DIRS``.
DEFAULT_SECRET_DIRS = ("/run/secrets/llmpool", "/var/run/secrets/llmpool")

#: Row keys (in ``config`` or plain ``auth_meta``) that say where requests, and keys, are sent.
#: Any key whose last word is ``url``, ``uri``, ``endpoint``, ``host`` or ``proxy`` counts too,
#: and so does any string that is an absolute URL.
ENDPOINT_KEYS = frozenset(
    {
        "base_url",
        "api_base",
        "openai_api_base",
        "azure_openai_api_base",
        "azure_endpoint",
        "endpoint",
        "endpoint_url",
        "api_endpoint",
        "anthropic_api_url",
        "fireworks_api_base",
        "host",
        "openai_proxy",
        "anthropic_proxy",
        "proxy",
        "proxies",
    }
)

#: Ports a URL without one uses.
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_ENDPOINT_WORDS = frozenset(
    {"url", "urls", "uri", "endpoint", "endpoints", "host", "hosts", "hostname", "proxy", "proxies"}
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_ABSOLUTE_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_MARKS = ("plain", "secret")

Kind = Literal["secret", "plain"]


def _split(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


class _Endpoint(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str

    def within(self, allowed: _Endpoint) -> bool:
        if (self.scheme, self.host, self.port) != (allowed.scheme, allowed.host, allowed.port):
            return False
        # On segment boundaries: "/v1" admits "/v1/chat", never "/v1evil".
        return allowed.path in ("/", self.path) or self.path.startswith(allowed.path + "/")


def _parse_endpoint(value: str) -> _Endpoint | None:
    """Return a URL's scheme, host, port and path, normalised; ``None`` when it is not plain.

    A URL without a scheme is read as ``https://``. Anything a client could read differently
    from this parser (user info, a backslash, white space, an encoded separator in the path)
    is not plain.
    """
    text = value.strip()
    if not text or any(ch.isspace() or ch == "\\" or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return None
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if "@" in parts.netloc:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    port = port if port is not None else DEFAULT_PORTS.get(scheme)
    if not host or port is None or _ENCODED_SEPARATOR.search(parts.path):
        return None
    path = posixpath.normpath("/" + parts.path.lstrip("/")).rstrip("/") or "/"
    return _Endpoint(scheme, host, port, path)


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


def _names_endpoint(key: str, declared: frozenset[str] = frozenset()) -> bool:
    lowered = key.lower()
    if lowered in declared:  # the provider knows its own keys
        return True
    if lowered in ENDPOINT_KEYS or lowered.endswith("api_base"):
        return True
    words = [word.lower() for word in _WORD.findall(key)]
    return bool(words) and words[-1] in _ENDPOINT_WORDS


def _walk_endpoints(
    key: str,
    value: Any,
    where: str,
    found: list[tuple[str, str]],
    depth: int,
    headers: bool,
    declared: frozenset[str] = frozenset(),
) -> None:
    if depth > MAX_DEPTH:  # the row's own validation refuses this depth
        return
    if isinstance(value, str):
        if not value.strip():
            return  # an empty endpoint is the client's default
        # A header value never decides where a request goes ("HTTP-Referer": "https://..."),
        # unless the header names a host.
        named = _names_endpoint(key, declared)
        if named or (not headers and _ABSOLUTE_URL.match(value)):
            found.append((where, value))
    elif isinstance(value, Mapping):
        inner = [word.lower() for word in _WORD.findall(key)][-1:] == ["headers"]
        for child, item in value.items():
            _walk_endpoints(str(child), item, f"{where}.{child}", found, depth + 1, inner, declared)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _walk_endpoints(key, item, f"{where}[{index}]", found, depth + 1, headers, declared)


def literal_endpoints(config: LLMConfig, provider: object = None) -> list[tuple[str, str]]:
    """Return every endpoint written into a row, as ``(field, value)`` pairs.

    An endpoint is any string in ``config`` or plain ``auth_meta`` that is an absolute URL, or
    that sits under a key naming an endpoint (``base_url``, ``*_url``, ``*endpoint``, ``host``,
    ``*proxy``, ``*api_base``) or under a key its provider declares (``endpoint_keys``), also
    after the provider renames it (Azure's ``azure_openai_api_base`` becomes
    ``azure_endpoint``). Header values are not endpoints.
    References (``*_env``, ``*_file``) are the operator's and not listed.

    Args:
        config: The row.
        provider: Its provider, whose ``endpoint_keys`` and ``auth_names`` renames apply;
            optional.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="x", provider="openai", model_name="m",
        ...                 config={"client_kwargs": {"proxy": "http://proxy.example:3128"}})
        >>> literal_endpoints(row)
        [('config.client_kwargs.proxy', 'http://proxy.example:3128')]
    """
    from llmpool.providers.declarations import declared_endpoint_keys

    declared = declared_endpoint_keys(provider)
    renames = getattr(provider, "auth_names", None)
    renames = renames if isinstance(renames, Mapping) else {}
    found: list[tuple[str, str]] = []
    for key, value in config.config.items():
        _walk_endpoints(str(key), value, f"config.{key}", found, 1, False, declared)
    for key, value in config.auth_meta.items():
        if key.endswith(REFERENCE_SUFFIXES) or not isinstance(value, str) or not value.strip():
            continue
        target = str(renames.get(key, key))
        named = _names_endpoint(key, declared) or _names_endpoint(target, declared)
        if named or _ABSOLUTE_URL.match(value):
            found.append((f"auth_meta.{key}", value))
    return found


def _has_userinfo(url: str) -> bool:
    if "://" in url:
        return url_userinfo(url)
    return "@" in re.split(r"[/?#]", url.strip(), maxsplit=1)[0]  # "user@host" written bare


def _host(value: str) -> str:
    # The host alone: a URL may carry more than its author meant to show.
    try:
        text = value.strip()
        return repr(urlsplit(text if "://" in text else "https://" + text).hostname)
    except ValueError:
        return "(unreadable)"


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
    _allowed: tuple[_Endpoint, ...] = field(default=(), repr=False, compare=False)

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
            parsed = _parse_endpoint(entry)
            if parsed is None:
                logger.warning(
                    "allowed endpoint ignored: not a plain URL",
                    extra={"endpoint_host": _host(entry)},
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
        if _has_userinfo(url):
            return False
        if not self.endpoints:
            return True
        parsed = _parse_endpoint(url)
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
                    msg = (
                        f"{config.describe()}: {where} references environment variable "
                        f"{shown_reference(value)}, which is not on the allowlist for provider "
                        f"{config.provider!r}; allow it in code (EnvAllowlist.extend) or with "
                        "LLMPOOL_ALLOWED_ENV"
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
                    if _has_userinfo(url)
                    else f"which is outside the allowed endpoints ({', '.join(self.endpoints)}); "
                    "extend LLMPOOL_ALLOWED_ENDPOINTS or reference a variable instead"
                )
                msg = f"{config.describe()}: {where} points at host {_host(url)}, {reason}"
                raise EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=where)
        if endpoints and foreign is not None and not self.endpoints:
            # With no endpoints configured, a row's own endpoint may only get its provider's
            # own credentials: an operator's key or a secret file could go anywhere.
            where, url = endpoints[0]
            msg = (
                f"{config.describe()}: {where} sends requests to host {_host(url)} with "
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


def _shown_path(path: object) -> str:
    # A path is shown only when it reads as one: a value pasted here may be a key.
    if isinstance(path, str) and os.path.isabs(path) and find_secret(path) is None:
        return path
    return "(a path that is not shown)"


def resolve_auth(
    config: LLMConfig,
    *,
    allowlist: EnvAllowlist | None = None,
    environ: Mapping[str, str] | None = None,
    provider: object = None,
) -> dict[str, Any]:
    """Resolve a row's ``auth_meta`` into client arguments.

    Every secret value resolved is remembered by `llmpool.credentials.redaction`, so that
    no text llmpool produces shows it.

    Args:
        config: The row.
        allowlist: What it may reference; `EnvAllowlist.from_env` by default.
        environ: Where variables are read; ``os.environ`` by default.
        provider: The row's provider; looked up in the allowlist's registry by default.

    Returns:
        Resolved keys (suffix dropped) to values: `SecretStr` for secrets (every value read from
        a file or from a variable that is not a plain setting), plain otherwise.

    Raises:
        EnvNotAllowedError: A reference or an endpoint is outside the allowlist.
        MissingSecretError: A variable is unset or empty, or a file is missing; the message
            names the variable and the row, never a value.

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
        if key.endswith("_env"):
            name = key[: -len("_env")]
            value = env.get(reference)
            if not value:
                shown = shown_reference(reference)
                msg = (
                    f"{config.describe()}: environment variable {shown} (auth_meta.{key}) "
                    "is not set"
                )
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                )
        elif key.endswith("_file"):
            name = key[: -len("_file")]
            shown = _shown_path(reference)
            label = f"secret file {shown}"
            try:
                # The path that was checked, links resolved.
                value = Path(os.path.realpath(reference)).read_text("utf-8").strip()
            except OSError as error:
                msg = (
                    f"{config.describe()}: {label} (auth_meta.{key}) "
                    f"cannot be read ({error.strerror or type(error).__name__})"
                )
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                ) from None
            if not value:
                msg = f"{config.describe()}: {label} (auth_meta.{key}) is empty"
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                )
        else:
            resolved[key] = reference
            continue
        if kinds.get(key) == "secret" or is_secret_key(name):
            remember(value)
            resolved[name] = SecretStr(value)
        else:
            resolved[name] = value
    return resolved
