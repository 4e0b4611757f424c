"""What counts as a literal secret in a row, wherever it hides: under a key whose name says so
(``api_key``, ``Authorization``...) at any depth, as a reference that is really a pasted value,
inside a URL (user info, ``?key=``), or as a recognisable key or token under any key
(``sk-...``, ``AKIA...``, a JSON Web Token). A URL may not carry user info either: it hides
where requests go. Messages name the row and the field, never the value; the models run these
checks when a row is written and when it is read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llmpool.errors import InvalidConfigError, LiteralSecretError

#: Suffixes that mark a key as a reference rather than a value.
REFERENCE_SUFFIXES = ("_env", "_file")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The only variable names a message repeats: anything else may be a pasted key.
CONVENTIONAL_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")

#: How deep ``config`` and ``auth_meta`` may nest before a row is refused outright.
MAX_DEPTH = 64

# A plain auth_meta key containing one of these holds a secret: auth_meta is references-only
# territory, so substrings count ("apitoken", "x_api_key").
SECRET_WORDS = frozenset(
    {"key", "token", "secret", "password", "passwd", "credential", "authorization"}
    | {"bearer", "cookie"}
)

# Client parameters that carry credentials: they belong in auth_meta, as references.
CREDENTIAL_PARAMETERS = frozenset(
    {"api_key", "azure_ad_token", "aws_access_key_id", "aws_secret_access_key"}
    | {"aws_session_token", "credentials", "password", "client_secret"}
)

# Word rules for keys anywhere in config (where "max_tokens", "prompt_cache_key" and "auth_meta"
# are legitimate): a word anywhere, a word at the end, or "<qualifier> key" at the end.
_ANY_WORD = frozenset(
    {"password", "passwd", "passphrase", "secret", "secrets", "credential", "credentials"}
    | {"authorization", "bearer", "cookie", "apikey", "privatekey", "secretkey", "accesskey"}
)
_LAST_WORD = frozenset({"token", "auth"})
# A key ending in one of these names or locates a credential: "credentials_profile_name".
_NAMING_WORDS = frozenset({"name", "path", "profile", "location", "type"})
_KEY_QUALIFIERS = frozenset(
    {"api", "access", "account", "admin", "auth", "client", "encryption", "license", "master"}
    | {"private", "secret", "service", "session", "shared", "signing", "subscription"}
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# Prefixes of well-known API keys and tokens (OpenAI, Anthropic, GitHub, GitLab, Slack, Hugging
# Face, Fireworks, AWS access key ids, Google API keys).
_KEY_PREFIXES = r"sk-|sk_|rk_|pk_live_|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|xox[abprs]-|hf_|fw_"
_SECRET_PREFIX = re.compile(
    rf"^({_KEY_PREFIXES}|(AKIA|ASIA)[A-Z0-9]{{16}}$|AIza[0-9A-Za-z_-]{{30,}})"
)
# The same keys found inside any string: a prefix and a long body, an AWS key id, a JWT.
_EMBEDDED_TOKENS = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (rf"(?<![A-Za-z0-9])(?:{_KEY_PREFIXES})[A-Za-z0-9_-]{{16,}}", "an API key"),
        (r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", "an AWS access key id"),
        (r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{30,}", "a Google API key"),
        (
            r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
            "a JSON Web Token",
        ),
    )
)
# Key bodies: 32+ hex digits (Azure's keys), or a long run of letters and digits with no "_".
_HEX_KEY = re.compile(r"^[0-9A-Fa-f]{32,}$")
_ALNUM_KEY = re.compile(r"^[A-Za-z0-9]{20,}$")
_HEADER_VALUE = re.compile(r"^\s*(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}\s*$", re.IGNORECASE)
_QUERY_SECRETS = frozenset({"key", "sig", "signature", "code", "pass", "pwd", "auth"})

_SUGGESTION = 'reference it from auth_meta instead: {"api_key_env": "NAME_OF_ENV_VAR"}'


def words(key: str) -> list[str]:
    """Return a key's words, lower-cased: ``xApiKey`` and ``x_api_key`` read x, api, key."""
    return [word.lower() for word in _WORD.findall(key)]


def shown_reference(name: object) -> str:
    """Return how a message may show a referenced variable name: itself only if conventional."""
    if isinstance(name, str) and CONVENTIONAL_ENV_NAME.match(name):
        return name
    return "(a name that is not shown)"


def is_secret_name(key: str) -> bool:
    """Return whether a key's name says its value is a secret (word rules, for any depth)."""
    parts = words(key)
    if not parts or parts[-1] in _NAMING_WORDS:
        return False
    if len(parts) >= 2 and parts[-2] == "per":
        return False  # a rate (``input_cost_per_token``, ``calls_per_key``), not a credential
    if any(word in _ANY_WORD for word in parts) or parts[-1] in _LAST_WORD:
        return True
    return any(
        word in ("key", "keys") and before in _KEY_QUALIFIERS
        for before, word in itertools.pairwise(parts)
    )


def is_secret_key(key: str) -> bool:
    """Return whether a plain ``auth_meta`` key names a secret: substrings count there."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) or is_secret_name(key)


def looks_like_secret(value: str) -> bool:
    """Return whether a string looks like a key or token (long, mixed, or a known prefix)."""
    text = value.strip()
    if any(ch.isspace() for ch in text):
        return False  # keys and tokens are one word; this is prose or a typo
    if _SECRET_PREFIX.match(text) or find_secret(text) is not None or _HEX_KEY.match(text):
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
    """Return what kind of key or token ``text`` holds anywhere (never the value), or ``None``."""
    return next((kind for pattern, kind in _EMBEDDED_TOKENS if pattern.search(text)), None)


def url_userinfo(value: str) -> bool:
    """Return whether a URL carries user info before its host (``http://api.example@evil/``)."""
    text = value.strip()
    if "://" not in text:
        return False
    # Not cut at a backslash: some clients read it as "/" and some as part of the host.
    return "@" in re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0]


def url_credential(value: str) -> str | None:
    """Return what credential a URL carries (never its value), or ``None``."""
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


def _check_reference(value: Any, field: str, row: str) -> None:
    if field.endswith("_env"):
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
        raise InvalidConfigError(f"{row}: {field} must be a non-empty file path", field=field)
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
        _check_reference(value, field, row)
    elif is_secret_name(key):
        msg = f"{row}: {field} would carry a credential; {_SUGGESTION}"
        raise LiteralSecretError(msg, field=field)
    else:
        _check_nested(value, field, row, depth)


def check_config(config: Mapping[str, Any], *, row: str = "LLM row") -> None:
    """Refuse model parameters that would carry a credential, under a key at any depth or in
    a URL (`LiteralSecretError` naming the field only): they belong in ``auth_meta``."""
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
    """Refuse an ``auth_meta`` holding a secret (`LiteralSecretError`), or a reference that
    is not a variable name or path (`InvalidConfigError`). Other keys are plain settings
    (``region``): scalars whose name does not say secret, and whose URLs carry no credential.
    """
    for key, value in auth_meta.items():
        field = f"auth_meta.{key}"
        if not isinstance(key, str) or not key:
            msg = f"{row}: auth_meta keys must be non-empty strings"
            raise InvalidConfigError(msg, field="auth_meta")
        if key.endswith(REFERENCE_SUFFIXES):
            _check_reference(value, field, row)
        elif is_secret_key(key):
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
