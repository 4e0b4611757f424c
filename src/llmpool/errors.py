"""Every error llmpool raises, under one root.

Each message names the thing at fault (the row by name and id, the field, the environment
variable) and never a secret's value::

    LLMPoolError
    ├── InvalidConfigError (ValueError)         a row or a write failed validation
    │   ├── LiteralSecretError                  auth_meta holds a secret instead of a reference
    │   └── EnvNotAllowedError                  a reference outside the environment allowlist
    ├── ArgumentTooLongError (ValueError)       a lookup's text argument is longer than allowed
    ├── LLMNotFoundError (LookupError)          no row with that id (or name)
    │   ├── AmbiguousNameError                  a name held by several rows (scopes listed)
    │   └── WrongKindError                      a chat row asked for as embeddings, or back
    ├── NoDefaultLLMError (LookupError)         "No default LLM configured"
    │   └── InvalidDefaultLLMError (+ InvalidConfigError)   the default row fails validation
    ├── MixedSpacesError (ValueError)           an embedding chain would mix vector spaces
    ├── InvalidOptionError (ValueError)         a pool option cannot work as given (``option``)
    ├── ConflictError                           a write lost a race or broke a uniqueness rule
    ├── RollbackError                           the audit log cannot say what was at that point
    ├── DatabaseError                           the database failed or refused
    │   └── DatabaseUnavailableError            it could not be reached (password masked)
    ├── MigrationError                          a migration failed
    │   └── MigrationChecksumError              an applied migration file has changed
    ├── MissingSecretError                      a referenced variable or file is not set
    ├── ProviderError                           turning a row into a chat model failed
    │   ├── UnknownProviderError (LookupError)  no provider of that name
    │   ├── ProviderNotInstalledError (ImportError)   "pip install "llmpool[extra]""
    │   ├── ProviderLoadError                   a plugin raised while loading
    │   └── UnsupportedParameterError (ValueError)    config has a key the client rejects
    ├── AllLLMsFailedError (RuntimeError)       every candidate failed at runtime
    │   └── AllLLMsFailedToInitializeError      "All LLMs failed to initialize"
    ├── QuotaExceededError                      a tag's or scope's budget or rate limit is spent
    ├── MidStreamError                          a stream broke after chunks were emitted
    └── BadAnswerError                          an answer the caller cannot use (``verdict``)

Not-found errors subclass `LookupError`, never `KeyError`, whose message prints in quotes; text
from a caller or a row is cut to `MESSAGE_TEXT_LIMIT` characters in messages (`shorten`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

#: How many characters of a caller's or a row's text a message quotes before cutting it short.
MESSAGE_TEXT_LIMIT = 80

_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def shorten(text: str, limit: int = MESSAGE_TEXT_LIMIT) -> str:
    """Return ``text`` cut to ``limit`` characters, with ``…`` when something was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def visible(text: str) -> str:
    """Return ``text`` with its control characters (C0, DEL, C1) as escapes, so that a name
    holding a terminal escape sequence cannot write to the terminal of whoever reads it."""
    return text.translate(_CONTROL_ESCAPES)


def describe_row(name: str | None, llm_id: str | None) -> str:
    """Return how every message names a row (``LLM 'GPT-4' (id abc)``), shortened and escaped."""
    shown = f"LLM {shorten(name)!r}" if name else "LLM"
    if llm_id:
        llm_id = shorten(visible(llm_id))
        return f"{shown} (id {llm_id})" if name else f"LLM id {llm_id}"
    return shown if name else "LLM row"


class LLMPoolError(Exception):
    """Root of every error llmpool raises."""


class InvalidConfigError(LLMPoolError, ValueError):
    """A row, or a write to the table, failed validation; ``field`` is the field at fault."""

    def __init__(
        self,
        message: str,
        *,
        llm_name: str | None = None,
        llm_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.llm_name = llm_name
        self.llm_id = llm_id
        self.field = field


class LiteralSecretError(InvalidConfigError):
    """``auth_meta`` holds a secret value instead of an ``*_env`` / ``*_file`` reference."""


class EnvNotAllowedError(InvalidConfigError):
    """A row references an environment variable that the allowlist does not admit."""


class ArgumentTooLongError(LLMPoolError, ValueError):
    """A lookup's text argument (a scope, a search, an id, a name) is longer than any row holds."""

    def __init__(self, argument: str, value: str, limit: int) -> None:
        super().__init__(
            f"{argument} {shorten(value)!r} is {len(value)} characters long; "
            f"at most {limit} are allowed"
        )
        self.argument = argument
        self.length = len(value)
        self.limit = limit


class LLMNotFoundError(LLMPoolError, LookupError):
    """No row has the requested id (or name)."""


class AmbiguousNameError(LLMNotFoundError):
    """Several rows have the name asked for; ``candidates`` holds their ids."""

    def __init__(self, message: str, *, candidates: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class NoDefaultLLMError(LLMPoolError, LookupError):
    """The scope has no default row. The message starts "No default LLM configured"."""


class InvalidDefaultLLMError(NoDefaultLLMError, InvalidConfigError):
    """The scope's default row exists but fails validation: there is no usable default."""


class InvalidOptionError(LLMPoolError, ValueError):
    """A pool option (``option`` names it) cannot work with the rest of the configuration."""

    def __init__(self, message: str, *, option: str) -> None:
        super().__init__(message)
        self.option = option


class ConflictError(LLMPoolError):
    """A write broke a uniqueness rule (one default per scope, unique name) or lost a race."""


class RollbackError(LLMPoolError):
    """The audit log cannot say what the table held at the point asked for: no entry has that
    id, the time is before the first entry, or an entry since did not record the row."""


class DatabaseError(LLMPoolError):
    """The database failed or refused an operation. The URL's password is masked."""


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached within the connect timeout."""


class MigrationError(LLMPoolError):
    """A migration could not be applied."""


class MigrationChecksumError(MigrationError):
    """A migration file that was already applied has changed since."""


class MissingSecretError(LLMPoolError):
    """A referenced environment variable or secret file (``variable``) is not set."""

    def __init__(
        self, message: str, *, variable: str, llm_name: str | None = None, llm_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.variable = variable
        self.llm_name = llm_name
        self.llm_id = llm_id


class ProviderError(LLMPoolError):
    """Turning a row into a chat model failed."""


class UnknownProviderError(ProviderError, LookupError):
    """No provider is registered under that name (nor an alias of it)."""


class ProviderNotInstalledError(ProviderError, ImportError):
    """The provider's LangChain package is missing. The message names the ``pip install``."""


class ProviderLoadError(ProviderError):
    """A provider plugin raised while it was imported or built (from ``distribution``)."""

    def __init__(self, message: str, *, distribution: str | None = None) -> None:
        super().__init__(message)
        self.distribution = distribution


class UnsupportedParameterError(ProviderError, ValueError):
    """A row's ``config`` has a parameter the provider's client does not accept."""


@dataclass(frozen=True)
class CandidateFailure:
    """Why one candidate did not answer: ``reason`` in one line, free of secrets."""

    llm_id: str
    name: str
    provider: str
    reason: str
    error: BaseException | None = None


class AllLLMsFailedError(LLMPoolError, RuntimeError):
    """Every candidate failed; ``failures`` lists each and its error, in the order tried."""

    header = "All LLMs failed"

    def __init__(self, failures: Sequence[CandidateFailure], *, scope: str | None = None) -> None:
        lines = [f"{self.header} in scope {scope!r}:" if scope is not None else f"{self.header}:"]
        for index, failure in enumerate(failures, 1):
            row = describe_row(failure.name, failure.llm_id)
            reason = failure.reason  # without the row's name: the line starts with it
            if reason.startswith(f"{row}: "):
                reason = reason[len(row) + 2 :]
            else:
                reason = reason.replace(f": {row}: ", ": ", 1)
            lines.append(f"  {index}. {row} [{failure.provider}]: {reason}")
        if not failures:
            lines.append("  (no enabled LLMs in this scope)")
        super().__init__("\n".join(lines))
        self.failures = tuple(failures)
        self.scope = scope


class AllLLMsFailedToInitializeError(AllLLMsFailedError):
    """No candidate could be built (missing secret, missing package, bad config)."""

    header = "All LLMs failed to initialize"


class QuotaExceededError(LLMPoolError):
    """A call refused before any request: a quota (``kind`` ``"tag"`` or ``"scope"``, on
    ``target``) is spent. ``limit`` is ``"budget"``, ``"rpm"`` or ``"tpm"``; ``resets_at``
    when the quota admits calls again (UTC, ``None``: when a call in flight ends)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        target: str,
        limit: str,
        resets_at: datetime | None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.target = target
        self.limit = limit
        self.resets_at = resets_at


class MidStreamError(LLMPoolError):
    """A stream failed after emitting ``partial_text``; llmpool never switches model mid-answer."""

    def __init__(self, message: str, *, partial_text: str, llm_id: str, llm_name: str) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.llm_id = llm_id
        self.llm_name = llm_name


class BadAnswerError(LLMPoolError):
    """A candidate answered, but not usefully: ``verdict`` is ``"empty"``, ``"content_filter"``,
    ``"invalid_structured"`` or ``"accept"`` (the caller's predicate refused it). Raised inside
    an attempt, it falls back to the next candidate, and `AllLLMsFailedError` lists it."""

    def __init__(self, message: str, *, verdict: str, llm_id: str, llm_name: str) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.llm_id = llm_id
        self.llm_name = llm_name


class WrongKindError(LLMNotFoundError):
    """The row is of the other ``kind`` (an embedding row asked for as a chat model, or back);
    the message names the function to use instead."""

    def __init__(self, message: str, *, llm_id: str, kind: str) -> None:
        super().__init__(message)
        self.llm_id = llm_id
        self.kind = kind


class MixedSpacesError(LLMPoolError, ValueError):
    """An embedding chain would mix vector spaces; ``spaces`` maps each to its rows."""

    def __init__(self, message: str, *, spaces: Mapping[str, Sequence[str]]) -> None:
        super().__init__(message)
        self.spaces = {space: tuple(rows) for space, rows in spaces.items()}
