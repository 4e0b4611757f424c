"""What a fallback model forwards to each candidate: LangChain's standard parameters only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["FORWARDED", "rebuild"]

#: The standard LangChain parameters a fallback model forwards to every candidate.
FORWARDED = (
    "temperature",
    "max_tokens",
    "timeout",
    "max_retries",
    "stop",
    "streaming",
    "output_version",
)


def rebuild(model: BaseChatModel, overrides: Mapping[str, Any]) -> BaseChatModel:
    """Return ``model`` built again with ``overrides`` (by name or alias) on its fields but the
    excluded ones (its clients, its profile).

    Example:
        >>> from llmpool.providers.fake import FakeChatModel
        >>> rebuild(FakeChatModel(responses=["hi"]), {"model": "other"}).model
        'other'
    """
    fields = type(model).model_fields
    kept: dict[str, Any] = {}
    for name in model.model_fields_set:
        info = fields.get(name)
        if info is None or info.exclude:
            continue
        kept[name] = getattr(model, name)
    for key in overrides:  # an override given by alias replaces the field it names
        for name, info in fields.items():
            if key in (info.alias, info.validation_alias) and name != key:
                kept.pop(name, None)
    return type(model)(**{**kept, **overrides})
