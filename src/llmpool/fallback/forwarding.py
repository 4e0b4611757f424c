"""What a fallback model hands to each candidate: its standard parameters and its bound step.

`FallbackChatModel` accepts LangChain's standard model parameters (``temperature``,
``max_tokens``, ``timeout``, ``max_retries``, ``stop``, ``streaming``, and ``output_version``)
and forwards them to every candidate: each candidate's model is rebuilt once with them (its
row's other settings kept), so a timeout or retry count reaches the provider's client too.
`CandidateStep` does that, then applies the model's step (tools bound, structured output),
and is what the walk calls to turn a candidate's model into what it invokes.

Credentials and endpoints are not forwarded: they come from the rows (see
`llmpool.credentials`), so a caller's argument can never send a row's key elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable

__all__ = ["FORWARDED", "CandidateStep", "child_of", "rebuild"]

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

_MAX_MODELS = 256  # rebuilt models kept per fallback model (a live chain replaces its models)


def rebuild(model: BaseChatModel, overrides: Mapping[str, Any]) -> BaseChatModel:
    """Return ``model`` built again with ``overrides`` on top of the settings it was given.

    The settings are the fields it was built with, minus the ones pydantic excludes (its
    clients, made again from the settings, and its profile); an override is given by field
    name or alias, as its constructor takes it.

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


class CandidateStep:
    """Candidate model -> what the walk calls: rebuilt with the overrides, then ``step``.

    Args:
        overrides: Standard parameters forwarded to every candidate (see `FORWARDED`).
        step: Applied after the rebuild, e.g. ``lambda m: m.bind_tools(tools)``.
    """

    def __init__(
        self,
        overrides: Mapping[str, Any],
        step: Callable[[BaseChatModel], Runnable[Any, Any]] | None = None,
    ) -> None:
        self.overrides = dict(overrides)
        self.step = step
        self._models: dict[int, tuple[BaseChatModel, BaseChatModel]] = {}

    def configure(self, model: BaseChatModel) -> BaseChatModel:
        """Return ``model`` rebuilt with the overrides (made once per model)."""
        if not self.overrides:
            return model
        entry = self._models.get(id(model))
        if entry is None:
            if len(self._models) >= _MAX_MODELS:
                for stale in list(self._models)[: _MAX_MODELS // 2]:
                    self._models.pop(stale, None)
            # the entry keeps the model alive, so its id() cannot be reused while cached
            entry = self._models[id(model)] = (model, rebuild(model, self.overrides))
        return entry[1]

    def __call__(self, model: BaseChatModel) -> Runnable[Any, Any]:
        configured = self.configure(model)
        return configured if self.step is None else self.step(configured)

    def __eq__(self, other: object) -> bool:
        # Two models forwarding the same parameters through the same step compare equal (a
        # model and its serialized-then-loaded copy, say); the rebuilt models are a cache.
        if not isinstance(other, CandidateStep):
            return NotImplemented
        return self.overrides == other.overrides and self.step == other.step

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside: not hashable


def child_of(run_manager: Any) -> Any:
    """A callback manager whose runs nest under an LLM run (which has no ``get_child()``)."""
    from langchain_core.callbacks import (
        AsyncCallbackManager,
        AsyncCallbackManagerForLLMRun,
        CallbackManager,
    )

    cls = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager
