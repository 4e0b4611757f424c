"""Frozen pydantic models for rows of the ``llms`` table and their audit trail.

`LLMConfig` is one validated row. It indexes like a dict (``config["name"]``) as well as
like an object (``config.name``), because the seed's examples do both.

Whoever can write a row (raw SQL included) must not be able to stall or crash the readers, so
every field is bounded, and checked before anything else looks at it:

- text fields: `MAX_LENGTHS` characters (``name`` 200, ``provider`` 100, ``model_name`` 200,
  ``scope`` 100, ``id`` 64), and no character of the Unicode categories `REFUSED_CATEGORIES`
  (controls, invisible format characters such as bidirectional overrides and zero-width
  joiners, lone surrogates, line and paragraph separators): a name is what an admin reads and
  types, and what the stores match rows by, so it holds nothing invisible (`check_text`);
- ``priority``: `MIN_PRIORITY` to `MAX_PRIORITY` (-1,000,000 to 1,000,000);
- ``auth_meta`` and ``config``: nested at most `MAX_JSON_DEPTH` (32) levels and at most
  `MAX_JSON_SIZE` (64 KiB) as JSON text. JSON text is measured before it is parsed: its
  nesting depth by a linear scan, its length against `MAX_JSON_TEXT`, so ``json.loads`` never
  sees 100,000 levels of brackets.

Lookups refuse text arguments no row could hold (`check_argument`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import datetime
from itertools import accumulate
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from llmpool.credentials.checks import check_auth_meta, check_config
from llmpool.errors import ArgumentTooLongError, InvalidConfigError, describe_row, shorten

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_SIZE",
    "MAX_JSON_TEXT",
    "MAX_LENGTHS",
    "MAX_PRIORITY",
    "MAX_RATE",
    "MAX_SEARCH_LENGTH",
    "MAX_WEIGHT",
    "MIN_PRIORITY",
    "REFUSED_CATEGORIES",
    "TEXT_FIELDS",
    "AuditEntry",
    "BadRow",
    "LLMConfig",
    "check_argument",
    "check_json_bounds",
    "check_json_text",
    "check_text",
    "json_text_depth",
    "parse_json_object",
]

#: The most characters each text field holds (the columns' widths); lookups by these fields
#: refuse longer arguments.
MAX_LENGTHS: Mapping[str, int] = MappingProxyType(
    {"id": 64, "name": 200, "provider": 100, "model_name": 200, "scope": 100, "space": 200}
)

#: The text fields that name things (`check_text`): ``kind`` is one of two words, ``id`` a key.
TEXT_FIELDS = ("name", "provider", "model_name", "scope", "space")

#: The Unicode categories no name may hold: controls (Cc: C0, DEL, C1, tab and newline
#: included), format characters (Cf: zero-width joiners and spaces, bidirectional overrides,
#: soft hyphens), lone surrogates (Cs), line and paragraph separators (Zl, Zp). Spaces, the
#: no-break space included, are allowed; private-use and unassigned characters too.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

#: The longest ``search`` a listing accepts: a part of a name or a model name.
MAX_SEARCH_LENGTH = 200

#: The largest ``weight`` of a row.
MAX_WEIGHT = 1_000_000

#: The largest ``rpm`` or ``tpm`` of a row (the columns are 32-bit integers).
MAX_RATE = 2_147_483_647

#: The range of ``priority``: far beyond any real chain, well inside every integer column.
MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000

#: How deeply ``auth_meta`` and ``config`` may nest objects and lists (the row's own object is
#: level 1). Model parameters nest a few levels; the secret checks walk every level.
MAX_JSON_DEPTH = 32

#: The most characters ``auth_meta`` and ``config`` may take as JSON text (``json.dumps``).
MAX_JSON_SIZE = 64 * 1024

#: JSON text longer than this is refused before it is parsed (room for indentation).
MAX_JSON_TEXT = 4 * MAX_JSON_SIZE

# A JSON string, closing quote optional so that an unterminated one still matches in one pass
# (no retry from every later quote): each character is consumed exactly once.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def check_argument(argument: str, value: object, limit: int) -> None:
    """Refuse a lookup's text argument longer than any row could hold.

    Args:
        argument: The argument's name, for the message (``scope``, ``llm_id``, ...).
        value: The argument; anything but a string is left to the lookup.
        limit: The most characters allowed (see `MAX_LENGTHS`).

    Raises:
        ArgumentTooLongError: ``value`` is longer than ``limit``; the message quotes its
            first characters only.

    Example:
        >>> check_argument("scope", "global", MAX_LENGTHS["scope"])
        >>> check_argument("scope", "x" * 101, MAX_LENGTHS["scope"])
        Traceback (most recent call last):
        ...
        llmpool.errors.ArgumentTooLongError: scope 'xxx...' is 101 characters long; at most 100 ...
    """
    if isinstance(value, str) and len(value) > limit:
        raise ArgumentTooLongError(argument, value, limit)


def check_text(value: object, *, field: str, row: str) -> None:
    """Refuse a name, scope, provider or model name holding an invisible or control character.

    Args:
        value: The value; anything but a string is left to the field's own validation.
        field: The field, for the message.
        row: How the row (or the write) is named in the message.

    Raises:
        InvalidConfigError: ``value`` holds a character of `REFUSED_CATEGORIES`; the message
            names the field, the character's code point and its position, never the value.

    Example:
        >>> check_text("global", field="scope", row="LLM 'x'")
        >>> check_text("a\x1fb", field="scope", row="LLM 'x'")
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: LLM 'x': field 'scope' holds the character U+001F ...
    """
    if not isinstance(value, str) or value.isprintable():  # the fast path: nearly every name
        return
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            msg = (
                f"{row}: field {field!r} holds the character U+{ord(char):04X} (Unicode "
                f"category {category}) at position {position}; names may not hold control, "
                "invisible format or line separator characters"
            )
            raise InvalidConfigError(msg, field=field)


def json_text_depth(text: str) -> int:
    """Return how deeply JSON text nests objects and lists, without parsing it.

    Linear in the text: strings are skipped in one pass, then the brackets are counted.

    Example:
        >>> json_text_depth('{"a": [1, {"b": "]]]"}]}'), json_text_depth("3")
        (3, 0)
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def check_json_text(text: str | bytes, *, field: str, row: str) -> str:
    """Refuse JSON text too long or too deep to be parsed safely; return it as ``str``.

    Args:
        text: JSON text, as ``str`` or as bytes in any encoding ``json.loads`` reads.
        field: The field, for the message.
        row: How the row is named in the message.

    Raises:
        InvalidConfigError: The text is longer than `MAX_JSON_TEXT`, or nests deeper than
            `MAX_JSON_DEPTH`.

    Example:
        >>> check_json_text("[" * 100_000, field="config", row="LLM 'x'")
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: LLM 'x': field 'config' nests deeper than 32 levels
    """
    if len(text) > MAX_JSON_TEXT:
        msg = (
            f"{row}: field {field!r} is {len(text)} characters of JSON; "
            f"at most {MAX_JSON_SIZE} are allowed"
        )
        raise InvalidConfigError(msg, field=field)
    if isinstance(text, bytes):
        try:
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        except UnicodeDecodeError:
            msg = f"{row}: field {field!r} is not valid JSON (not text in a Unicode encoding)"
            raise InvalidConfigError(msg, field=field) from None
    if json_text_depth(text) > MAX_JSON_DEPTH:
        msg = f"{row}: field {field!r} nests deeper than {MAX_JSON_DEPTH} levels"
        raise InvalidConfigError(msg, field=field)
    return text


def check_json_bounds(value: Any, *, field: str, row: str) -> None:
    """Refuse a parsed ``auth_meta`` or ``config`` nested too deeply or too big as JSON.

    The walk is iterative and stops at the first level past the limit, so a structure nested
    100,000 deep (or referring to itself) costs no more than one 33 deep.

    Args:
        value: The parsed value (objects, lists and scalars).
        field: The field, for the message.
        row: How the row is named in the message.

    Raises:
        InvalidConfigError: It nests deeper than `MAX_JSON_DEPTH` levels, or takes more than
            `MAX_JSON_SIZE` characters as JSON text.

    Example:
        >>> check_json_bounds({"temperature": 0.2}, field="config", row="LLM 'x'")
        >>> check_json_bounds({"pad": "x" * 70_000}, field="config", row="LLM 'x'")
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: LLM 'x': field 'config' takes 70011 characters ...
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_SIZE:  # every value takes at least one character
            msg = f"{row}: field {field!r} takes more than {MAX_JSON_SIZE} characters as JSON"
            raise InvalidConfigError(msg, field=field)
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            msg = f"{row}: field {field!r} nests deeper than {MAX_JSON_DEPTH} levels"
            raise InvalidConfigError(msg, field=field)
        stack.extend((child, depth + 1) for child in children)
    try:
        size = len(json.dumps(value, default=str))
    except (TypeError, ValueError):  # keys JSON cannot hold: refused by what writes the row
        return
    if size > MAX_JSON_SIZE:
        msg = (
            f"{row}: field {field!r} takes {size} characters as JSON; "
            f"at most {MAX_JSON_SIZE} are allowed"
        )
        raise InvalidConfigError(msg, field=field)


def parse_json_object(value: Any, *, field: str, row: str) -> Any:
    """Parse ``value`` as a JSON object when it is a string; pass anything else through.

    Args:
        value: A mapping, or JSON text of an object.
        field: The field being parsed, for the error message.
        row: How the row is named in the error message.

    Returns:
        The parsed object, or ``value`` unchanged when it is not a string.

    Raises:
        InvalidConfigError: ``value`` is malformed JSON, JSON of something other than an object,
            or too long or too deeply nested to parse (`check_json_text`).

    Example:
        >>> parse_json_object('{"temperature": 0.2}', field="config", row="LLM 'x'")
        {'temperature': 0.2}
    """
    if isinstance(value, (str, bytes)):
        text = check_json_text(value, field=field, row=row)
        try:
            value = json.loads(text)
        except RecursionError:  # the stack was already deep: the text itself is bounded
            msg = f"{row}: field {field!r} nests too deeply to be read"
            raise InvalidConfigError(msg, field=field) from None
        except ValueError as exc:
            msg = f"{row}: field {field!r} is not valid JSON ({exc.__class__.__name__}: {exc})"
            raise InvalidConfigError(msg, field=field) from None
        if not isinstance(value, dict):
            msg = f"{row}: field {field!r} must be a JSON object, got {type(value).__name__}"
            raise InvalidConfigError(msg, field=field)
    return value


class LLMConfig(BaseModel):
    """One row of the ``llms`` table, validated and frozen.

    Attributes:
        id: UUID primary key, as a string.
        name: Human name, unique within a scope.
        provider: A provider registry name (``openai``, ``anthropic``, a plugin's, ...).
        model_name: The provider's model id.
        scope: Defaults and fallback chains are per scope.
        priority: Lower is tried first; ties are broken by name, then id. From `MIN_PRIORITY`
            to `MAX_PRIORITY` (-1,000,000 to 1,000,000).
        enabled: Whether the row takes part in fallback chains.
        is_default: At most one default per scope and kind.
        auth_meta: Environment-variable (``*_env``) and secret-file (``*_file``) references.
        config: Model parameters handed to the client (temperature, max_tokens, timeout, ...).
            ``auth_meta`` and ``config`` nest at most `MAX_JSON_DEPTH` (32) levels and take at
            most `MAX_JSON_SIZE` (64 KiB) as JSON; text fields are at most `MAX_LENGTHS` long.
        created_at: When the row was created.
        updated_at: When the row last changed.
        version: Incremented on every change; caches key on ``(id, version)``.
        kind: ``"chat"`` (the default) or ``"embedding"``: chat functions see only chat rows,
            embedding functions only embedding rows; defaults are per scope and kind.
        space: An embedding row's vector space label, for rows of different model names that
            produce the same vectors (two deployments of one model); ``None``: the space is
            the model name and ``config["dimensions"]`` (`llmpool.embeddings.space_of`).
        weight: The row's share of calls among rows of equal priority when its scope routes
            ``weighted`` (0 to `MAX_WEIGHT`; 0 only as a fallback); default 1.
        rpm: Requests per minute the row takes at most (``None``: no limit); a row at its
            limit is skipped before any network call.
        tpm: Tokens per minute (input and output) the row takes at most (``None``: no limit).

    Example:
        >>> cfg = LLMConfig(id="1", name="GPT-4", provider="openai", model_name="gpt-4")
        >>> cfg["name"], cfg.priority
        ('GPT-4', 100)
    """

    # hide_input_in_errors: a ValidationError raised by the constructor would otherwise print
    # the refused input, which may be the very secret it refuses.
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, hide_input_in_errors=True
    )

    FIELDS: ClassVar[tuple[str, ...]] = (
        "id",
        "name",
        "provider",
        "model_name",
        "scope",
        "priority",
        "enabled",
        "is_default",
        "auth_meta",
        "config",
        "created_at",
        "updated_at",
        "version",
        "kind",
        "space",
        "weight",
        "rpm",
        "tpm",
    )

    id: str = Field(min_length=1, max_length=MAX_LENGTHS["id"])
    name: str = Field(min_length=1, max_length=MAX_LENGTHS["name"])
    provider: str = Field(min_length=1, max_length=MAX_LENGTHS["provider"])
    model_name: str = Field(min_length=1, max_length=MAX_LENGTHS["model_name"])
    scope: str = Field(default="global", min_length=1, max_length=MAX_LENGTHS["scope"])
    priority: StrictInt = Field(default=100, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    enabled: StrictBool = True
    is_default: StrictBool = False
    auth_meta: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: StrictInt = 1
    kind: Literal["chat", "embedding"] = "chat"
    space: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTHS["space"])
    weight: StrictInt = Field(default=1, ge=0, le=MAX_WEIGHT)
    rpm: StrictInt | None = Field(default=None, gt=0, le=MAX_RATE)
    tpm: StrictInt | None = Field(default=None, gt=0, le=MAX_RATE)

    @field_validator("auth_meta", "config", mode="before")
    @classmethod
    def _parse_json(cls, value: Any, info: Any) -> Any:
        # Before any other check: the secret checks walk every level of what passes here.
        value = parse_json_object(value, field=info.field_name, row="LLM row")
        check_json_bounds(value, field=info.field_name, row="LLM row")
        return value

    @field_validator(*TEXT_FIELDS, mode="before")
    @classmethod
    def _no_invisible_characters(cls, value: Any, info: Any) -> Any:
        # Before whitespace is stripped: a stored "\x1fglobal" is not read as "global".
        check_text(value, field=info.field_name, row="LLM row")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _blank_space_is_none(cls, value: Any) -> Any:
        # An admin clears the label with "" (`llmpool edit ID --space ""`).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_meta", mode="after")
    @classmethod
    def _no_literal_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_auth_meta(value)
        return value

    @field_validator("config", mode="after")
    @classmethod
    def _no_credentials_in_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_config(value)
        return value

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, current: LLMConfig | None = None) -> LLMConfig:
        """Validate a mapping (a database row, a form) into a config.

        Args:
            row: Column name to value.
            current: For an update, the row as it is now: errors name it (its current name
                and id), never the new values, which may be the very thing that is wrong.

        Returns:
            The validated config.

        Raises:
            InvalidConfigError: A field is missing or invalid; the message names the row (name
                and id) and the field, never a secret.

        Example:
            >>> LLMConfig.from_row({"id": "1", "name": "x", "provider": "fake",
            ...                     "model_name": "m", "priority": 5}).priority
            5
        """
        name: str | None
        llm_id: str | None
        if current is not None:
            name, llm_id = current.name, current.id
        else:
            name = row.get("name") if isinstance(row.get("name"), str) else None
            llm_id = str(row["id"]) if row.get("id") is not None else None
        where = describe_row(name, llm_id)
        try:
            return cls.model_validate(dict(row))
        except InvalidConfigError as exc:
            raise _renamed(exc, where, name, llm_id) from None
        except ValidationError as exc:
            raise _from_validation_error(exc, where, name, llm_id) from None

    def __getitem__(self, key: str) -> Any:
        """Return a field by name, so the seed's ``llm_config['name']`` works."""
        if key not in self.FIELDS:
            msg = f"LLMConfig has no field {key!r}; fields: {', '.join(self.FIELDS)}"
            raise KeyError(msg)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Return a field by name, or ``default`` when there is no such field."""
        return getattr(self, key) if key in self.FIELDS else default

    def keys(self) -> Iterator[str]:
        """Iterate over the field names, as a mapping would."""
        return iter(self.FIELDS)

    def __contains__(self, key: object) -> bool:
        return key in self.FIELDS

    def describe(self) -> str:
        """Return how messages name this row: ``LLM 'GPT-4' (id abc)``."""
        return describe_row(self.name, self.id)


def _renamed(
    exc: InvalidConfigError, where: str, name: str | None, llm_id: str | None
) -> InvalidConfigError:
    text = str(exc).replace("LLM row", where, 1)
    return type(exc)(text, llm_name=name, llm_id=llm_id, field=exc.field)


# How many of a row's problems an error message lists.
_MAX_PROBLEMS = 5


def _from_validation_error(
    exc: ValidationError, where: str, name: str | None, llm_id: str | None
) -> InvalidConfigError:
    problems: list[str] = []
    first_field: str | None = None
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "row"
        first_field = first_field or field
        problems.append(f"field {shorten(field)!r}: {error['msg']}")
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, InvalidConfigError):
            return _renamed(ctx_error, where, name, llm_id)
    if len(problems) > _MAX_PROBLEMS:  # e.g. a mapping with thousands of unknown keys
        problems[_MAX_PROBLEMS:] = [f"and {len(problems) - _MAX_PROBLEMS} more"]
    msg = f"{where} is invalid: " + "; ".join(problems)
    return InvalidConfigError(msg, llm_name=name, llm_id=llm_id, field=first_field)


class BadRow(BaseModel):
    """A row in the table that failed validation when it was read.

    Attributes:
        llm_id: The row's id as stored (so that it can be addressed).
        name: The row's name as stored, if readable, cut to `MESSAGE_TEXT_LIMIT` characters
            (`llmpool.errors.shorten`).
        error: Why it was refused, naming the field and never a value; bounded in length.
    """

    model_config = ConfigDict(frozen=True)

    llm_id: str
    name: str | None
    error: str


class AuditEntry(BaseModel):
    """One audit row: who changed what, when, with the row before and after.

    Attributes:
        id: The audit row's id.
        llm_id: The row that changed.
        actor: Who made the change.
        action: ``create``, ``update``, ``delete``, ``enable``, ``disable``, ``set_default``.
        before: The row before the change (``None`` for ``create``).
        after: The row after the change (``None`` for ``delete``).
        at: When the change was committed.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    llm_id: str
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime
