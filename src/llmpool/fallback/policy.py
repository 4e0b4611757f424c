"""What to do when a candidate fails: retry it, fall back to the next, or propagate.

llmpool moves on for provider errors, never for a bare `Exception` (a `TypeError` is the
caller's bug), recognized without importing provider packages (`classify_error`).
"""

from __future__ import annotations

import enum
import re
import sys
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from types import FrameType
from typing import TYPE_CHECKING, Any

from llmpool.fallback.breakers import Window
from llmpool.fallback.verdicts import DEFAULT_REJECT, Judge, check_reject
from llmpool.providers.breaker_config import ERROR_CLASSES, breaker_overrides
from llmpool.providers.declarations import error_outcome
from llmpool.providers.timeouts import check_seconds

if TYPE_CHECKING:
    from llmpool.contracts import Candidate
    from llmpool.observe.hooks import Hooks

__all__ = [
    "BreakerRule",
    "FallbackPolicy",
    "Outcome",
    "classify_error",
    "raised_by_provider",
    "retry_after",
]


class Outcome(enum.Enum):
    """How the fallback loop treats an error."""

    RETRY = "retry"
    """Transient (429, 5xx, timeout, refused): retry this candidate, then fall back."""
    FALLBACK = "fallback"
    """The candidate cannot answer (401/403, 404, bad request): fall back at once."""
    FALLBACK_KEEP_BREAKER = "fallback_keep_breaker"
    """The request, not the candidate, is at fault (context length): fall back at once and do
    not count it against the candidate's circuit breaker."""
    PROPAGATE = "propagate"
    """Not a provider failure (a bug): raise it unchanged."""


# Errors every client may raise (httpx's and httpx2's transport errors, langchain-core's); those
# of one SDK are declared by its provider (`llmpool.providers.builtin`).
_RETRY_NAMES = frozenset(
    {"TransportError", "TimeoutException", "ConnectError", "ReadTimeout", "WriteTimeout",
     "PoolTimeout", "ConnectTimeout", "ReadError", "RemoteProtocolError", "NetworkError"}
)  # fmt: skip
# ``EmptyStreamError`` (`llmpool.fallback.calls`), ``StreamStalledError`` (`...bounded`): streams
# that carried nothing readable, or stalled (falling back at once, unlike a timeout: retried).
_FALLBACK_NAMES = frozenset(
    {"ModelAuthenticationError", "ModelPermissionDeniedError", "ModelNotFoundError",
     "ModelInvalidRequestError", "ModelRefusalError", "EmptyStreamError", "StreamStalledError"}
)  # fmt: skip
_CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded", "maximum context length", "context length", "context window",
    "prompt is too long", "input is too long", "too many tokens", "reduce the length",
)  # fmt: skip
_RETRY_BOTO_CODES = frozenset(
    {"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException",
     "InternalServerException", "ModelTimeoutException", "TooManyRequestsException"}
)  # fmt: skip


def status_code(error: BaseException) -> int | None:
    """Return the HTTP status an error carries, if any, without importing its package."""
    for value in (
        getattr(error, "status_code", None),
        getattr(getattr(error, "response", None), "status_code", None),
        getattr(error, "code", None),
    ):
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def retry_after(error: BaseException) -> float | None:
    """Return the seconds the error's ``retry-after-ms`` or ``Retry-After`` header asks for.

    Example:
        >>> class Response: headers = {"retry-after": "2.5"}
        >>> class RateLimited(Exception): response = Response()
        >>> retry_after(RateLimited())
        2.5
    """
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            from email.utils import parsedate_to_datetime

            when = parsedate_to_datetime(str(value))
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _is_context_length(error: BaseException) -> bool:
    text = str(error).lower()
    return any(marker in text for marker in _CONTEXT_LENGTH_MARKERS)


_MRO_NAMES: dict[type, frozenset[str]] = {}


def _mro_names(cls: type) -> frozenset[str]:
    names = _MRO_NAMES.get(cls)
    if names is None:
        names = _MRO_NAMES[cls] = frozenset(klass.__name__ for klass in cls.__mro__)
    return names


def classify_error(error: BaseException) -> Outcome:
    """Return the `Outcome` of an error raised by a candidate.

    In order: a context overflow, the HTTP status, botocore's AWS error code, the outcome a
    provider declares for the class (or its nearest declared base), the generic transport
    names; a ``ValueError``, ``TypeError``... propagates unless `raised_by_provider`.

    Example:
        >>> classify_error(ConnectionRefusedError()).value, classify_error(TypeError()).value
        ('retry', 'propagate')
    """
    if not isinstance(error, Exception):
        return Outcome.PROPAGATE  # KeyboardInterrupt, SystemExit, CancelledError
    names = _mro_names(type(error))
    if "ContextOverflowError" in names or "BadAnswerError" in names:
        # The request (its prompt, the caller's rules), not the row, is at fault: a row that
        # answered is up.
        return Outcome.FALLBACK_KEEP_BREAKER
    code = status_code(error)
    if code is not None:
        if code in (400, 413, 422) and _is_context_length(error):
            return Outcome.FALLBACK_KEEP_BREAKER
        if code in (408, 409, 425, 429) or code >= 500:
            return Outcome.RETRY
        if 400 <= code < 500:
            return Outcome.FALLBACK
    if "ClientError" in names:  # botocore, carrying an AWS error code
        boto_code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        if boto_code in _RETRY_BOTO_CODES:
            return Outcome.RETRY
        if _is_context_length(error):
            return Outcome.FALLBACK_KEEP_BREAKER
        return Outcome.FALLBACK
    declared = error_outcome(type(error))
    if declared is not None:
        return Outcome(declared)
    if names & _RETRY_NAMES or isinstance(error, (ConnectionError, TimeoutError)):
        return Outcome.RETRY
    if names & _FALLBACK_NAMES:
        return Outcome.FALLBACK
    if names & _SDK_ERROR_NAMES:
        # An SDK's error without a status: an error event inside a stream (OpenAI's ``{"error":
        # ...}`` chunk, Anthropic's ``overloaded_error``); its type says who is at fault.
        kind = _error_type(error)
        if any(word in kind for word in _REQUEST_FAULT_TYPES):
            return Outcome.FALLBACK
        return Outcome.RETRY
    if isinstance(error, _UNREADABLE_ANSWER_ERRORS) and raised_by_provider(error):
        return Outcome.FALLBACK
    return Outcome.PROPAGATE


_SDK_ERROR_NAMES = frozenset({"APIError", "APIStatusError", "ResponseError"})
_REQUEST_FAULT_TYPES = ("invalid_request", "authentication", "permission", "not_found")


# What a client raises when it cannot read a 200's body; also what a caller's bug raises.
_UNREADABLE_ANSWER_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)
# A call that does not fit a signature is the caller's, wherever in the client it surfaces.
_SIGNATURE_MISMATCH = re.compile(
    r"unexpected keyword argument|missing \d+ required (?:positional|keyword-only) argument"
    r"|takes (?:\d+|from \d+ to \d+) positional argument|got multiple values for argument"
    r"|positional-only arguments passed as keyword"
)
# langchain-core's words for a stream of nothing a client could read (lines that are not events).
_NOTHING_STREAMED = frozenset(
    {"No generation chunks were returned", "No generations found in stream."}
)
_CALLER_SIDE = frozenset({"langchain_core", "llmpool"})
# Frames that only pass an error along: the standard library, and pydantic's validation.
_PASS_THROUGH = frozenset(sys.stdlib_module_names) | {"pydantic", "pydantic_core"}
_INSTALLED_DIRS = ("/site-packages/", "/dist-packages/")
_SKIP, _CORE, _INSTALLED, _CALLER = range(4)
_FRAME_KINDS: dict[str, int] = {}


def _frame_kind(frame: FrameType) -> int:
    module = frame.f_globals.get("__name__")
    module = module if isinstance(module, str) else ""
    kind = _FRAME_KINDS.get(module)
    if kind is None:
        top = module.partition(".")[0]
        if top in _PASS_THROUGH:
            kind = _SKIP
        elif top in _CALLER_SIDE:
            kind = _CORE
        else:
            path = frame.f_code.co_filename.replace("\\", "/")
            kind = _INSTALLED if any(d in path for d in _INSTALLED_DIRS) else _CALLER
        _FRAME_KINDS[module] = kind
    return kind


def raised_by_provider(error: BaseException) -> bool:
    """Whether an error was raised inside a provider's client, not by the caller's code.

    The innermost traceback frame outside the standard library and pydantic decides: in an
    installed package other than langchain-core and llmpool, the client's (unless called by
    langchain-core's callback manager); in those two, the caller's (except langchain-core's
    report of an empty stream); anywhere else, the caller's. So is a signature mismatch
    (``unexpected keyword argument``), and an error with no traceback.

    Example:
        >>> raised_by_provider(ValueError("no traceback, no verdict"))
        False
    """
    if _SIGNATURE_MISMATCH.search(str(error)):
        return False
    frames: list[FrameType] = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    in_client = False
    for frame in reversed(frames):
        kind = _frame_kind(frame)
        if kind == _SKIP or (in_client and kind != _CORE):
            continue
        if in_client:  # the nearest caller-side frame around the client's code
            module = frame.f_globals.get("__name__")
            return not (isinstance(module, str) and module.startswith("langchain_core.callbacks"))
        if kind == _CORE:
            return isinstance(error, ValueError) and str(error) in _NOTHING_STREAMED
        if kind == _CALLER:
            return False
        in_client = True
    return in_client


def _error_type(error: BaseException) -> str:
    kinds = [getattr(error, "type", None)]
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        kinds.append(body.get("type"))
        inner = body.get("error")
        if isinstance(inner, dict):
            kinds.append(inner.get("type"))
    return " ".join(kind for kind in kinds if isinstance(kind, str)).lower()


@dataclass(frozen=True)
class BreakerRule:
    """One row's circuit-breaker policy: the pool's `FallbackPolicy`, with the row's
    ``config["breaker"]`` overrides (`FallbackPolicy.breaker_rule`).

    Attributes:
        threshold: Consecutive failures that open the breaker.
        window: The failure-rate trip, or ``None`` for consecutive failures only.
        cooldown: Seconds of the first cooldown; each failed probe multiplies it.
        multiplier: Growth of the cooldown per failed probe.
        max_cooldown: Longest cooldown (at least ``cooldown``).
        errors: The error classes (`Outcome` values) that count as failures.
        overrides: The settings the row's ``config["breaker"]`` sets.
    """

    threshold: int
    window: Window | None
    cooldown: float
    multiplier: float
    max_cooldown: float
    errors: frozenset[str]
    overrides: tuple[str, ...] = ()

    def cooldown_for(self, trips: int) -> float:
        """Return the cooldown after the breaker opened ``trips`` times in a row."""
        grown = self.cooldown * self.multiplier ** max(trips - 1, 0)
        return min(grown, max(self.max_cooldown, self.cooldown))

    def describe(self) -> dict[str, Any]:
        """Return the rule as the health views show it (JSON-serializable)."""
        window = self.window
        return {
            "failure_threshold": self.threshold,
            "failure_rate": None if window is None else window.rate,
            "min_calls": None if window is None else window.min_calls,
            "window": None if window is None else window.seconds,
            "cooldown": self.cooldown,
            "errors": [e for e in ERROR_CLASSES if e in self.errors],
            "overrides": list(self.overrides),
        }


@dataclass(frozen=True, kw_only=True)
class FallbackPolicy:
    """How hard to try each candidate, and when to stop trying one for a while.

    Attributes:
        attempts: Attempts per candidate for transient errors (429, 5xx, timeouts); clients
            do not retry, so a call makes at most ``attempts * candidates`` requests.
        deadline: Seconds for the whole call: no new attempt starts after it.
        backoff_initial: First wait between attempts of one candidate, in seconds.
        backoff_max: Longest wait between attempts, and longest ``Retry-After`` honoured.
        backoff_jitter: Random seconds added to each wait.
        failure_threshold: Consecutive failures that open a candidate's circuit breaker.
        failure_rate: The failed share (0-1) of a candidate's calls in the last ``window``
            seconds that opens its breaker, once it made ``min_calls``; ``None``: off.
        min_calls: Calls in the window before ``failure_rate`` may open the breaker.
        window: Seconds of the failure-rate window.
        breaker_errors: The error classes that count as failures: ``"retry"`` (429, 5xx,
            timeouts), ``"fallback"`` (401/403, 404, bad request).
        cooldown: Seconds an opened breaker skips its candidate.
        cooldown_multiplier: Growth of the cooldown each time a half-open probe fails.
        max_cooldown: Longest cooldown, and longest ``Retry-After`` a breaker honours.
        classify: Error -> `Outcome`; `classify_error` by default.
        observers: `llmpool.observe.Observer` objects, told after the built-in ones.
        ttft_timeout: Seconds a stream may take to its first content before it falls back
            (a row's ``config`` and a call's keyword override it; ``None``: no limit).
        stall_timeout: Seconds a stream may pause between two chunks: before its first
            content it falls back, after it `llmpool.MidStreamError` (``None``: no limit).
        reject: The built-in verdicts an answer must pass (`llmpool.fallback.verdicts`):
            ``"empty"`` and ``"content_filter"`` by default, ``"invalid_structured"`` on request.
        accept: The caller's predicate: answer message -> keep it (falsy: fall back); a call's
            ``accept=`` keyword replaces it.

    Example:
        >>> FallbackPolicy(attempts=3, cooldown=10).attempts
        3
    """

    attempts: int = 2
    deadline: float | None = 120.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0
    backoff_jitter: float = 0.1
    failure_threshold: int = 3
    failure_rate: float | None = 0.5
    min_calls: int = 10
    window: float = 60.0
    breaker_errors: tuple[str, ...] = ERROR_CLASSES
    cooldown: float = 30.0
    cooldown_multiplier: float = 2.0
    max_cooldown: float = 600.0
    classify: Callable[[BaseException], Outcome] = field(default=classify_error, repr=False)
    observers: Sequence[Any] = field(default=(), repr=False, compare=False)
    _rules: dict[str, BreakerRule] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    ttft_timeout: float | None = None
    stall_timeout: float | None = None
    reject: AbstractSet[str] = DEFAULT_REJECT
    accept: Judge | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.observers, tuple):
            object.__setattr__(self, "observers", tuple(self.observers))
        if self.reject is not DEFAULT_REJECT:
            object.__setattr__(self, "reject", check_reject(self.reject, "FallbackPolicy.reject"))
        if self.attempts < 1:
            msg = f"FallbackPolicy.attempts must be at least 1, got {self.attempts}"
            raise ValueError(msg)
        if self.failure_threshold < 1:
            msg = "FallbackPolicy.failure_threshold must be at least 1"
            raise ValueError(msg)
        if self.failure_rate is not None and not 0 < self.failure_rate <= 1:
            msg = f"FallbackPolicy.failure_rate must be in (0, 1], got {self.failure_rate}"
            raise ValueError(msg)
        if self.min_calls < 1 or self.window <= 0:
            msg = "FallbackPolicy.min_calls must be at least 1 and window above 0"
            raise ValueError(msg)
        unknown = set(self.breaker_errors) - set(ERROR_CLASSES)
        if unknown:
            msg = f"FallbackPolicy.breaker_errors: unknown {sorted(unknown)}; use {ERROR_CLASSES}"
            raise ValueError(msg)
        for name in ("ttft_timeout", "stall_timeout"):
            value = getattr(self, name)
            problem = None if value is None else check_seconds(value)
            if problem is not None:
                msg = f"FallbackPolicy.{name} {problem}"
                raise ValueError(msg)

    @cached_property
    def hooks(self) -> Hooks:
        """The built-in observers and ``observers``, made on first use (never at import)."""
        from llmpool.observe.hooks import Hooks, builtin_observers

        return Hooks((*builtin_observers(), *self.observers))

    @cached_property
    def judging(self) -> bool:
        """Whether an answer may be refused (`llmpool.fallback.verdicts`): a verdict in
        ``reject``, or ``accept``."""
        return bool(self.reject) or self.accept is not None

    @cached_property
    def whole(self) -> bool:
        """Whether a stream is held back to its end: a verdict needs the whole answer."""
        return self.accept is not None or "invalid_structured" in self.reject

    def retry_delay(
        self, attempt_number: int, error: BaseException, time_left: float | None = None
    ) -> float | None:
        """Return seconds to wait before retrying attempt ``attempt_number`` (from 1), or
        ``None`` to fall back now: a ``Retry-After`` over ``backoff_max``, or a wait past
        ``time_left`` (retrying earlier than asked only earns another 429).

        Example:
            >>> FallbackPolicy(backoff_jitter=0).retry_delay(1, TimeoutError())
            0.25
        """
        delay = self._backoff(attempt_number)
        hinted = retry_after(error)
        if hinted is not None:
            if hinted > self.backoff_max:
                return None
            delay = max(delay, hinted)
        if time_left is not None and delay >= time_left:
            return None
        return delay

    def _backoff(self, attempt_number: int) -> float:
        from tenacity import RetryCallState
        from tenacity.wait import wait_exponential_jitter  # tenacity 8.2 does not re-export it

        strategy = wait_exponential_jitter(
            initial=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_jitter
        )
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt_number
        return float(strategy(state))

    def cooldown_for(self, trips: int) -> float:
        """Return the cooldown after the breaker opened ``trips`` times in a row."""
        grown = self.cooldown * self.cooldown_multiplier ** max(trips - 1, 0)
        return min(grown, self.max_cooldown)

    def breaker_rule(self, candidate: Candidate) -> BreakerRule:
        """Return the breaker policy of ``candidate``'s row: this policy, with the row's
        ``config["breaker"]`` overrides (made once per row version).

        Raises:
            InvalidConfigError: The row's ``breaker`` object is invalid (naming the field).

        Example:
            >>> from llmpool.contracts import Candidate
            >>> from llmpool.models import LLMConfig
            >>> row = LLMConfig(id="1", name="A", provider="fake", model_name="m",
            ...                 config={"breaker": {"min_calls": 20}})
            >>> FallbackPolicy().breaker_rule(Candidate(row)).window
            Window(rate=0.5, min_calls=20, seconds=60.0)
        """
        key = candidate.key
        rule = self._rules.get(key)
        if rule is None:
            own = breaker_overrides(candidate.config)
            rate = own.get("failure_rate", self.failure_rate)
            window = (
                None
                if rate is None
                else Window(
                    rate, own.get("min_calls", self.min_calls), own.get("window", self.window)
                )
            )
            rule = BreakerRule(
                own.get("failure_threshold", self.failure_threshold),
                window,
                own.get("cooldown", self.cooldown),
                self.cooldown_multiplier,
                self.max_cooldown,
                frozenset(own.get("errors", self.breaker_errors)),
                tuple(own),
            )
            if len(self._rules) >= _MAX_RULES:  # rows edited many times: start over
                self._rules.clear()
            self._rules[key] = rule
        return rule


_MAX_RULES = 4096


def describe_error(error: BaseException) -> str:
    """Return a one-line description of an error, secret values redacted."""
    from llmpool.credentials.redaction import redact

    text = redact(str(error).strip())
    code = status_code(error)
    prefix = type(error).__name__ + (f" (HTTP {code})" if code else "")
    return f"{prefix}: {text.splitlines()[0][:300]}" if text else prefix
