"""Writes to a row that fails validation (raw SQL put it there): the repair path of `SQLStore`.

``delete`` and ``disable`` work on it as stored; an update works when the row is valid after it;
``enable`` and ``set_default`` are refused, naming the command that fixes it. Its audit entries
hide what may be a secret (`llmpool.repository.stored.safe_fields`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError, describe_row
from llmpool.models import LLMConfig
from llmpool.repository.rules import READ_ONLY_FIELDS, updated_config
from llmpool.repository.sql.schema import COLUMNS, row_mapping

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmpool.repository import ConfigValidator

__all__ = ["refusal", "repaired"]


def _readable(row: Mapping[str, Any]) -> dict[str, Any]:
    # The stored values, each read as well as it can be; unreadable ones left as stored.
    values = {name: row[name] for name in COLUMNS if name in row}
    values["id"] = str(row["id"])
    with contextlib.suppress(Exception):
        values.update(row_mapping(row))
    for name in ("auth_meta", "config"):
        value = values.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError, RecursionError):
                values[name] = json.loads(value)
    for name in ("created_at", "updated_at"):
        if not isinstance(values.get(name), datetime):
            values[name] = datetime.now(timezone.utc)
    return values


def repaired(
    row: Mapping[str, Any],
    changes: Mapping[str, Any],
    validators: Sequence[ConfigValidator],
    error: InvalidConfigError,
) -> LLMConfig:
    """Return the invalid stored ``row`` with ``changes`` applied, validated."""
    name = row.get("name") if isinstance(row.get("name"), str) else None
    where = describe_row(name, str(row["id"]))
    values = _readable(row)
    for field in changes:
        if field in READ_ONLY_FIELDS or field not in LLMConfig.FIELDS:
            # The ordinary rules word these refusals.
            return updated_config(LLMConfig.model_construct(**values), changes, validators)
    values.update(changes)
    values["updated_at"] = datetime.now(timezone.utc)
    try:
        target = LLMConfig.from_row(values)
    except InvalidConfigError as still:
        if str(still) == str(error):
            msg = (
                f"{error}; this change leaves it so: change {still.field or 'that field'} too "
                f"(`llmpool doctor` shows the command), or delete the row"
            )
        else:
            msg = f"{still} (after this change to {where}, which is invalid as stored)"
        raise InvalidConfigError(
            msg, llm_name=name, llm_id=str(row["id"]), field=still.field
        ) from None
    for validator in validators:
        validator(target)
    return target


def refusal(action: str, row: Mapping[str, Any], error: InvalidConfigError) -> InvalidConfigError:
    """Return why ``action`` (enable, set_default) is refused on an invalid row."""
    name = row.get("name") if isinstance(row.get("name"), str) else None
    verb = {"set_default": "make it the default", "enable": "enable it"}.get(action, action)
    msg = (
        f"{error}; it cannot be used as it is. Fix it first (llmpool edit "
        f"{row['id']} --set FIELD=VALUE, or --unset FIELD; llmpool doctor says which), then "
        f"{verb}"
    )
    return InvalidConfigError(msg, llm_name=name, llm_id=str(row["id"]), field=error.field)
