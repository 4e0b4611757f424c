"""Frozen pydantic models for rows of the ``llms`` table and their audit trail.

`LLMConfig` is one validated row. It indexes like a dict (``config["name"]``) as well as
like an object (``config.name``), because the seed's examples do both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from llmpool.errors import InvalidConfigError, describe_row

# Re-exported: the secret rules lived here before they had a module of their own.
from llmpool.secret_checks import (
    REFERENCE_SUFFIXES,
    SECRET_WORDS,
    check_auth_meta,
    check_config,
)

__all__ = [
    "AuditEntry",
    "BadRow",
    "LLMConfig",
    "REFERENCE_SUFFIXES",
    "SECRET_WORDS",
    "check_auth_meta",
    "check_config",
    "parse_json_object",
]


def parse_json_object(value: Any, *, field: str, row: str) -> Any:
    """Parse ``value`` as a JSON object when it is a string; pass anything else through.

    Args:
        value: A mapping, or JSON text of an object.
        field: The field being parsed, for the error message.
        row: How the row is named in the error message.

    Returns:
        The parsed object, or ``value`` unchanged when it is not a string.

    Raises:
        InvalidConfigError: ``value`` is malformed JSON or JSON of something other than an object.

    Example:
        >>> parse_json_object('{"temperature": 0.2}', field="config", row="LLM 'x'")
        {'temperature': 0.2}
    """
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
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
        priority: Lower is tried first; ties are broken by name, then id.
        enabled: Whether the row takes part in fallback chains.
        is_default: At most one default per scope.
        auth_meta: Environment-variable (``*_env``) and secret-file (``*_file``) references.
        config: Model parameters handed to the client (temperature, max_tokens, timeout, ...).
        created_at: When the row was created.
        updated_at: When the row last changed.
        version: Incremented on every change; caches key on ``(id, version)``.

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
    )

    id: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    provider: str = Field(min_length=1, max_length=100)
    model_name: str = Field(min_length=1, max_length=200)
    scope: str = Field(default="global", min_length=1, max_length=100)
    priority: StrictInt = 100
    enabled: StrictBool = True
    is_default: StrictBool = False
    auth_meta: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: StrictInt = 1

    @field_validator("auth_meta", "config", mode="before")
    @classmethod
    def _parse_json(cls, value: Any, info: Any) -> Any:
        return parse_json_object(value, field=info.field_name, row="LLM row")

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


def _from_validation_error(
    exc: ValidationError, where: str, name: str | None, llm_id: str | None
) -> InvalidConfigError:
    problems: list[str] = []
    first_field: str | None = None
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "row"
        first_field = first_field or field
        problems.append(f"field {field!r}: {error['msg']}")
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, InvalidConfigError):
            return _renamed(ctx_error, where, name, llm_id)
    msg = f"{where} is invalid: " + "; ".join(problems)
    return InvalidConfigError(msg, llm_name=name, llm_id=llm_id, field=first_field)


class BadRow(BaseModel):
    """A row in the table that failed validation when it was read.

    Attributes:
        llm_id: The row's id as stored.
        name: The row's name as stored, if readable.
        error: Why it was refused, naming the field; never a secret's value.
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
