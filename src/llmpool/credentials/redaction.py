"""Keep resolved secret values out of every text llmpool produces.

A provider's error body may echo the key it was sent (``Incorrect API key provided:
sk-proj-...``), and that text reaches `AllLLMsFailedError`, log records and ``llmpool check``.
`remember` is told every secret value `llmpool.credentials.resolve.resolve_auth`
resolves; `redact` replaces each, and its common encodings, with ``***`` in any text:

- the value itself (and so ``Bearer <value>``);
- URL-quoted (``quote`` and ``quote_plus``) and JSON-escaped;
- base64, standard and URL-safe, at each of the three byte alignments, so the value is found
  inside ``Basic base64(user:value)`` whatever the user name's length.

Values live in this process's memory only, like the clients that hold them. Redaction is plain
substring replacement: linear in the text for each remembered value.
"""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_LENGTH", "forget_all", "redact", "remember"]

#: What a redacted value reads as.
MASK = "***"

#: Values shorter than this are not remembered: masking ``abc`` everywhere would garble text
#: and protect nothing.
MIN_LENGTH = 8

_lock = threading.Lock()
_values: set[str] = set()
_needles: tuple[str, ...] = ()


def _base64_fragments(value: bytes) -> set[str]:
    # The characters of base64(prefix + value) that depend on the value's bits alone, for
    # prefixes of 0, 1 and 2 bytes: one of the three appears in any encoding containing it.
    fragments: set[str] = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + value).decode("ascii")
            start = -(-8 * offset // 6)  # ceil
            end = 8 * (offset + len(value)) // 6
            fragment = encoded[start:end]
            if len(fragment) >= MIN_LENGTH:
                fragments.add(fragment)
    return fragments


def _encodings(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    forms |= _base64_fragments(value.encode("utf-8"))
    return {form for form in forms if len(form) >= MIN_LENGTH}


def remember(value: str) -> None:
    """Redact ``value`` (and its encodings) from every text llmpool produces from now on.

    Example:
        >>> remember("sk-test-canary-1234")
        >>> redact("Incorrect API key provided: sk-test-canary-1234.")
        'Incorrect API key provided: ***.'
    """
    global _needles
    if len(value) < MIN_LENGTH or value in _values:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        needles = set(_needles) | _encodings(value)
        # Longest first, so that an encoding containing another is replaced whole.
        _needles = tuple(sorted(needles, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with every remembered secret value, in any encoding, replaced by ``***``.

    Example:
        >>> import base64
        >>> remember("hunter2-is-my-password")
        >>> basic = base64.b64encode(b"admin:hunter2-is-my-password").decode()
        >>> MASK in redact("Authorization: Basic " + basic)
        True
    """
    needles = _needles
    if not needles:
        return text
    for needle in needles:
        if needle in text:
            text = text.replace(needle, MASK)
    return text


def forget_all() -> None:
    """Forget every remembered value (tests)."""
    global _needles
    with _lock:
        _values.clear()
        _needles = ()
