"""Frozen pydantic models of the ``llms`` table's rows (`LLMConfig`) and of its audit trail.

A row written by anyone (raw SQL included) must not stall or crash its readers, so every field
is bounded and checked first, JSON before ``json.loads`` sees it.
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

#: The most characters each text field holds (the columns' widths).
MAX_LENGTHS: Mapping[str, int] = MappingProxyType(
    {"id": 64, "name": 200, "provider": 100, "model_name": 200, "scope": 100, "space": 200}
)

#: The Unicode categories no name may hold: controls, format characters (zero-width joiners,
#: bidirectional overrides), lone surrogates, line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

#: The longest ``search`` a listing accepts: a part of a name or a model name.
MAX_SEARCH_LENGTH = 200

#: How deeply ``auth_meta`` and ``config`` may nest (the row's own object is level 1).
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


def _refusal(row: str, field: str, problem: str) -> InvalidConfigError:
    return InvalidConfigError(f"{row}: field {field!r} {problem}", field=field)


def check_argument(argument: str, value: object, limit: int) -> None:
    """Refuse a lookup's text argument longer than any row could hold, quoting its start only."""
    if isinstance(value, str) and len(value) > limit:
        raise ArgumentTooLongError(argument, value, limit)


def check_text(value: object, *, field: str, row: str) -> None:
    """Refuse a name holding a character of `REFUSED_CATEGORIES`, naming its code point."""
    if not isinstance(value, str) or value.isprintable():  # the fast path: nearly every name
        return
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            raise _refusal(
                row,
                field,
                f"holds the character U+{ord(char):04X} (Unicode category {category}) at "
                f"position {position}; names may not hold control, invisible format or line "
                "separator characters",
            )


def json_text_depth(text: str) -> int:
    """Return how deeply JSON text nests, without parsing it: linear in the text."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def parse_json_object(value: Any, *, field: str, row: str) -> Any:
    """Parse JSON text (or bytes) of an object, refusing text too long or too deep before it is
    parsed; pass anything else through."""
    if not isinstance(value, (str, bytes)):
        return value
    if len(value) > MAX_JSON_TEXT:
        size = f"is {len(value)} characters of JSON; at most {MAX_JSON_SIZE} are allowed"
        raise _refusal(row, field, size)
    text = value
    if isinstance(text, bytes):
        try:
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        except UnicodeDecodeError:
            problem = "is not valid JSON (not text in a Unicode encoding)"
            raise _refusal(row, field, problem) from None
    if json_text_depth(text) > MAX_JSON_DEPTH:
        raise _refusal(row, field, f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        parsed = json.loads(text)
    except RecursionError:  # the stack was already deep: the text itself is bounded
        raise _refusal(row, field, "nests too deeply to be read") from None
    except ValueError as exc:
        problem = f"is not valid JSON ({exc.__class__.__name__}: {exc})"
        raise _refusal(row, field, problem) from None
    if not isinstance(parsed, dict):
        raise _refusal(row, field, f"must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _check_json_bounds(value: Any, field: str) -> None:
    # Iterative, stopping at the first level past the limit (a structure may refer to itself).
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_SIZE:  # every value takes at least one character
            raise _refusal("LLM row", field, f"takes more than {MAX_JSON_SIZE} characters as JSON")
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise _refusal("LLM row", field, f"nests deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
    try:
        size = len(json.dumps(value, default=str))
    except (TypeError, ValueError):  # keys JSON cannot hold: refused by what writes the row
        return
    if size > MAX_JSON_SIZE:
        problem = f"takes {size} characters as JSON; at most {MAX_JSON_SIZE} are allowed"
        raise _refusal("LLM row", field, problem)


class LLMConfig(BaseModel):
    """One row of the ``llms`` table, validated and frozen; ``config["name"]`` works as well as
    ``config.name``. The README's table of columns says what each field means.

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

    #: The field names, in the order of the table's columns.
    FIELDS: ClassVar[tuple[str, ...]]

    id: str = Field(min_length=1, max_length=MAX_LENGTHS["id"])
    name: str = Field(min_length=1, max_length=MAX_LENGTHS["name"])
    provider: str = Field(min_length=1, max_length=MAX_LENGTHS["provider"])
    model_name: str = Field(min_length=1, max_length=MAX_LENGTHS["model_name"])
    scope: str = Field(default="global", min_length=1, max_length=MAX_LENGTHS["scope"])
    priority: StrictInt = Field(default=100, ge=-1_000_000, le=1_000_000)
    enabled: StrictBool = True
    is_default: StrictBool = False
    auth_meta: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: StrictInt = 1
    kind: Literal["chat", "embedding"] = "chat"
    space: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTHS["space"])
    weight: StrictInt = Field(default=1, ge=0, le=1_000_000)
    rpm: StrictInt | None = Field(default=None, gt=0, le=2**31 - 1)  # 32-bit integer columns
    tpm: StrictInt | None = Field(default=None, gt=0, le=2**31 - 1)

    @field_validator("auth_meta", "config", mode="before")
    @classmethod
    def _parse_json(cls, value: Any, info: Any) -> Any:
        # Before any other check: the secret checks walk every level of what passes here.
        value = parse_json_object(value, field=info.field_name, row="LLM row")
        _check_json_bounds(value, info.field_name)
        return value

    @field_validator("name", "provider", "model_name", "scope", "space", mode="before")
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

    @field_validator("auth_meta", "config", mode="after")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        (check_auth_meta if info.field_name == "auth_meta" else check_config)(value)
        return value

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, current: LLMConfig | None = None) -> LLMConfig:
        """Validate a mapping into a config, or raise an `InvalidConfigError` naming the row
        (``current``, for an update: as it is now) and the field, never a secret."""
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


LLMConfig.FIELDS = tuple(LLMConfig.model_fields)


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
    """A row that failed validation when it was read: its id, its name if readable, and why."""

    model_config = ConfigDict(frozen=True)

    llm_id: str
    name: str | None
    error: str


class AuditEntry(BaseModel):
    """One audit row: who (``actor``) made which change (``action``) to which row, when, with
    the row before and after (``None`` before a create, after a delete)."""

    model_config = ConfigDict(frozen=True)

    id: int
    llm_id: str
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime
