"""Whether an answer is one the caller can use: the built-in verdicts and the caller's own.

A candidate that answers with nothing (no content, no tool call), or whose answer a content
filter stopped, has failed the caller as surely as one that raised; so has one whose structured
output does not parse, when the caller asks for that check, or one the caller's ``accept``
predicate refuses. `rejection` names the first verdict an answer fails; the walk then raises
`llmpool.BadAnswerError` inside the attempt and falls back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

__all__ = ["DEFAULT_REJECT", "VERDICTS", "Judge", "check_reject", "rejection"]

#: The built-in verdicts: ``"empty"`` and ``"content_filter"`` are on by default.
VERDICTS = ("empty", "content_filter", "invalid_structured")
DEFAULT_REJECT = frozenset({"empty", "content_filter"})

#: A caller's predicate: the answer's message -> whether to keep it.
Judge = Callable[[Any], Any]

# Finish reasons that say a filter or the model's policy stopped the answer: OpenAI and Azure
# (``finish_reason``), Anthropic (``stop_reason``), Gemini, Bedrock Converse (``stopReason``).
_FILTERED = frozenset(
    {"content_filter", "refusal", "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
     "guardrail_intervened", "content_filtered"}
)  # fmt: skip


def check_reject(reject: Iterable[str], where: str) -> frozenset[str]:
    """Return ``reject`` as a set of known verdicts (`ValueError` naming ``where`` otherwise)."""
    if isinstance(reject, str):
        reject = (reject,)
    verdicts = frozenset(reject)
    unknown = sorted(verdicts - set(VERDICTS))
    if unknown:
        msg = f"{where} has an unknown verdict {unknown[0]!r}; known: {', '.join(VERDICTS)}"
        raise ValueError(msg)
    return verdicts


def rejection(
    message: Any,
    reject: AbstractSet[str],
    accept: Judge | None,
    parser: Any = None,
    info: Any = None,
) -> tuple[str, str] | None:
    """Return ``(verdict, why)`` for an answer the caller cannot use, or ``None`` (``info``: the
    client's ``generation_info``, where OpenAI's finish reason is until LangChain moves it).

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> rejection(AIMessage(""), DEFAULT_REJECT, None)
        ('empty', 'an empty answer: no content and no tool call')
        >>> rejection(AIMessage("hi"), DEFAULT_REJECT, lambda m: "hi" not in m.content)[0]
        'accept'
    """
    if reject:
        if "content_filter" in reject:
            meta, extra = message.response_metadata, message.additional_kwargs
            finish = (
                meta.get("finish_reason") or meta.get("stop_reason") or meta.get("stopReason")
                if meta
                else None
            )
            if not finish and info:
                finish = info.get("finish_reason")
            if finish in _FILTERED:
                return "content_filter", f"a filtered answer (finish reason {finish!r})"
            if extra and extra.get("refusal"):
                return "content_filter", "a refusal instead of an answer"
        if "empty" in reject and not message.content and not _acts(message):
            return "empty", "an empty answer: no content and no tool call"
        if parser is not None and "invalid_structured" in reject:
            problem = _unparsed(parser, message)
            if problem is not None:
                return "invalid_structured", f"structured output that does not parse: {problem}"
    if accept is not None and not accept(message):
        name = getattr(accept, "__qualname__", None) or type(accept).__name__
        return "accept", f"an answer the caller's accept={name} refused"
    return None


def _acts(message: Any) -> bool:
    # Whether an answer with no content calls a tool (a legacy function call counts).
    return bool(
        getattr(message, "tool_calls", None)
        or getattr(message, "invalid_tool_calls", None)
        or message.additional_kwargs.get("function_call")
        or message.additional_kwargs.get("tool_calls")
    )


def _unparsed(parser: Any, message: Any) -> str | None:
    # What is wrong with a structured answer, read by its candidate's own parser (whose
    # failures, LangChain's OutputParserException and pydantic's ValidationError, are ValueErrors).
    from llmpool.fallback.policy import describe_error

    try:
        parsed = parser.invoke(message)
    except ValueError as error:
        return describe_error(error)
    return "no structured answer in it" if parsed is None else None
