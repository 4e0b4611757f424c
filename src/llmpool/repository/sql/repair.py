"""Writes to a row that fails validation (raw SQL put it there): the repair path of `SQLStore`.

Such a row cannot be read as an `LLMConfig`, so the ordinary writes cannot start from it. Here:

- ``delete`` and ``disable`` work on it as it is (disabling a broken row is always safe);
- an update works when the row is valid after it (``edit ID --unset auth_meta.api_key``):
  the stored values that can be read are kept, the changes applied, the result validated;
- ``enable`` and ``set_default`` are refused, naming what is wrong and the command that fixes it.

Audit entries of such a row record its fields as stored with anything that may be a secret
hidden (`llmpool.repository.stored.safe_fields`), never its raw ``auth_meta``.
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
from llmpool.repository.sql.schema import COLUMNS, audit, llms, row_mapping, select_llms

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection

    from llmpool.repository import ConfigValidator

__all__ = ["disable_raw", "locked_raw", "raw_audit", "refusal", "repaired", "summary"]


def locked_raw(conn: Connection, llm_id: str, dialect: str) -> Mapping[str, Any] | None:
    """Return the row with id ``llm_id`` as stored, locked for update, or ``None``."""
    stmt = select_llms(scope=None, llm_id=llm_id)
    if dialect == "postgresql":
        stmt = stmt.with_for_update()
    rows = conn.execute(stmt).mappings().all()
    return dict(rows[0]) if rows else None


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the row's fields as stored, safe to print and to audit."""
    from llmpool.repository.stored import safe_fields

    return safe_fields(row)


def _readable(row: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values, each read as well as it can be; unreadable ones left as stored."""
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
    """Return the invalid stored ``row`` with ``changes`` applied, validated.

    Raises:
        InvalidConfigError: The row would still be invalid; the message says why, and how it
            was invalid before.
    """
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


def raw_audit(
    conn: Connection,
    *,
    llm_id: str,
    actor: str,
    action: str,
    before: Mapping[str, Any] | None,
    after: LLMConfig | Mapping[str, Any] | None,
    dialect: str,
) -> None:
    """Append an audit row whose before/after are stored fields (already made safe)."""

    def dump(value: LLMConfig | Mapping[str, Any] | None) -> Any:
        if value is None:
            return None
        data = value.model_dump(mode="json") if isinstance(value, LLMConfig) else dict(value)
        return data if dialect == "postgresql" else json.dumps(data, sort_keys=True, default=str)

    now = datetime.now(timezone.utc)
    conn.execute(
        audit.insert().values(
            llm_id=llm_id,
            actor=actor,
            action=action,
            before=dump(before),
            after=dump(after),
            at=now if dialect == "postgresql" else now.replace(tzinfo=None),
        )
    )


def disable_raw(conn: Connection, llm_id: str, dialect: str) -> Mapping[str, Any]:
    """Disable a stored row whatever it holds; return it as stored after."""
    now = datetime.now(timezone.utc)
    conn.execute(
        llms.update()
        .where(llms.c.id == llm_id)
        .values(
            enabled=False,
            version=llms.c.version + 1,
            updated_at=now if dialect == "postgresql" else now.replace(tzinfo=None),
        )
    )
    after = locked_raw(conn, llm_id, dialect)
    assert after is not None
    return after


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
