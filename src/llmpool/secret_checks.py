"""What counts as a literal secret in a row, wherever it hides.

A row's ``auth_meta`` holds references (``*_env`` names an environment variable, ``*_file`` a
secret file) and plain non-secret settings (``region``, ``api_version``); its ``config`` holds
model parameters. Neither may hold a secret: not under a key whose name says it is one
(``api_key``, ``Authorization``, ``client_secret``, ``private_key``...) at any depth of nested
objects and lists, not as a reference that is really a pasted value (``"api_key_env":
"sk-proj-..."``), and not inside a URL (``https://user:pw@host``, ``https://host/?key=...``).

Every message names the row and the field and never the value: a refused value is presumably the
secret itself. The models call these checks in their validators, so a row is refused when it is
written and reported as a bad row (by name and id) when it is read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llmpool.errors import InvalidConfigError, LiteralSecretError

__all__ = [
    "CREDENTIAL_PARAMETERS",
    "ENV_NAME",
    "REFERENCE_SUFFIXES",
    "SECRET_WORDS",
    "check_auth_meta",
    "check_config",
    "is_secret_name",
    "looks_like_secret",
    "url_credential",
]

#: Suffixes that mark a key as a reference rather than a value.
REFERENCE_SUFFIXES = ("_env", "_file")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# A plain (non-reference) auth_meta key that contains one of these holds a secret. auth_meta is
# references-only territory, so substrings are matched: "apitoken" and "x_api_key" both count.
SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "authorization",
    "bearer",
    "cookie",
)

# Client parameters that carry credentials: they belong in auth_meta, as references.
CREDENTIAL_PARAMETERS = frozenset(
    {
        "api_key",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "credentials",
        "password",
        "client_secret",
    }
)

# Word rules for keys anywhere in config (where "max_tokens", "prompt_cache_key" and "auth_meta"
# are legitimate): a word anywhere, a word at the end, or "<qualifier> key" at the end.
_ANY_WORD = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "credential",
        "credentials",
        "authorization",
        "bearer",
        "cookie",
        "apikey",
        "privatekey",
        "secretkey",
        "accesskey",
    }
)
_LAST_WORD = frozenset({"token", "auth"})
# A key that ends in one of these names or locates a credential rather than holding one:
# Bedrock's "credentials_profile_name", a "credentials_path".
_NAMING_WORDS = frozenset({"name", "path", "profile", "location", "type"})
_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "access",
        "account",
        "admin",
        "auth",
        "client",
        "encryption",
        "license",
        "master",
        "private",
        "secret",
        "service",
        "session",
        "shared",
        "signing",
        "subscription",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# Prefixes of well-known API keys and tokens (OpenAI, Anthropic, GitHub, GitLab, Slack, Hugging
# Face, Fireworks, AWS access key ids, Google API keys).
_SECRET_PREFIX = re.compile(
    r"^(sk-|sk_|rk_|pk_live_|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|xox[abprs]-|hf_|fw_|"
    r"(AKIA|ASIA)[A-Z0-9]{16}$|AIza[0-9A-Za-z_-]{30,})"
)
_HEADER_VALUE = re.compile(r"^\s*(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}\s*$", re.IGNORECASE)
_QUERY_SECRETS = frozenset({"key", "sig", "signature", "code", "pass", "pwd", "auth"})

_SUGGESTION = 'reference it from auth_meta instead: {"api_key_env": "NAME_OF_ENV_VAR"}'


def _words(key: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(key)]


def is_secret_name(key: str) -> bool:
    """Return whether a key's name says its value is a secret (word rules, for any depth).

    Example:
        >>> [is_secret_name(k) for k in ("api_key", "Authorization", "max_tokens", "auth_meta")]
        [True, True, False, False]
    """
    words = _words(key)
    if not words or words[-1] in _NAMING_WORDS:
        return False
    if any(word in _ANY_WORD for word in words) or words[-1] in _LAST_WORD:
        return True
    for before, word in itertools.pairwise(words):
        if word in ("key", "keys") and before in _KEY_QUALIFIERS:
            return True
    return False


def _is_secret_auth_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) or is_secret_name(key)


def looks_like_secret(value: str) -> bool:
    """Return whether a string looks like a key or token rather than a name.

    Environment variable names are conventionally short and upper case; keys are long, mixed,
    or carry a well-known prefix.

    Example:
        >>> looks_like_secret("sk-proj-abc123def456"), looks_like_secret("OPENAI_API_KEY")
        (True, False)
    """
    text = value.strip()
    if any(ch.isspace() for ch in text):
        return False  # keys and tokens are one word; this is prose or a typo
    if _SECRET_PREFIX.match(text):
        return True
    if len(text) >= 20 and re.search(r"[-/+.=]", text):
        return True
    return (
        len(text) >= 24
        and any(ch.islower() for ch in text)
        and any(ch.isupper() for ch in text)
        and any(ch.isdigit() for ch in text)
    )


def url_credential(value: str) -> str | None:
    """Return what credential a URL carries (never its value), or ``None``.

    Example:
        >>> url_credential("https://user:pw@example.com/v1")
        'a password in its user info'
        >>> url_credential("https://example.com/v1?api-version=2024-06-01") is None
        True
    """
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value.strip())
        password, username = parts.password, parts.username
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    if password:
        return "a password in its user info"
    if username and looks_like_secret(username):
        return "a key in its user info"
    for part, where in ((parts.query, "query"), (parts.fragment, "fragment")):
        for name, _ in parse_qsl(part, keep_blank_values=True):
            if name.lower() in _QUERY_SECRETS or _is_secret_auth_key(name):
                return f"a {name!r} {where} parameter"
    return None


def _check_reference(key: str, value: Any, field: str, row: str) -> None:
    if key.endswith("_env"):
        if isinstance(value, str) and ENV_NAME.match(value) and not looks_like_secret(value):
            return
        secretish = isinstance(value, str) and looks_like_secret(value)
        reason = "it looks like a secret value" if secretish else "the value is not a name"
        msg = (
            f"{row}: {field} must name an environment variable (letters, digits and '_', "
            f"e.g. OPENAI_API_KEY); {reason}: put the secret in the environment and "
            "reference that variable"
        )
        raise (LiteralSecretError if secretish else InvalidConfigError)(msg, field=field)
    if not isinstance(value, str) or not value.strip():
        msg = f"{row}: {field} must be a non-empty file path"
        raise InvalidConfigError(msg, field=field)
    if _SECRET_PREFIX.match(value.strip()):
        msg = (
            f"{row}: {field} must be the path of a secret file; it looks like a secret value: "
            "put the secret in a file and reference its path"
        )
        raise LiteralSecretError(msg, field=field)


def _check_string(value: str, field: str, row: str) -> None:
    carried = url_credential(value)
    if carried is not None:
        msg = f"{row}: {field} is a URL carrying a credential ({carried}); {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)
    if _HEADER_VALUE.match(value):
        msg = f"{row}: {field} holds an authorization header value; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)


def _check_nested(value: Any, field: str, row: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_entry(str(key), item, f"{field}.{key}", row)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_nested(item, f"{field}[{index}]", row)
    elif isinstance(value, str):
        _check_string(value, field, row)


def _check_entry(key: str, value: Any, field: str, row: str) -> None:
    if key.endswith(REFERENCE_SUFFIXES):
        _check_reference(key, value, field, row)
        return
    if is_secret_name(key):
        msg = f"{row}: {field} would carry a credential; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)
    _check_nested(value, field, row)


def check_config(config: Mapping[str, Any], *, row: str = "LLM row") -> None:
    """Refuse model parameters that would carry a credential (they belong in ``auth_meta``).

    Keys are checked at every depth (``model_kwargs.api_key``, ``default_headers.Authorization``;
    ``default_headers`` with ``X-Title`` alone passes), and so are URLs (a password or a
    ``key=`` parameter in ``base_url``).

    Args:
        config: The model parameters.
        row: How the row is named in error messages.

    Raises:
        LiteralSecretError: ``config`` carries a credential; the message names the field only.

    Example:
        >>> check_config({"temperature": 0.2, "max_tokens": 256})
    """
    for key, value in config.items():
        field = f"config.{key}"
        lowered = str(key).lower()
        if lowered in CREDENTIAL_PARAMETERS or lowered.endswith(
            ("_api_key", "_secret", "_password", "_token")
        ):
            msg = (
                f"{row}: {field} would carry a credential; put a reference in auth_meta "
                f'instead: {{"{key}_env": "NAME_OF_ENV_VAR"}}'
            )
            raise LiteralSecretError(msg, field=field)
        _check_entry(str(key), value, field, row)


def check_auth_meta(auth_meta: Mapping[str, Any], *, row: str = "LLM row") -> None:
    """Refuse an ``auth_meta`` that holds a secret, or a reference that is not a name.

    A key ending in ``_env`` must name an environment variable; a key ending in ``_file`` must
    name a path. Any other key is a plain, non-secret setting (``region``, ``api_version``) unless
    its name says it is a secret (``api_key``, ``*token*``, ``*secret*``, ``Authorization``...);
    its value must be a scalar, and a URL must not carry a credential.

    Args:
        auth_meta: The mapping to check.
        row: How the row is named in error messages.

    Raises:
        LiteralSecretError: A key holds a secret value instead of a reference.
        InvalidConfigError: A reference is empty or not a valid variable name.

    Example:
        >>> check_auth_meta({"api_key_env": "OPENAI_API_KEY"})
        >>> check_auth_meta({"api_key": "sk-..."})
        Traceback (most recent call last):
        ...
        llmpool.errors.LiteralSecretError: LLM row: auth_meta.api_key holds a literal secret; \
store a reference instead: {"api_key_env": "NAME_OF_ENV_VAR"}
    """
    for key, value in auth_meta.items():
        field = f"auth_meta.{key}"
        if not isinstance(key, str) or not key:
            msg = f"{row}: auth_meta keys must be non-empty strings"
            raise InvalidConfigError(msg, field="auth_meta")
        if key.endswith(REFERENCE_SUFFIXES):
            _check_reference(key, value, field, row)
        elif _is_secret_auth_key(key):
            # Never echo the value: it is presumably the secret itself.
            msg = (
                f"{row}: {field} holds a literal secret; store a reference instead: "
                f'{{"{key}_env": "NAME_OF_ENV_VAR"}}'
            )
            raise LiteralSecretError(msg, field=field)
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            msg = f"{row}: {field} must be a string, number or boolean"
            raise InvalidConfigError(msg, field=field)
        elif isinstance(value, str):
            _check_string(value, field, row)
