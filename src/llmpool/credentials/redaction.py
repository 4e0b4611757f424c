"""Keep resolved secret values out of every text llmpool produces.

A provider's error may echo the key it was sent, and that text reaches `AllLLMsFailedError`,
logs and ``llmpool check``. `remember` is told every secret `resolve_auth` resolves; `redact`
masks it in any text, as written, URL-quoted, JSON-escaped and base64-encoded (at every byte
alignment, so ``Basic base64(user:value)`` is caught whatever the user name). Values live in
this process's memory only.
"""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import quote, quote_plus

MASK = "***"

#: Shorter values are not remembered: masking ``abc`` everywhere would garble text, protect nothing.
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


def remember(value: str) -> None:
    """Redact ``value`` (and its encodings) from every text llmpool produces from now on."""
    global _needles
    if len(value) < MIN_LENGTH or value in _values:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
        forms |= _base64_fragments(value.encode("utf-8"))
        needles = {*_needles, *(form for form in forms if len(form) >= MIN_LENGTH)}
        # Longest first, so that an encoding containing another is replaced whole.
        _needles = tuple(sorted(needles, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with every remembered secret value, in any encoding, replaced by ``***``.

    Example:
        >>> import base64
        >>> remember("hunter2-is-my-password")
        >>> redact("Basic " + base64.b64encode(b"admin:hunter2-is-my-password").decode())
        'Basic YWRtaW46***A=='
    """
    for needle in _needles:
        text = text.replace(needle, MASK)
    return text


def forget_all() -> None:
    """Forget every remembered value (tests)."""
    global _needles
    with _lock:
        _values.clear()
        _needles = ()


def scrubbed(error: BaseException) -> BaseException:
    """Return ``error``, or a copy without any remembered secret in what it prints.

    The copy keeps the error's class and attributes (masked), and drops its chained causes.

    Example:
        >>> remember("sk-scrub-canary-5678")
        >>> error = scrubbed(PermissionError("key sk-scrub-canary-5678 refused"))
        >>> type(error).__name__, str(error)
        ('PermissionError', 'key *** refused')
    """
    if not _needles or not _holds_secret(error):
        return error
    cls = type(error)
    try:
        copy = cls.__new__(cls)
        copy.__dict__.update({k: _masked(v) for k, v in vars(error).items()})
    except (TypeError, AttributeError):  # no plain __new__ or no __dict__: a plain stand-in
        return RuntimeError(f"{cls.__name__}: {redact(str(error))}")
    copy.args = tuple(_masked(arg) for arg in error.args)
    copy.__traceback__ = error.__traceback__
    copy.__suppress_context__ = True
    return copy


def _holds_secret(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # the chain printed with it
        seen.add(id(current))
        for text in (str(current), repr(current)):
            if redact(text) != text:
                return True
        current = current.__cause__ or current.__context__
    return False


def _masked(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if type(value) is list:
        return [_masked(item) for item in value]
    if type(value) is tuple:
        return tuple(_masked(item) for item in value)
    return value
