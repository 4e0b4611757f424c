"""The pure part of every write: turn a request into a validated row, before any I/O.

Both stores (SQL and in-memory) use these, so validation and its messages are the same.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import ConflictError, InvalidConfigError, describe_row, shorten
from llmpool.models import LLMConfig, parse_json_object

if TYPE_CHECKING:
    from llmpool.repository import ConfigValidator

__all__ = [
    "READ_ONLY_FIELDS",
    "as_id_list",
    "canonical_id",
    "default_move_conflict",
    "default_rule",
    "disabled_default_error",
    "doing",
    "edited_values",
    "item_label",
    "name_taken_error",
    "new_config",
    "updated_config",
]

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


def canonical_id(llm_id: str) -> str:
    """Return a UUID in its canonical form (lower case, hyphenated); any other text unchanged.

    Example:
        >>> canonical_id("1B4E28BA2FA111D2883F0016D3CCA427"), canonical_id("abc-123")
        ('1b4e28ba-2fa1-11d2-883f-0016d3cca427', 'abc-123')
    """
    try:
        return str(uuid.UUID(str(llm_id)))
    except ValueError:
        return str(llm_id)


#: Ids a caller may choose on stores without a uuid column: the usage guide's own example
#: id, ``abc-123-def-456``, is one.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _new_id(value: Any, name: str | None, *, uuid_only: bool) -> str:
    # llmpool generates UUIDs. A caller-chosen id is stored in canonical form when it is a
    # UUID; otherwise it must be a short key, and only where the column can hold one
    # (PostgreSQL's id is a uuid column; SQLite and memory take keys such as the usage
    # guide's "abc-123-def-456").
    if value is None or value == "":
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        pass
    from llmpool.repository.scopes import AUDIT_PREFIX

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


def doing(action: str, row: str) -> str:
    """Return how an error message says what a write was doing to ``row``.

    Example:
        >>> doing("set_default", "LLM 'a' (id 1)")
        "set the default LLM to LLM 'a' (id 1)"
    """
    verb = {"create": "add", "set_default": "set the default LLM to"}.get(action, action)
    return f"{verb} {row}"


def default_rule(current: LLMConfig, target: LLMConfig, changes: Mapping[str, Any]) -> str | None:
    """Return what an update does to the default of the row's (new) scope and kind.

    Defaults are per scope and kind: a scope has one default chat model and one default
    embedding model. ``"take"``: the update asks for ``is_default=True``, so the other default
    of its scope and kind is cleared in the same transaction. ``"check"``: a default row moves
    to another scope (or kind), which must not have a default already (an admin chooses that
    default explicitly). ``None``: nothing to do.

    Example:
        >>> a = LLMConfig(id="1", name="a", provider="fake", model_name="m", is_default=True)
        >>> default_rule(a, a.model_copy(update={"scope": "other"}), {"scope": "other"})
        'check'
    """
    if not target.is_default:
        return None
    if "is_default" in changes:
        return "take"
    moved = target.scope != current.scope or target.kind != current.kind
    return "check" if moved else None


def default_move_conflict(
    current: LLMConfig, scope: str, holder: str, kind: str = "chat"
) -> ConflictError:
    """Return the refusal to move a default row into a scope that has a default (``holder``)
    of the row's (new) ``kind``."""
    of_kind = "" if kind == "chat" else f" {kind} model"
    msg = (
        f"Could not update {current.describe()}: it is the default of scope {current.scope!r}, "
        f"and scope {scope!r} already has a default{of_kind}, {holder}; move it with "
        "is_default=False, or pass is_default=True as well to make it that scope's default "
        "instead"
    )
    return ConflictError(msg)


def disabled_default_error(current: LLMConfig) -> InvalidConfigError:
    """Return the refusal to make a disabled row its scope's default (`LLMStore.set_default`).

    ``get_llm()`` serves no disabled row, so such a default would leave the scope without one.
    (An update may still write ``is_default`` and ``enabled=False`` together: a document that
    `llmpool apply` reads back from an export holds what the table held.)
    """
    msg = (
        f"Could not {doing('set_default', current.describe())}: it is disabled, and get_llm() "
        f"serves no disabled row; enable it first (llmpool enable {current.id}), or make "
        f"another row of scope {shorten(current.scope)!r} the default"
    )
    return InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field="enabled")


def _parse_json_fields(values: dict[str, Any], row: str) -> None:
    for field in ("auth_meta", "config"):
        if field in values:
            values[field] = parse_json_object(values[field], field=field, row=row)


def _failed_before(
    validator: ConfigValidator, current: LLMConfig, target: LLMConfig, exc: InvalidConfigError
) -> bool:
    """Whether ``current`` already fails ``validator`` the same way, in a field left as it is."""
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
            # block the write: a row referencing a variable allowed only on the service's
            # hosts (LLMPOOL_ALLOWED_ENV) can still be re-prioritised or disabled from a shell
            # that lacks the setting, and a row of a plugin not installed here can be edited.
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
    values: Mapping[str, Any],
    validators: Sequence[ConfigValidator] = (),
    *,
    uuid_ids: bool = False,
) -> LLMConfig:
    """Validate a new row; generate its id and timestamps.

    Args:
        values: Column values; ``id`` (a UUID) is generated when absent.
        validators: Extra checks (for example the environment allowlist).
        uuid_ids: Accept only UUIDs as ids (the store's column is a uuid).

    Returns:
        The validated row.

    Raises:
        InvalidConfigError: A field is missing or invalid, or ``id`` is neither a UUID nor
            (where allowed) a short key; the message names row and field.
    """
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
            error.args = (str(error.args[0]).replace(shown, describe_row(name, None)),
                          *error.args[1:])  # fmt: skip
            error.llm_id = None
        raise


def new_configs(
    llms: Sequence[Mapping[str, Any]],
    validators: Sequence[ConfigValidator] = (),
    *,
    uuid_ids: bool = False,
) -> list[LLMConfig]:
    """Validate several new rows, as `new_config`; an error says which item is at fault.

    Raises:
        InvalidConfigError: An item is invalid; the message starts with ``item N:``.
    """
    configs: list[LLMConfig] = []
    for index, values in enumerate(llms):
        try:
            configs.append(new_config(values, validators, uuid_ids=uuid_ids))
        except InvalidConfigError as error:
            error.args = (f"item {index}: {error.args[0]}", *error.args[1:])
            raise
    return configs


def item_label(config: LLMConfig, index: int, numbered: bool) -> str:
    """Return how an insert names a row: by name, with its place in a batch when there is one.

    The id is left out: a refused row's id was generated for it and exists nowhere.

    Example:
        >>> row = LLMConfig(id="1", name="a", provider="fake", model_name="m")
        >>> item_label(row, 2, True), item_label(row, 0, False)
        ("LLM 'a' (item 2)", "LLM 'a'")
    """
    label = describe_row(config.name, None)
    return f"{label} (item {index})" if numbered else label


def name_taken_error(label: str, holder: str, scope: str) -> ConflictError:
    """Return the refusal of a row whose name ``holder`` already has in ``scope``."""
    msg = (
        f"Could not add {label}: LLM names are unique within a scope, and {holder} has that "
        f"name in scope {shorten(scope)!r}"
    )
    return ConflictError(msg)


def edited_values(
    current: Mapping[str, Any],
    sets: Mapping[str, Any] | None = None,
    unsets: Sequence[str] = (),
) -> dict[str, Any]:
    """Return the changes that set and unset dotted paths of a row, merging nested objects.

    ``config.temperature`` sets one key of ``config`` and keeps the others; ``priority`` sets
    a field. Unsetting a field resets it to its default; unsetting a key that is not there is
    an error naming it.

    Args:
        current: The row's fields as they are (``LLMConfig.model_dump()`` or a stored row).
        sets: Dotted path -> new value.
        unsets: Dotted paths to remove.

    Returns:
        The fields to change, each with its whole new value (for `LLMStore.update`).

    Raises:
        InvalidConfigError: A path names no field, goes through a value that is not an
            object, or unsets a key that is not there.

    Example:
        >>> edited_values({"priority": 1, "config": {"temperature": 0.1, "max_tokens": 9}},
        ...               {"config.temperature": 0.2}, ["config.max_tokens"])
        {'config': {'temperature': 0.2}}
    """
    import copy

    changes: dict[str, Any] = {}

    def field_of(path: str) -> tuple[str, list[str]]:
        field, *keys = path.split(".")
        if field not in LLMConfig.FIELDS or field in READ_ONLY_FIELDS:
            close = difflib.get_close_matches(field, _writable(), n=1)
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


def _writable() -> list[str]:
    return [f for f in LLMConfig.FIELDS if f not in READ_ONLY_FIELDS]


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
        InvalidConfigError: A field is read-only, unknown or invalid; the message names the row
            by its current name and id.
    """
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
