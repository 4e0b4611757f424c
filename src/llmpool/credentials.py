"""Resolve a row's ``auth_meta`` references into values, within an allowlist.

A key ending in ``_env`` names an environment variable and a key ending in ``_file`` names a
secret file (Docker and Kubernetes secrets); the resolved key drops the suffix
(``api_key_env`` -> ``api_key``). Secret-looking values stay `SecretStr` until the provider hands
them to its client.

Why an allowlist: whoever can edit a row must not be able to point ``api_key_env`` at
``DATABASE_URL`` (and ``base_url`` at their own server) to read the service's other secrets.
The allowlist is set in code or by ``LLMPOOL_ALLOWED_ENV``, never by the database, and
``DATABASE_URL`` and llmpool's own variables are never allowed. For the same reason ``_file``
references may only point inside ``/run/secrets``, ``/var/run/secrets`` or the directories in
``LLMPOOL_SECRET_DIRS``. The other half of that attack, a row sending an allowed key to a
``base_url`` of its own, is closed by ``LLMPOOL_ALLOWED_ENDPOINTS`` (URL prefixes): when set, an
endpoint written into a row (``base_url``, ``azure_endpoint``, ``endpoint_url``...) must start
with one of them. Endpoints read from referenced variables are the operator's and not checked.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from llmpool.errors import EnvNotAllowedError, MissingSecretError
from llmpool.secret_checks import SECRET_WORDS, is_secret_name

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = [
    "DEFAULT_ALLOWED_ENV",
    "DEFAULT_SECRET_DIRS",
    "ENDPOINT_KEYS",
    "NEVER_ALLOWED_ENV",
    "EnvAllowlist",
    "is_secret_key",
    "resolve_auth",
]

#: Every variable of the usage guide's "Environment Variables Required", plus close companions.
DEFAULT_ALLOWED_ENV = frozenset(
    {
        # OpenAI
        "OPENAI_API_KEY",
        "OPENAI_API_BASE",
        "OPENAI_BASE_URL",
        "OPENAI_ORGANIZATION",
        # Azure OpenAI
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_API_BASE",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT_NAME",
        "AZURE_OPENAI_API_VERSION",
        # Anthropic
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        # AWS Bedrock
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        # Google Vertex AI
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        # Fireworks
        "FIREWORKS_API_KEY",
        # Ollama
        "OLLAMA_BASE_URL",
    }
)

#: Never allowed, whatever the configuration says.
NEVER_ALLOWED_ENV = ("DATABASE_URL", "LLMPOOL_*")

DEFAULT_SECRET_DIRS = ("/run/secrets", "/var/run/secrets")

#: Row keys (in ``config`` or plain ``auth_meta``) that say where requests, and keys, are sent.
ENDPOINT_KEYS = frozenset(
    {
        "base_url",
        "api_base",
        "openai_api_base",
        "azure_endpoint",
        "endpoint",
        "endpoint_url",
        "api_endpoint",
        "anthropic_api_url",
        "fireworks_api_base",
        "host",
    }
)


def is_secret_key(key: str) -> bool:
    """Return whether a resolved ``auth_meta`` key holds a secret (``api_key``, ``*token*``...).

    Example:
        >>> is_secret_key("api_key"), is_secret_key("base_url")
        (True, False)
    """
    return any(word in key.lower() for word in SECRET_WORDS) or is_secret_name(key)


def _split(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


@dataclass(frozen=True)
class EnvAllowlist:
    """Which environment variables and secret directories a row may reference.

    Callable as a store validator: ``SQLStore(url, validators=[EnvAllowlist.from_env()])``
    refuses a write that references anything outside it.

    Attributes:
        names: Allowed variable names; ``PREFIX_*`` patterns are allowed too.
        secret_dirs: Directories that ``*_file`` references may point inside.
        endpoints: URL prefixes a row's literal endpoints must start with; empty: any.

    Example:
        >>> allow = EnvAllowlist.from_env({}).extend("MYCO_LLM_KEY")
        >>> allow.allows("MYCO_LLM_KEY"), allow.allows("DATABASE_URL")
        (True, False)
    """

    names: frozenset[str] = DEFAULT_ALLOWED_ENV
    secret_dirs: tuple[str, ...] = DEFAULT_SECRET_DIRS
    endpoints: tuple[str, ...] = ()
    _patterns: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        patterns = tuple(name for name in self.names if "*" in name or "?" in name)
        object.__setattr__(self, "_patterns", patterns)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnvAllowlist:
        """Return the default allowlist extended by ``LLMPOOL_ALLOWED_ENV``,
        ``LLMPOOL_SECRET_DIRS`` and ``LLMPOOL_ALLOWED_ENDPOINTS`` (comma- or space-separated;
        ``os.pathsep`` for directories).

        Args:
            environ: The environment to read; ``os.environ`` by default.
        """
        env = os.environ if environ is None else environ
        names = DEFAULT_ALLOWED_ENV | frozenset(_split(env.get("LLMPOOL_ALLOWED_ENV", "")))
        dirs = DEFAULT_SECRET_DIRS + tuple(
            item for item in env.get("LLMPOOL_SECRET_DIRS", "").split(os.pathsep) if item
        )
        endpoints = tuple(_split(env.get("LLMPOOL_ALLOWED_ENDPOINTS", "")))
        return cls(names=names, secret_dirs=dirs, endpoints=endpoints)

    def extend(
        self, *names: str, secret_dirs: Iterable[str] = (), endpoints: Iterable[str] = ()
    ) -> EnvAllowlist:
        """Return a copy that also allows ``names`` (and ``secret_dirs``, ``endpoints``)."""
        return EnvAllowlist(
            names=self.names | frozenset(names),
            secret_dirs=self.secret_dirs + tuple(secret_dirs),
            endpoints=self.endpoints + tuple(endpoints),
        )

    def allows_endpoint(self, url: str) -> bool:
        """Return whether a row may send requests to ``url`` (always, when no prefix is set).

        Example:
            >>> allow = EnvAllowlist(endpoints=("https://api.openai.com/",))
            >>> allow.allows_endpoint("https://api.openai.com/v1"), allow.allows_endpoint(
            ...     "https://api.openai.com.evil.example/v1")
            (True, False)
        """
        return not self.endpoints or any(url.startswith(prefix) for prefix in self.endpoints)

    def allows(self, name: str) -> bool:
        """Return whether a row may reference the environment variable ``name``."""
        if any(fnmatch.fnmatchcase(name, banned) for banned in NEVER_ALLOWED_ENV):
            return False
        return name in self.names or any(
            fnmatch.fnmatchcase(name, pattern) for pattern in self._patterns
        )

    def allows_file(self, path: str) -> bool:
        """Return whether a row may reference the secret file ``path``."""
        real = Path(os.path.realpath(path))
        return any(
            real.is_relative_to(os.path.realpath(directory)) for directory in self.secret_dirs
        )

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row that references a variable or file outside the allowlist.

        Raises:
            EnvNotAllowedError: Naming the row, the field and the variable.
        """
        for key, value in config.auth_meta.items():
            if key.endswith("_env") and not self.allows(value):
                msg = (
                    f"{config.describe()}: auth_meta.{key} references environment variable "
                    f"{value}, which is not on the allowlist; allow it in code "
                    "(EnvAllowlist.extend) or with LLMPOOL_ALLOWED_ENV"
                )
                raise EnvNotAllowedError(
                    msg, llm_name=config.name, llm_id=config.id, field=f"auth_meta.{key}"
                )
            if key.endswith("_file") and not self.allows_file(value):
                msg = (
                    f"{config.describe()}: auth_meta.{key} points outside the secret "
                    f"directories ({', '.join(self.secret_dirs)}); add its directory to "
                    "LLMPOOL_SECRET_DIRS"
                )
                raise EnvNotAllowedError(
                    msg, llm_name=config.name, llm_id=config.id, field=f"auth_meta.{key}"
                )
        literal = [("config", k, v) for k, v in config.config.items()]
        literal += [("auth_meta", k, v) for k, v in config.auth_meta.items()]
        for where, key, value in literal:
            if key.lower() in ENDPOINT_KEYS and not self.allows_endpoint(str(value)):
                msg = (
                    # the host only: a URL may carry a password
                    f"{config.describe()}: {where}.{key} points at host "
                    f"{urlsplit(str(value)).hostname!r}, which is outside the "
                    f"allowed endpoints ({', '.join(self.endpoints)}); extend "
                    "LLMPOOL_ALLOWED_ENDPOINTS or reference a variable instead"
                )
                raise EnvNotAllowedError(
                    msg, llm_name=config.name, llm_id=config.id, field=f"{where}.{key}"
                )


def resolve_auth(
    config: LLMConfig,
    *,
    allowlist: EnvAllowlist | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Resolve a row's ``auth_meta`` into client arguments.

    Args:
        config: The row.
        allowlist: What it may reference; `EnvAllowlist.from_env` by default.
        environ: Where variables are read; ``os.environ`` by default.

    Returns:
        Resolved keys (suffix dropped) to values: `SecretStr` for secrets, plain otherwise.

    Raises:
        EnvNotAllowedError: A reference is outside the allowlist.
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
    allow(config)
    resolved: dict[str, Any] = {}
    for key, reference in config.auth_meta.items():
        if key.endswith("_env"):
            name = key[: -len("_env")]
            value = env.get(reference)
            if not value:
                msg = (
                    f"{config.describe()}: environment variable {reference} "
                    f"(auth_meta.{key}) is not set"
                )
                raise MissingSecretError(
                    msg, variable=reference, llm_name=config.name, llm_id=config.id
                )
        elif key.endswith("_file"):
            name = key[: -len("_file")]
            try:
                value = Path(reference).read_text("utf-8").strip()
            except OSError as error:
                msg = (
                    f"{config.describe()}: secret file {reference} (auth_meta.{key}) "
                    f"cannot be read ({error.strerror or type(error).__name__})"
                )
                raise MissingSecretError(
                    msg, variable=reference, llm_name=config.name, llm_id=config.id
                ) from None
            if not value:
                msg = f"{config.describe()}: secret file {reference} (auth_meta.{key}) is empty"
                raise MissingSecretError(
                    msg, variable=reference, llm_name=config.name, llm_id=config.id
                )
        else:
            resolved[key] = reference
            continue
        resolved[name] = SecretStr(value) if is_secret_key(name) else value
    return resolved
