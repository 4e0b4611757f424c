"""Where a row sends requests: the endpoints it writes, parsed and compared safely.

Endpoints are compared by parsed scheme, host and port, and by path on segment boundaries, so
``https://api.openai.com.evil.example`` never passes for ``https://api.openai.com``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from llmpool.credentials.checks import MAX_DEPTH, REFERENCE_SUFFIXES, url_userinfo, words

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: A key whose last word is one of these says where requests, and keys, are sent (``base_url``,
#: ``azure_endpoint``, ``openai_proxy``); so does one ending in ``api_base``, and any absolute URL.
_ENDPOINT_WORDS = frozenset(
    {"url", "urls", "uri", "endpoint", "endpoints", "host", "hosts", "hostname", "proxy", "proxies"}
)
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
    """Return a URL normalised (``https://`` when it has no scheme); ``None`` unless plain: not
    what a client could read differently (user info, a backslash, space, an encoded separator)."""
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


def declared_names(value: object) -> frozenset[str] | None:
    """Return a collection of names a provider declares; ``None`` for anything else (a bare
    string too: it would otherwise declare its letters)."""
    if isinstance(value, (set, frozenset, list, tuple)):
        return frozenset(item for item in value if isinstance(item, str))
    return None


def declared_endpoint_keys(provider: object) -> frozenset[str]:
    """Return the keys a provider declares (``endpoint_keys``) to name an endpoint, lower-cased."""
    return frozenset(
        n.lower() for n in declared_names(getattr(provider, "endpoint_keys", None)) or ()
    )


def _names_endpoint(key: str, declared: frozenset[str]) -> bool:
    lowered = key.lower()
    if lowered in declared or lowered.endswith("api_base"):
        return True
    parts = words(key)
    return bool(parts) and parts[-1] in _ENDPOINT_WORDS


def literal_endpoints(config: LLMConfig, provider: object = None) -> list[tuple[str, str]]:
    """Return every endpoint written into a row as ``(field, value)``: an absolute URL in
    ``config`` or plain ``auth_meta``, or a value under a key naming one (``base_url``, ``*_url``,
    ``*endpoint``, ``host``, ``*proxy``, ``*api_base``, the provider's ``endpoint_keys``, also as
    its ``auth_names`` rename it); never a header value or a reference (``*_env``, ``*_file``)."""
    declared = declared_endpoint_keys(provider)
    renames = getattr(provider, "auth_names", None)
    renames = renames if isinstance(renames, Mapping) else {}
    found: list[tuple[str, str]] = []

    def walk(key: str, value: Any, where: str, depth: int, headers: bool) -> None:
        if depth > MAX_DEPTH:  # the row's own validation refuses this depth
            return
        if isinstance(value, str):
            # An empty endpoint is the client's default. A header value never decides where a
            # request goes ("HTTP-Referer": "https://..."), unless the header names a host.
            named = _names_endpoint(key, declared)
            if value.strip() and (named or (not headers and _ABSOLUTE_URL.match(value))):
                found.append((where, value))
        elif isinstance(value, Mapping):
            inner = words(key)[-1:] == ["headers"]
            for child, item in value.items():
                walk(str(child), item, f"{where}.{child}", depth + 1, inner)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(key, item, f"{where}[{index}]", depth + 1, headers)

    for key, value in config.config.items():
        walk(str(key), value, f"config.{key}", 1, False)
    for key, value in config.auth_meta.items():
        if key.endswith(REFERENCE_SUFFIXES) or not isinstance(value, str) or not value.strip():
            continue
        named = _names_endpoint(key, declared) or _names_endpoint(
            str(renames.get(key, key)), declared
        )
        if named or _ABSOLUTE_URL.match(value):
            found.append((f"auth_meta.{key}", value))
    return found


def has_userinfo(url: str) -> bool:
    """Return whether a URL, or a bare ``user@host``, names a user before its host."""
    if "://" in url:
        return url_userinfo(url)
    return "@" in re.split(r"[/?#]", url.strip(), maxsplit=1)[0]


def host_of(value: str) -> str:
    """Return the host alone, for messages: a URL may carry more than its author meant to show."""
    try:
        text = value.strip()
        return repr(urlsplit(text if "://" in text else "https://" + text).hostname)
    except ValueError:
        return "(unreadable)"
