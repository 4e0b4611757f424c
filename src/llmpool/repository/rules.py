"""The pure part of every write, shared by both stores: a request turned into a validated row."""

from __future__ import annotations

import contextlib
import copy
import difflib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError, describe_row, shorten
from llmpool.models import LLMConfig, parse_json_object
from llmpool.repository.scopes import AUDIT_PREFIX

if TYPE_CHECKING:
    from llmpool.repository import ConfigValidator

#: Fields a write may not set: the store manages them.
READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "version"})

#: Every field a write may set, in `LLMConfig.FIELDS` order.
WRITABLE_FIELDS = tuple(f for f in LLMConfig.FIELDS if f not in READ_ONLY_FIELDS)


def canonical_id(llm_id: str) -> str:
    """Return a UUID in its canonical form (lower case, hyphenated); any other text unchanged."""
    try:
        return str(uuid.UUID(str(llm_id)))
    except ValueError:
        return str(llm_id)


#: Ids a caller may choose where the id column is not a uuid (the guide's ``abc-123-def-456``).
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _new_id(value: Any, name: str | None, *, uuid_only: bool) -> str:
    # A caller's UUID is stored canonical; a short key only where the column is not a uuid.
    if value is None or value == "":
        return str(uuid.uuid4())
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(str(value)))
    # "scope:..." names a scope's routing changes in the audit log: never a row.
    if (
        not uuid_only
        and isinstance(value, str)
        and _KEY_ID.fullmatch(value)
        and not value.startswith(AUDIT_PREFIX)
    ):
        return value
    rule = (
        "must be a UUID (this database stores ids as uuid)"
        if uuid_only
        else f"must be a UUID or a key of up to 64 letters, digits and . _ : - (not starting "
        f"with {AUDIT_PREFIX!r})"
    )
    msg = (
        f"{describe_row(name, None)}: field 'id' {rule}, "
        "e.g. 1b4e28ba-2fa1-11d2-883f-0016d3cca427, or left out to have one generated"
    )
    raise InvalidConfigError(msg, llm_name=name, field="id") from None


def _parse_json_fields(values: dict[str, Any], row: str) -> None:
    for field in ("auth_meta", "config"):
        if field in values:
            values[field] = parse_json_object(values[field], field=field, row=row)


def _failed_before(
    validator: ConfigValidator, current: LLMConfig, target: LLMConfig, exc: InvalidConfigError
) -> bool:
    # Whether ``current`` already fails ``validator`` the same way, in a field left as it is.
    if exc.field is None:
        return False
    field = exc.field.split(".")[0]
    if field not in LLMConfig.FIELDS or getattr(current, field) != getattr(target, field):
        return False
    try:
        validator(current)
    except InvalidConfigError as before:
        return type(before) is type(exc) and before.field == exc.field
    return False


def _validate(
    values: Mapping[str, Any],
    validators: Sequence[ConfigValidator],
    current: LLMConfig | None = None,
) -> LLMConfig:
    config = LLMConfig.from_row(values, current=current)
    for validator in validators:
        try:
            validator(config)
        except InvalidConfigError as exc:
            # A problem the row already had, in a field this write leaves as it was, does not
            # block the write (a variable allowed only on the service's hosts, a plugin not
            # installed here).
            if current is not None and _failed_before(validator, current, config, exc):
                continue
            if current is None or config.describe() == current.describe():
                raise
            # An update that also renames the row: name it as it is, not as it would be.
            text = str(exc).replace(config.describe(), current.describe())
            try:
                renamed = type(exc)(text, llm_name=current.name, llm_id=current.id, field=exc.field)
            except TypeError:  # a validator's own error class, with its own signature
                raise exc from None
            raise renamed from exc
    return config


def new_config(
    values: Mapping[str, Any], validators: Sequence[ConfigValidator] = (), *, uuid_ids: bool = False
) -> LLMConfig:
    """Return a new row validated, with its id (unless given; ``uuid_ids``: only a UUID) and
    timestamps generated (`InvalidConfigError` naming row and field)."""
    data = dict(values)
    name = data.get("name") if isinstance(data.get("name"), str) else None
    unknown = set(data) - set(LLMConfig.FIELDS)
    if unknown:
        field = sorted(map(str, unknown))[0]
        msg = f"{describe_row(name, None)}: unknown field {shorten(field)!r}"
        raise InvalidConfigError(msg, llm_name=name, field=field)
    given = data.get("id") is not None
    data["id"] = _new_id(data.get("id"), name, uuid_only=uuid_ids)
    now = datetime.now(timezone.utc)
    data["created_at"] = now
    data["updated_at"] = now
    data["version"] = 1
    try:
        _parse_json_fields(data, describe_row(name, data["id"]))
        return _validate(data, validators)
    except InvalidConfigError as error:
        if not given:  # a refused row never had the id made for it: do not show it
            shown = describe_row(name, data["id"])
            text = str(error.args[0]).replace(shown, describe_row(name, None))
            error.args = (text, *error.args[1:])
            error.llm_id = None
        raise


def new_configs(
    llms: Sequence[Mapping[str, Any]],
    validators: Sequence[ConfigValidator] = (),
    *,
    uuid_ids: bool = False,
) -> list[LLMConfig]:
    """Validate several new rows, as `new_config`; an error starts with ``item N:``."""
    configs: list[LLMConfig] = []
    for index, values in enumerate(llms):
        try:
            configs.append(new_config(values, validators, uuid_ids=uuid_ids))
        except InvalidConfigError as error:
            error.args = (f"item {index}: {error.args[0]}", *error.args[1:])
            raise
    return configs


def edited_values(
    current: Mapping[str, Any], sets: Mapping[str, Any] | None = None, unsets: Sequence[str] = ()
) -> dict[str, Any]:
    """Return the `LLMStore.update` changes that set and unset dotted paths of a row, merging
    nested objects (unsetting a field resets it to its default)."""
    changes: dict[str, Any] = {}

    def field_of(path: str) -> tuple[str, list[str]]:
        field, *keys = path.split(".")
        if field not in LLMConfig.FIELDS or field in READ_ONLY_FIELDS:
            close = difflib.get_close_matches(field, WRITABLE_FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"{shorten(path)!r} names no field that can be changed{hint}"
            raise InvalidConfigError(msg, field=field)
        if keys and field not in changes:
            value = current.get(field)
            if not isinstance(value, Mapping):
                msg = f"{shorten(path)!r}: field {field!r} is not an object"
                raise InvalidConfigError(msg, field=field)
            changes[field] = copy.deepcopy(dict(value))
        return field, keys

    def parent(field: str, keys: list[str], path: str, *, create: bool) -> dict[str, Any]:
        node: dict[str, Any] = changes[field]
        for key in keys[:-1]:
            child = node.get(key)
            if child is None and create:
                child = node[key] = {}
            if not isinstance(child, dict):
                msg = f"{shorten(path)!r}: {key!r} is not an object"
                raise InvalidConfigError(msg, field=field)
            node = child
        return node

    for path in unsets:
        field, keys = field_of(path)
        if not keys:
            changes[field] = LLMConfig.model_fields[field].get_default(call_default_factory=True)
            continue
        node = parent(field, keys, path, create=False)
        if keys[-1] not in node:
            msg = f"cannot unset {shorten(path)!r}: there is no such key"
            raise InvalidConfigError(msg, field=field)
        del node[keys[-1]]
    for path, value in (sets or {}).items():
        field, keys = field_of(path)
        if not keys:
            changes[field] = value
        else:
            parent(field, keys, path, create=True)[keys[-1]] = value
    return changes


def updated_config(
    current: LLMConfig, changes: Mapping[str, Any], validators: Sequence[ConfigValidator] = ()
) -> LLMConfig:
    """Return ``current`` with ``changes`` applied and validated (the store sets ``version``)."""
    where = current.describe()
    data = dict(changes)
    for field in data:
        if field in READ_ONLY_FIELDS:
            msg = f"{where}: field {field!r} cannot be changed"
            raise InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field=field)
        if field not in LLMConfig.FIELDS:
            msg = f"{where}: unknown field {shorten(str(field))!r}"
            raise InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field=field)
    _parse_json_fields(data, where)
    merged = {**current.model_dump(), **data, "updated_at": datetime.now(timezone.utc)}
    return _validate(merged, validators, current)
