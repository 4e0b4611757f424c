"""What a row's model can take (context window, longest answer, capabilities) and whether one
call fits it: a row that cannot take the call is skipped before it is called.

A row's ``config.model_info`` declares it, key by key over what its provider declares for the
model (`ChatProvider.models`); a model declared nowhere is never skipped for fit. The prompt's
size is an estimate, made only for rows that declare a window: a quarter of its characters,
plus 4 per message, 85 per image and the bound tools' schemas (JSON) the same way. English text
runs about 4 characters a token, so the estimate is close; other scripts and code take more
tokens per character, so it errs low: a row is then called and refuses as it would without the
check, never skipped when it could have answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

#: What a model may declare it can do; a call that needs one its row lacks skips the row.
CAPABILITIES = frozenset({"tools", "structured_output", "vision", "streaming"})

#: The ``config`` key a row declares its model's fit with (llmpool's, never the client's).
FIT_KEY = "model_info"

_FIELDS = ("context_window", "max_output_tokens", "capabilities")

#: The keywords a call or a client may set its longest answer with.
MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict")

#: Content block types that carry an image (OpenAI's, LangChain's standard, Anthropic's).
_IMAGE_BLOCKS = frozenset({"image_url", "image", "input_image"})

#: Tokens counted per message (its role and separators) and per image (OpenAI's low detail).
_PER_MESSAGE, _PER_IMAGE = 4, 85


@dataclass(frozen=True, slots=True)
class Fit:
    """What one row's model can take; ``None``: not declared, so never the reason to skip it.

    Example:
        >>> fit = Fit(context_window=100, capabilities=frozenset({"streaming"}))
        >>> fit.refusal(Needs({"tools"}, None, 0), Prompt(["hi"], {}))
        'cannot do what this call needs: tools (its model_info.capabilities: streaming)'
        >>> fit.refusal(Needs(frozenset(), 200, 0), Prompt(["hi"], {}))
        'the prompt (~5 tokens) and max_tokens 200 do not fit its 100-token context window'
    """

    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: frozenset[str] | None = None

    @property
    def streams(self) -> bool | None:
        """Whether the model streams (``None``: not declared); one that does not is called
        without streaming and its answer is the stream's one chunk."""
        return None if self.capabilities is None else "streaming" in self.capabilities

    def refusal(self, needs: Needs, prompt: Prompt) -> str | None:
        """Return why this row cannot take the call, or ``None``."""
        if self.capabilities is not None:
            wanted = needs.capabilities
            if "vision" not in self.capabilities and prompt.images:
                wanted = wanted | {"vision"}
            missing = wanted - self.capabilities
            if missing:
                declared = ", ".join(sorted(self.capabilities)) or "none"
                return (
                    f"cannot do what this call needs: {', '.join(sorted(missing))} "
                    f"(its model_info.capabilities: {declared})"
                )
        max_tokens = prompt.max_tokens if prompt.max_tokens is not None else needs.max_tokens
        longest = self.max_output_tokens
        if longest is not None and max_tokens is not None and max_tokens > longest:
            return f"max_tokens {max_tokens} is more than its longest answer ({longest} tokens)"
        window = self.context_window
        if window is not None:
            tokens = prompt.tokens + needs.tool_tokens
            if tokens + (max_tokens or 0) > window:
                asked = f" and max_tokens {max_tokens} do" if max_tokens else " does"
                fits = f"not fit its {window}-token context window"
                return f"the prompt (~{tokens} tokens){asked} {fits}"
        return None


@dataclass(frozen=True, slots=True)
class Needs:
    """What a candidate's call asks of its model whatever the prompt: capabilities, its client's
    longest answer, and the estimated tokens of its bound tools."""

    capabilities: frozenset[str]
    max_tokens: int | None
    tool_tokens: int


def call_needs(model: Any, kwargs: Mapping[str, Any]) -> Needs:
    """Return what a call with ``kwargs`` bound to ``model`` needs (made once per client)."""
    wanted = set()
    tools = kwargs.get("tools")
    if tools:
        wanted.add("tools")
    if "ls_structured_output_format" in kwargs or "response_format" in kwargs:
        wanted.add("structured_output")
    tool_tokens = estimate(json.dumps(tools, default=str)) if tools else 0
    return Needs(frozenset(wanted), max_tokens_of(kwargs, model), tool_tokens)


def max_tokens_of(kwargs: Mapping[str, Any], model: Any = None) -> int | None:
    """Return the longest answer ``kwargs`` (or else ``model``'s fields) ask for, if any."""
    for key in MAX_TOKENS_KEYS:
        value = kwargs.get(key)
        if value is None and model is not None:
            value = getattr(model, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class Prompt:
    """One call's messages and keywords, measured only when a row asks (`Fit.refusal`), once.

    Plain lazy slots rather than ``functools.cached_property``, which takes a lock on first
    access (Python 3.11): a prompt is made for every call of a chain whose rows declare a fit.
    """

    __slots__ = ("_images", "_max_tokens", "_tokens", "kwargs", "messages")

    def __init__(self, messages: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.messages = messages
        self.kwargs = kwargs
        self._tokens = -1
        self._max_tokens: int | None = -1
        self._images: bool | None = None

    @property
    def max_tokens(self) -> int | None:
        """The longest answer this call's own keywords ask for."""
        if self._max_tokens == -1:
            self._max_tokens = max_tokens_of(self.kwargs) if self.kwargs else None
        return self._max_tokens

    @property
    def tokens(self) -> int:
        """The estimated tokens of the messages (see the module's docstring)."""
        if self._tokens < 0:
            self._tokens = sum(_message_tokens(message) for message in self.messages)
        return self._tokens

    @property
    def images(self) -> bool:
        """Whether a message carries an image."""
        if self._images is None:
            self._images = any(
                isinstance(content := getattr(message, "content", None), list)
                and any(
                    isinstance(block, Mapping) and block.get("type") in _IMAGE_BLOCKS
                    for block in content
                )
                for message in self.messages
            )
        return self._images


def _message_tokens(message: Any) -> int:
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return _PER_MESSAGE + estimate(content)
    total = _PER_MESSAGE
    for block in content if isinstance(content, list) else ():
        if isinstance(block, str):
            total += estimate(block)
        elif isinstance(block, Mapping):
            text = block.get("text")
            total += _PER_IMAGE if block.get("type") in _IMAGE_BLOCKS else 0
            total += estimate(text) if isinstance(text, str) else 0
    return total


def estimate(text: str) -> int:
    """Return the estimated tokens of ``text``: a quarter of its characters, rounded up."""
    return math.ceil(len(text) / 4)


def _refuse(config: LLMConfig, key: str, problem: str) -> InvalidConfigError:
    field = f"config.{FIT_KEY}.{key}" if key else f"config.{FIT_KEY}"
    msg = f"{config.describe()}: {field} {problem}"
    return InvalidConfigError(msg, llm_name=config.name, llm_id=config.id, field=field)


def declared_fit(
    config: LLMConfig, models: Mapping[str, Mapping[str, Any]] | None = None
) -> Fit | None:
    """Return the row's `Fit`: its ``config.model_info`` over ``models``' entry for its model
    (`InvalidConfigError` naming the field), or ``None`` when neither declares anything."""
    declared = dict(model_entry(models, config.model_name) or {})
    own = config.config.get(FIT_KEY)
    if own is not None:
        if not isinstance(own, Mapping):
            shape = '{"context_window": 128000, "max_output_tokens": 16384, "capabilities": [...]}'
            raise _refuse(config, "", f"must be an object like {shape}")
        for key in own:
            if key not in _FIELDS:
                raise _refuse(config, str(key), f"is not one of {', '.join(_FIELDS)}")
        declared.update(own)
    if not declared:
        return None
    sizes = [_size(config, key, declared.get(key)) for key in _FIELDS[:2]]
    capabilities = declared.get("capabilities")
    if capabilities is not None:
        if not isinstance(capabilities, (list, tuple, frozenset, set)) or not all(
            isinstance(c, str) for c in capabilities
        ):
            raise _refuse(config, "capabilities", "must be a list of names")
        unknown = sorted(set(capabilities) - CAPABILITIES)
        if unknown:
            known = ", ".join(sorted(CAPABILITIES))
            raise _refuse(config, "capabilities", f"has unknown {unknown[0]!r}; known: {known}")
        capabilities = frozenset(capabilities)
    return Fit(sizes[0], sizes[1], capabilities)


def _size(config: LLMConfig, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _refuse(config, key, f"must be a whole number of tokens above 0, not {value!r}")
    return int(value)


def model_entry(
    models: Mapping[str, Mapping[str, Any]] | None, model_name: str
) -> Mapping[str, Any] | None:
    """Return the entry of ``model_name`` in a provider's table: the model itself, or the
    longest name it is a dated or ``-latest`` snapshot of (``gpt-4o-2024-08-06`` → ``gpt-4o``).

    Example:
        >>> table = {"gpt-4o": {"context_window": 128000}, "gpt-4": {"context_window": 8192}}
        >>> model_entry(table, "gpt-4o-2024-08-06"), model_entry(table, "gpt-4o-mini")
        ({'context_window': 128000}, None)
    """
    if not models:
        return None
    if model_name in models:
        return models[model_name]
    best = ""
    for name in models:
        if len(name) > len(best) and model_name.startswith(name + "-"):
            rest = model_name[len(name) + 1 :]
            if rest[:1].isdigit() or rest == "latest":
                best = name
    return models[best] if best else None
