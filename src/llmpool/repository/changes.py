"""The pure part of every write: turn a request into a validated row, before any I/O.

Both stores (SQL and in-memory) use these, so validation and its messages are the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError, describe_row
from llmpool.models import LLMConfig, parse_json_object

if TYPE_CHECKING:
    from llmpool.repository import ConfigValidator

__all__ = ["READ_ONLY_FIELDS", "as_id_list", "new_config", "updated_config"]

#: Fields a write may not set: the store manages them.
READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "version"})


def as_id_list(llm_ids: str | Sequence[str]) -> list[str]:
    """Return one id or many as a list, refusing an empty request.

    Example:
        >>> as_id_list("a"), as_id_list(["a", "b"])
        (['a'], ['a', 'b'])
    """
    ids = [llm_ids] if isinstance(llm_ids, str) else [str(i) for i in llm_ids]
    if not ids:
        msg = "No LLM ids given"
        raise InvalidConfigError(msg, field="id")
    return list(dict.fromkeys(ids))


def _parse_json_fields(values: dict[str, Any], row: str) -> None:
    for field in ("auth_meta", "config"):
        if field in values:
            values[field] = parse_json_object(values[field], field=field, row=row)


def _validate(values: Mapping[str, Any], validators: Sequence[ConfigValidator]) -> LLMConfig:
    config = LLMConfig.from_row(values)
    for validator in validators:
        validator(config)
    return config


def new_config(values: Mapping[str, Any], validators: Sequence[ConfigValidator] = ()) -> LLMConfig:
    """Validate a new row; generate its id and timestamps.

    Args:
        values: Column values; ``id`` is generated when absent.
        validators: Extra checks (for example the environment allowlist).

    Returns:
        The validated row.

    Raises:
        InvalidConfigError: A field is missing or invalid (the message names row and field).
    """
    data = dict(values)
    name = data.get("name") if isinstance(data.get("name"), str) else None
    unknown = set(data) - set(LLMConfig.FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        msg = f"{describe_row(name, None)}: unknown field {field!r}"
        raise InvalidConfigError(msg, llm_name=name, field=field)
    _parse_json_fields(data, describe_row(name, data.get("id")))
    now = datetime.now(timezone.utc)
    data["id"] = str(data.get("id") or uuid.uuid4())
    data["created_at"] = now
    data["updated_at"] = now
    data["version"] = 1
    return _validate(data, validators)


def updated_config(
    current: LLMConfig,
    changes: Mapping[str, Any],
    validators: Sequence[ConfigValidator] = (),
) -> LLMConfig:
    """Validate a partial update of ``current``.

    Args:
        current: The row as it is.
        changes: The fields to change.
        validators: Extra checks.

    Returns:
        The row as it will be (the store sets ``version`` and ``updated_at``).

    Raises:
        InvalidConfigError: A field is read-only, unknown or invalid.
    """
    where = current.describe()
    data = dict(changes)
    for field in data:
        if field in READ_ONLY_FIELDS:
            msg = f"{where}: field {field!r} cannot be changed"
            raise InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field=field)
        if field not in LLMConfig.FIELDS:
            msg = f"{where}: unknown field {field!r}"
            raise InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field=field)
    _parse_json_fields(data, where)
    merged = {**current.model_dump(), **data, "updated_at": datetime.now(timezone.utc)}
    return _validate(merged, validators)
