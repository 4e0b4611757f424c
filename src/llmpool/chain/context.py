"""What a call says of itself in its run metadata (``with_config(metadata=...)``): its
``session_key`` (`llmpool.chain.affinity`) and its ``llmpool_tags`` (`llmpool.tags`).

A stream's run metadata does not reach the chat model's ``_stream``; `handed_on` passes it as
keywords that `run_context` takes back before any client sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmpool.tags import TAGS_KEY, Tags, tags_of

if TYPE_CHECKING:
    from llmpool.chain.affinity import Affinity, Session

#: The run metadata key a call names its session with.
SESSION_KEY = "session_key"
_ARGUMENTS = {SESSION_KEY: "llmpool_session_key", TAGS_KEY: "llmpool_tags"}


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
        if key is None and affinity is not None:
            key = metadata.get(SESSION_KEY)
        if given is None:
            given = metadata.get(TAGS_KEY)
    tags = None if given is None else tags_of(given)
    if affinity is None or key is None or key == "":
        return None, tags
    session = str(key)
    return (affinity, session, affinity.pinned(session)), tags
