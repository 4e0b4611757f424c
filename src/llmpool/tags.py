"""A call's tags: the labels (tenant, feature, user: anything a service counts by) a call gives
in its run metadata under ``llmpool_tags``, checked and in one canonical form.

Usage is recorded per tag set, and budgets and limits may be set on a tag's value; an
`llmpool.contracts.AdmissionCheck` is given the call's tags at each of its hooks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from llmpool.errors import InvalidOptionError

#: The run metadata key a call gives its tags with: a mapping of tag name to value.
TAGS_KEY = "llmpool_tags"
#: At most this many tags per call.
MAX_TAGS = 8
#: A tag's value is at most this many characters.
MAX_TAG_VALUE = 128

#: What a tag's name is: lower case letters, digits, ``_``, ``.`` and ``-``, starting with a letter.
TAG_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,39}\Z")
_BAD_VALUE = re.compile(r"[,=\x00-\x1f\x7f]")


class Tags(NamedTuple):
    """A call's tags, sorted by name: ``pairs`` and their canonical ``text``
    (``"feature=chat,tenant=acme"``), the form usage is stored and budgets are keyed by.

    Example:
        >>> tags = tags_of({"tenant": "acme", "feature": "chat"})
        >>> tags.text, tags.get("tenant")
        ('feature=chat,tenant=acme', 'acme')
    """

    pairs: tuple[tuple[str, str], ...]
    text: str

    def get(self, name: str) -> str | None:
        """Return the value of tag ``name``, or ``None``."""
        for key, value in self.pairs:
            if key == name:
                return value
        return None

    def as_dict(self) -> dict[str, str]:
        """Return the tags as a fresh dict."""
        return dict(self.pairs)

    def with_tag(self, name: str, value: str) -> Tags:
        """Return these tags with ``name`` set to ``value`` (a name and value already checked).

        Example:
            >>> tags_of({"tenant": "acme", "arm": "x"}).with_tag("arm", "control").text
            'arm=control,tenant=acme'
        """
        pairs = sorted([*(p for p in self.pairs if p[0] != name), (name, value)])
        return Tags(tuple(pairs), ",".join(f"{k}={v}" for k, v in pairs))


#: Tags already checked, by their mapping's items. Only mappings of text values are kept (``1``
#: and ``True`` are equal keys, not equal tags), and a text never equals another type's value.
_checked: dict[tuple[tuple[Any, Any], ...], Tags] = {}
_CHECKED_SIZE = 4096


def tags_of(given: Any) -> Tags | None:
    """Return ``given`` (a mapping of tag name to a string, number or bool) as `Tags`;
    ``None`` when empty. Raises `InvalidOptionError` naming the tag at fault.

    A name is lower case (``[a-z][a-z0-9_.-]*``, at most 40 characters); a value is at most
    `MAX_TAG_VALUE` characters, without ``,``, ``=`` or control characters. A service sends
    the same few tag sets again and again: each is checked once.
    """
    if given is None:
        return None
    if type(given) is not dict:
        return _check(given)
    key = tuple(given.items())
    try:
        tags = _checked.get(key)
    except TypeError:  # an unhashable value: refused below
        return _check(given)
    if tags is None:
        tags = _check(given)
        if tags is not None and all(type(v) is str for v in given.values()):
            if len(_checked) >= _CHECKED_SIZE:
                _checked.clear()
            _checked[key] = tags
    return tags


def _check(given: Any) -> Tags | None:
    if not isinstance(given, Mapping):
        kind = type(given).__name__
        msg = f"the call's {TAGS_KEY} must be a mapping of tag name to value, not {kind}"
        raise InvalidOptionError(msg, option=TAGS_KEY)
    if len(given) > MAX_TAGS:
        msg = f"the call's {TAGS_KEY} has {len(given)} tags; at most {MAX_TAGS} are allowed"
        raise InvalidOptionError(msg, option=TAGS_KEY)
    pairs = []
    for name, value in given.items():
        if not isinstance(name, str) or not TAG_NAME.match(name):
            msg = (
                f"the call's tag name {name!r} is not lower case letters, digits, '_', '.' or "
                "'-' starting with a letter (at most 40 characters)"
            )
            raise InvalidOptionError(msg, option=TAGS_KEY)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str) or not value:
            shown = type(value).__name__ if not isinstance(value, str) else "empty"
            msg = f"the call's tag {name!r} must be a non-empty string, not {shown}"
            raise InvalidOptionError(msg, option=f"{TAGS_KEY}.{name}")
        if len(value) > MAX_TAG_VALUE or _BAD_VALUE.search(value):
            msg = (
                f"the call's tag {name!r} must be at most {MAX_TAG_VALUE} characters, without "
                "',', '=' or control characters"
            )
            raise InvalidOptionError(msg, option=f"{TAGS_KEY}.{name}")
        pairs.append((name, value))
    if not pairs:
        return None
    pairs.sort()
    return Tags(tuple(pairs), ",".join(f"{k}={v}" for k, v in pairs))
