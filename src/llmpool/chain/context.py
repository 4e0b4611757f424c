"""What a call says of itself in its run metadata (``with_config(metadata=...)``): its
``session_key`` (`llmpool.chain.affinity`) and its ``llmpool_tags`` (`Tags`).

`Tags` are the call's labels (tenant, feature, user: anything the service counts by): usage is
recorded per tag set, and budgets and limits may be set on a tag's value. A stream's run
metadata does not reach the chat model's ``_stream``; `handed_on` passes it as keywords that
`run_context` takes back before any client sees them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.errors import InvalidOptionError

if TYPE_CHECKING:
    from llmpool.chain.affinity import Affinity, Session

#: The run metadata key a call names its session with.
SESSION_KEY = "session_key"
#: The run metadata key a call gives its tags with: a mapping of tag name to value.
TAGS_KEY = "llmpool_tags"
#: At most this many tags per call.
MAX_TAGS = 8
#: A tag's value is at most this many characters.
MAX_TAG_VALUE = 128

_ARGUMENTS = {SESSION_KEY: "llmpool_session_key", TAGS_KEY: "llmpool_tags"}
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,39}\Z")
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


def tags_of(given: Any) -> Tags | None:
    """Return ``given`` (a mapping of tag name to a string, number or bool) as `Tags`;
    ``None`` when empty. Raises `InvalidOptionError` naming the tag at fault.

    A name is lower case (``[a-z][a-z0-9_.-]*``, at most 40 characters); a value is at most
    `MAX_TAG_VALUE` characters, without ``,``, ``=`` or control characters.
    """
    if given is None:
        return None
    if not isinstance(given, Mapping):
        kind = type(given).__name__
        msg = f"the call's {TAGS_KEY} must be a mapping of tag name to value, not {kind}"
        raise InvalidOptionError(msg, option=TAGS_KEY)
    if len(given) > MAX_TAGS:
        msg = f"the call's {TAGS_KEY} has {len(given)} tags; at most {MAX_TAGS} are allowed"
        raise InvalidOptionError(msg, option=TAGS_KEY)
    pairs = []
    for name, value in given.items():
        if not isinstance(name, str) or not _NAME.match(name):
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


def handed_on(config: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return a stream's keywords with its run metadata's session key and tags added."""
    metadata = config.get("metadata") if config else None
    if not metadata or metadata.keys().isdisjoint(_ARGUMENTS):
        return kwargs
    extra = {_ARGUMENTS[k]: metadata[k] for k in _ARGUMENTS if metadata.get(k) not in (None, "")}
    return {**kwargs, **extra} if extra else kwargs


def run_context(
    run_manager: Any, kwargs: dict[str, Any], affinity: Affinity | None = None
) -> tuple[Session | None, Tags | None]:
    """Return a call's session (with ``affinity``: its key and the row serving it; else
    ``None``) and tags: from the keywords `handed_on` added (taken out), else from its run
    metadata."""
    key = given = None
    if kwargs:
        key = kwargs.pop(_ARGUMENTS[SESSION_KEY], None)
        given = kwargs.pop(_ARGUMENTS[TAGS_KEY], None)
    metadata = getattr(run_manager, "metadata", None)
    if metadata:
        if key is None:
            key = metadata.get(SESSION_KEY)
        if given is None:
            given = metadata.get(TAGS_KEY)
    tags = None if given is None else tags_of(given)
    if affinity is None or key is None or key == "":
        return None, tags
    session = str(key)
    return (affinity, session, affinity.pinned(session)), tags
