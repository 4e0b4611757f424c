"""What counts as a literal secret in a row, wherever it hides.

A row's ``auth_meta`` holds references (``*_env`` names an environment variable, ``*_file`` a
secret file) and plain non-secret settings (``region``, ``api_version``); its ``config`` holds
model parameters. Neither may hold a secret: not under a key whose name says it is one
(``api_key``, ``Authorization``, ``client_secret``, ``private_key``...) at any depth of nested
objects and lists, not as a reference that is really a pasted value (``"api_key_env":
"sk-proj-..."``, or 32 hex digits, Azure's key format), not inside a URL
(``https://user:pw@host``, ``https://host/?key=...``), and not as a recognisable key or token
under any key at all (an ``sk-...`` key in a custom header, an ``AKIA...`` key id, a JSON Web
Token). A URL may not carry user info either (``http://api.example@evil.example/``): it hides
where requests go. Nesting deeper than `MAX_DEPTH` is refused rather than walked.

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
    "CONVENTIONAL_ENV_NAME",
    "CREDENTIAL_PARAMETERS",
    "ENV_NAME",
    "MAX_DEPTH",
    "REFERENCE_SUFFIXES",
    "SECRET_WORDS",
    "check_auth_meta",
    "check_config",
    "find_secret",
    "is_secret_key",
    "is_secret_name",
    "looks_like_secret",
    "shown_reference",
    "url_credential",
    "url_userinfo",
]

#: Suffixes that mark a key as a reference rather than a value.
REFERENCE_SUFFIXES = ("_env", "_file")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: How environment variables are conventionally named: upper case, digits and ``_``, at most 64
#: characters. Only such a name is ever repeated in a message; anything else may be a pasted key.
CONVENTIONAL_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")

#: How deep ``config`` and ``auth_meta`` may nest before a row is refused outright.
MAX_DEPTH = 64

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
# The same keys and tokens found inside any string (a header value, a URL, a list item): a
# well-known prefix followed by a long key body, an AWS access key id, a JSON Web Token.
_EMBEDDED_TOKENS = (
    (
        re.compile(
            r"(?<![A-Za-z0-9])(?:sk-|sk_|rk_|pk_live_|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|"
            r"xox[abprs]-|hf_|fw_)[A-Za-z0-9_-]{16,}"
        ),
        "an API key",
    ),
    (
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        "an AWS access key id",
    ),
    (re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{30,}"), "a Google API key"),
    (
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        "a JSON Web Token",
    ),
)
# Key bodies: 32+ hex digits (Azure's keys), or a long run of letters and digits with no "_".
_HEX_KEY = re.compile(r"^[0-9A-Fa-f]{32,}$")
_ALNUM_KEY = re.compile(r"^[A-Za-z0-9]{20,}$")
_HEADER_VALUE = re.compile(r"^\s*(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}\s*$", re.IGNORECASE)
_QUERY_SECRETS = frozenset({"key", "sig", "signature", "code", "pass", "pwd", "auth"})

_SUGGESTION = 'reference it from auth_meta instead: {"api_key_env": "NAME_OF_ENV_VAR"}'


def _words(key: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(key)]


def shown_reference(name: object) -> str:
    """Return how a message may show a referenced variable name: itself if conventional.

    A value that is not a conventional variable name (upper case, digits, ``_``, at most 64
    characters) may be a key pasted where a name belongs, so it is never repeated.

    Example:
        >>> shown_reference("OPENAI_API_KEY"), shown_reference("3f2a9c0e4b7d4e1f")
        ('OPENAI_API_KEY', '(a name that is not shown)')
    """
    if isinstance(name, str) and CONVENTIONAL_ENV_NAME.match(name):
        return name
    return "(a name that is not shown)"


def is_secret_name(key: str) -> bool:
    """Return whether a key's name says its value is a secret (word rules, for any depth).

    Example:
        >>> keys = ("api_key", "Authorization", "max_tokens", "auth_meta", "input_cost_per_token")
        >>> [is_secret_name(k) for k in keys]
        [True, True, False, False, False]
    """
    words = _words(key)
    if not words or words[-1] in _NAMING_WORDS:
        return False
    if len(words) >= 2 and words[-2] == "per":
        return False  # a rate (``input_cost_per_token``, ``calls_per_key``), not a credential
    if any(word in _ANY_WORD for word in words) or words[-1] in _LAST_WORD:
        return True
    for before, word in itertools.pairwise(words):
        if word in ("key", "keys") and before in _KEY_QUALIFIERS:
            return True
    return False


def is_secret_key(key: str) -> bool:
    """Return whether a plain ``auth_meta`` key (or a resolved one) names a secret.

    ``auth_meta`` is references-only territory, so substrings count (``apitoken``,
    ``x_api_key``), on top of the word rules of `is_secret_name`.

    Example:
        >>> is_secret_key("api_key"), is_secret_key("base_url")
        (True, False)
    """
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
    if _SECRET_PREFIX.match(text) or find_secret(text) is not None:
        return True
    if _HEX_KEY.match(text):
        return True
    if _ALNUM_KEY.match(text) and re.search(r"\d", text) and re.search(r"[A-Za-z]", text):
        return True
    if len(text) >= 20 and re.search(r"[-/+.=]", text):
        return True
    return (
        len(text) >= 24
        and any(ch.islower() for ch in text)
        and any(ch.isupper() for ch in text)
        and any(ch.isdigit() for ch in text)
    )


def find_secret(text: str) -> str | None:
    """Return what kind of key or token ``text`` contains (never the value), or ``None``.

    Well-known API key prefixes followed by a long key body, AWS access key ids and JSON Web
    Tokens are found anywhere in the text: in a header value, a URL, a list item.

    Example:
        >>> find_secret("X-Custom: sk-proj-Zq8xT3vK9mW2pL7nR4sJ")
        'an API key'
        >>> find_secret("sk-learn") is None
        True
    """
    for pattern, kind in _EMBEDDED_TOKENS:
        if pattern.search(text):
            return kind
    return None


def url_userinfo(value: str) -> bool:
    """Return whether a URL carries user info (``user@``, ``user:pw@``) before its host.

    A URL a row carries may not: ``http://api.example@evil.example/`` sends requests to
    ``evil.example``, whatever its first word suggests.

    Example:
        >>> url_userinfo("http://localhost@127.0.0.1:8080/"), url_userinfo("http://localhost/")
        (True, False)
    """
    text = value.strip()
    if "://" not in text:
        return False
    authority = text.split("://", 1)[1]
    # Not cut at a backslash: some clients read it as "/" and some as part of the host, so an
    # "@" after one is user info for the latter.
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    return "@" in authority


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
            if name.lower() in _QUERY_SECRETS or is_secret_key(name):
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
    if url_userinfo(value):
        msg = (
            f"{row}: {field} is a URL with user info before its host (user@host), which is "
            "refused: it can hide where requests go; write the URL without it"
        )
        raise InvalidConfigError(msg, field=field)
    if _HEADER_VALUE.match(value):
        msg = f"{row}: {field} holds an authorization header value; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)
    kind = find_secret(value)
    if kind is not None:
        msg = f"{row}: {field} holds what looks like {kind}; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)


def _check_nested(value: Any, field: str, row: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        # A hostile row must not exhaust the stack; no configuration nests this deep.
        top = re.match(r"[^.\[]+(?:\.[^.\[]+)?", field)
        where = top.group(0) if top else field
        msg = f"{row}: {where} nests deeper than {MAX_DEPTH} levels"
        raise InvalidConfigError(msg, field=where)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_entry(str(key), item, f"{field}.{key}", row, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_nested(item, f"{field}[{index}]", row, depth + 1)
    elif isinstance(value, str):
        _check_string(value, field, row)


def _check_entry(key: str, value: Any, field: str, row: str, depth: int) -> None:
    if key.endswith(REFERENCE_SUFFIXES):
        _check_reference(key, value, field, row)
        return
    if is_secret_name(key):
        msg = f"{row}: {field} would carry a credential; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)
    _check_nested(value, field, row, depth)


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
        if lowered in CREDENTIAL_PARAMETERS or (
            lowered.endswith(("_api_key", "_secret", "_password", "_token"))
            and not lowered.endswith("_per_token")  # a rate: input_cost_per_token
        ):
            msg = (
                f"{row}: {field} would carry a credential; put a reference in auth_meta "
                f'instead: {{"{key}_env": "NAME_OF_ENV_VAR"}}'
            )
            raise LiteralSecretError(msg, field=field)
        _check_entry(str(key), value, field, row, 1)


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
        elif is_secret_key(key):
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
