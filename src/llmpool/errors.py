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
    ├── ConflictError                           a write lost a race or broke a uniqueness rule
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
    └── MidStreamError                          a stream broke after chunks were emitted

Not-found errors subclass `LookupError`, never `KeyError`, whose message prints in quotes.
Text that came from a caller or from a row (a name, an id, a scope) is shortened in messages to
`MESSAGE_TEXT_LIMIT` characters (`shorten`): a 10 MB name never makes a 10 MB error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "MESSAGE_TEXT_LIMIT",
    "AllLLMsFailedError",
    "ArgumentTooLongError",
    "AllLLMsFailedToInitializeError",
    "AmbiguousNameError",
    "CandidateFailure",
    "ConflictError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EnvNotAllowedError",
    "InvalidConfigError",
    "InvalidDefaultLLMError",
    "LLMNotFoundError",
    "LLMPoolError",
    "LiteralSecretError",
    "MixedSpacesError",
    "MidStreamError",
    "MigrationChecksumError",
    "MigrationError",
    "MissingSecretError",
    "NoDefaultLLMError",
    "ProviderError",
    "ProviderLoadError",
    "ProviderNotInstalledError",
    "UnknownProviderError",
    "UnsupportedParameterError",
    "WrongKindError",
    "describe_row",
    "shorten",
    "visible",
]

#: How many characters of a caller's or a row's text a message quotes before cutting it short.
MESSAGE_TEXT_LIMIT = 80


def shorten(text: str, limit: int = MESSAGE_TEXT_LIMIT) -> str:
    """Return ``text`` cut to ``limit`` characters, with ``…`` when something was cut.

    Args:
        text: Text to quote in a message.
        limit: The most characters kept.

    Returns:
        ``text`` itself when it is short enough, else its first ``limit`` characters and ``…``.

    Example:
        >>> shorten("GPT-4"), shorten("x" * 100, 5)
        ('GPT-4', 'xxxxx…')
    """
    return text if len(text) <= limit else text[:limit] + "…"


def _control_escapes() -> dict[int, str]:
    codes = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
    table = {code: f"\\x{code:02x}" for code in codes}
    table.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})
    return table


_CONTROL_ESCAPES = _control_escapes()


def visible(text: str) -> str:
    """Return ``text`` with its control characters (C0, DEL, C1) written as visible escapes.

    A name holding a terminal escape sequence must not recolour, move or clear the terminal of
    whoever reads a message or a table: ``ESC`` prints as ``\\x1b``, a tab as ``\\t``.

    Args:
        text: Text from a row or a caller.

    Returns:
        The same text, each control character replaced by its escape.

    Example:
        >>> visible("\\x1b[2Jname\\tx")
        '\\\\x1b[2Jname\\\\tx'
    """
    return text.translate(_CONTROL_ESCAPES)


def describe_row(name: str | None, llm_id: str | None) -> str:
    """Return the way every message names a row: ``LLM 'GPT-4' (id abc-123)``.

    The name and the id are shortened (`shorten`); the name is quoted with ``repr`` and the id
    has its control characters escaped (`visible`), so neither can write to the terminal.

    Args:
        name: The row's name, if known.
        llm_id: The row's id, if known.

    Returns:
        A short human description of the row.

    Example:
        >>> describe_row("GPT-4", "abc")
        "LLM 'GPT-4' (id abc)"
        >>> describe_row("\\x1b[31mred", None)
        "LLM '\\\\x1b[31mred'"
    """
    if name:
        name = shorten(name)
    if llm_id:
        llm_id = shorten(visible(llm_id))
    if name and llm_id:
        return f"LLM {name!r} (id {llm_id})"
    if name:
        return f"LLM {name!r}"
    if llm_id:
        return f"LLM id {llm_id}"
    return "LLM row"


class LLMPoolError(Exception):
    """Root of every error llmpool raises."""


class InvalidConfigError(LLMPoolError, ValueError):
    """A row, or a write to the table, failed validation.

    Attributes:
        llm_name: The row's name, when known.
        llm_id: The row's id, when known.
        field: The field at fault (``priority``, ``auth_meta.api_key``, ...), when known.
    """

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
    """A text argument of a lookup (a scope, a search, an id, a name) is longer than allowed.

    Nothing is looked up: no row can hold such a value. The message quotes the argument's
    first characters only.

    Attributes:
        argument: The argument at fault (``scope``, ``search``, ``llm_id``, ...).
        length: Its length, in characters.
        limit: The most characters it may have.
    """

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
    """Several rows have the name asked for; the message lists each by scope and id.

    Attributes:
        candidates: The ids of the rows that have the name.
    """

    def __init__(self, message: str, *, candidates: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class NoDefaultLLMError(LLMPoolError, LookupError):
    """The scope has no default row. The message starts "No default LLM configured"."""


class InvalidDefaultLLMError(NoDefaultLLMError, InvalidConfigError):
    """The scope's default row exists but fails validation; the message names it by name and id.

    It is a `NoDefaultLLMError` (there is no usable default) and an `InvalidConfigError` (naming
    the row and the field), so code written for either keeps working.
    """


class ConflictError(LLMPoolError):
    """A write broke a uniqueness rule (one default per scope, unique name) or lost a race."""


class DatabaseError(LLMPoolError):
    """The database failed or refused an operation. The URL's password is masked."""


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached within the connect timeout."""


class MigrationError(LLMPoolError):
    """A migration could not be applied."""


class MigrationChecksumError(MigrationError):
    """A migration file that was already applied has changed since."""


class MissingSecretError(LLMPoolError):
    """A referenced environment variable or secret file is not set.

    Attributes:
        variable: The environment variable (or file path) that was looked up.
        llm_name: The row's name.
        llm_id: The row's id.
    """

    def __init__(
        self,
        message: str,
        *,
        variable: str,
        llm_name: str | None = None,
        llm_id: str | None = None,
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
    """A provider plugin raised while it was imported or built.

    Attributes:
        distribution: The installed distribution that declared the entry point, when known.
    """

    def __init__(self, message: str, *, distribution: str | None = None) -> None:
        super().__init__(message)
        self.distribution = distribution


class UnsupportedParameterError(ProviderError, ValueError):
    """A row's ``config`` has a parameter the provider's client does not accept."""


@dataclass(frozen=True)
class CandidateFailure:
    """Why one candidate did not answer.

    Attributes:
        llm_id: The row's id.
        name: The row's name.
        provider: The row's provider.
        reason: A one-line description of the failure, free of secrets.
        error: The original exception, if any.
    """

    llm_id: str
    name: str
    provider: str
    reason: str
    error: BaseException | None = None


def _without_row(reason: str, row: str) -> str:
    """Return ``reason`` without the row's own name, which the line already starts with.

    Example:
        >>> _without_row("MissingSecretError: LLM 'a' (id 1): OPENAI_API_KEY is not set",
        ...              "LLM 'a' (id 1)")
        'MissingSecretError: OPENAI_API_KEY is not set'
    """
    if reason.startswith(f"{row}: "):
        return reason[len(row) + 2 :]
    return reason.replace(f": {row}: ", ": ", 1)


def _format_failures(header: str, failures: Sequence[CandidateFailure]) -> str:
    lines = [header]
    for index, failure in enumerate(failures, 1):
        row = describe_row(failure.name, failure.llm_id)
        lines.append(f"  {index}. {row} [{failure.provider}]: {_without_row(failure.reason, row)}")
    if not failures:
        lines.append("  (no enabled LLMs in this scope)")
    return "\n".join(lines)


class AllLLMsFailedError(LLMPoolError, RuntimeError):
    """Every candidate failed. The message lists each candidate and its error, in order.

    Attributes:
        failures: One entry per candidate, in the order they were tried.
    """

    header = "All LLMs failed"

    def __init__(self, failures: Sequence[CandidateFailure], *, scope: str | None = None) -> None:
        where = f" in scope {scope!r}" if scope is not None else ""
        super().__init__(_format_failures(f"{self.header}{where}:", failures))
        self.failures = tuple(failures)
        self.scope = scope


class AllLLMsFailedToInitializeError(AllLLMsFailedError):
    """No candidate could be built (missing secret, missing package, bad config)."""

    header = "All LLMs failed to initialize"


class MidStreamError(LLMPoolError):
    """A stream failed after it had emitted chunks; llmpool never switches model mid-answer.

    Attributes:
        partial_text: The text emitted before the failure.
        llm_id: The row that was streaming.
        llm_name: Its name.
    """

    def __init__(self, message: str, *, partial_text: str, llm_id: str, llm_name: str) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.llm_id = llm_id
        self.llm_name = llm_name


class WrongKindError(LLMNotFoundError):
    """The row asked for is of another kind: an embedding row given to a chat function, or
    a chat row given to an embedding function. The message names the row and the function to
    use instead.

    Attributes:
        llm_id: The row.
        kind: Its kind (``"chat"`` or ``"embedding"``).
    """

    def __init__(self, message: str, *, llm_id: str, kind: str) -> None:
        super().__init__(message)
        self.llm_id = llm_id
        self.kind = kind


class MixedSpacesError(LLMPoolError, ValueError):
    """A fallback chain of embedding rows would cross between vector spaces.

    Vectors of two spaces cannot share an index: the chain is refused, naming every row with
    its space, instead of writing vectors of another model into the same index.

    Attributes:
        spaces: Space label -> the rows (``LLM 'name' (id ...)``) declaring it.
    """

    def __init__(self, message: str, *, spaces: Mapping[str, Sequence[str]]) -> None:
        super().__init__(message)
        self.spaces = {space: tuple(rows) for space, rows in spaces.items()}
