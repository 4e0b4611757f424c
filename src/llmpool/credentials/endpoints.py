"""Where a row sends requests: the endpoints it writes, parsed and compared safely.

An endpoint is any absolute URL anywhere in a row's ``config`` or plain ``auth_meta``, and any
key that names one (``base_url``, ``azure_endpoint``, ``openai_proxy``, keys ending in ``url``,
``host`` or ``proxy``, and the keys a provider declares), after the provider renames them.
Endpoints are compared by parsed scheme, host and port, and by path on segment boundaries, so
``https://api.openai.com.evil.example`` never passes for ``https://api.openai.com``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from llmpool.credentials.checks import (
    MAX_DEPTH,
    REFERENCE_SUFFIXES,
    url_userinfo,
)

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = [
    "DEFAULT_PORTS",
    "ENDPOINT_KEYS",
    "Endpoint",
    "has_userinfo",
    "host_of",
    "literal_endpoints",
    "parse_endpoint",
]

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


class Endpoint(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str

    def within(self, allowed: Endpoint) -> bool:
        if (self.scheme, self.host, self.port) != (allowed.scheme, allowed.host, allowed.port):
            return False
        # On segment boundaries: "/v1" admits "/v1/chat", never "/v1evil".
        return allowed.path in ("/", self.path) or self.path.startswith(allowed.path + "/")


def parse_endpoint(value: str) -> Endpoint | None:
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
    return Endpoint(scheme, host, port, path)


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


def has_userinfo(url: str) -> bool:
    if "://" in url:
        return url_userinfo(url)
    return "@" in re.split(r"[/?#]", url.strip(), maxsplit=1)[0]  # "user@host" written bare


def host_of(value: str) -> str:
    # The host alone: a URL may carry more than its author meant to show.
    try:
        text = value.strip()
        return repr(urlsplit(text if "://" in text else "https://" + text).hostname)
    except ValueError:
        return "(unreadable)"
