"""Rows as they are stored, the invalid ones included (serving skips them): what an admin
sees, finds and repairs, with anything that may be a secret hidden."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmpool.errors import (
    AmbiguousNameError,
    InvalidConfigError,
    LLMNotFoundError,
    describe_row,
    shorten,
)
from llmpool.models import MAX_JSON_DEPTH, MAX_JSON_TEXT, MAX_LENGTHS, LLMConfig, check_argument
from llmpool.repository.rules import canonical_id

#: What a value that may be a secret shows as.
HIDDEN = "<hidden>"

# A reference's value that is safe to show: a variable name, or an absolute file path.
_REFERENCE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}|/[\w./-]{1,300}")
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential", "auth")


@dataclass(frozen=True)
class StoredRow:
    """One row as stored (``name`` and ``scope`` when they are text): ``config`` validated, or
    ``None`` (``error`` says why); ``fields`` to show, what may be a secret `HIDDEN`; ``values``
    JSON parsed, what an edit merges into, never printed."""

    id: str
    name: str | None
    scope: str | None
    config: LLMConfig | None
    error: InvalidConfigError | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def valid(self) -> bool:
        """Whether the row passes validation."""
        return self.config is not None

    def describe(self) -> str:
        """Return how messages name the row: ``LLM 'GPT-4' (id abc)``."""
        return describe_row(self.name, self.id)


def _hide(value: Any, key: str = "", depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:  # raw SQL may nest deeper than the stack allows a walk
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {str(k): _hide(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide(v, key, depth + 1) for v in value]
    lowered = key.lower()
    if lowered.endswith(("_env", "_file")):
        return value if isinstance(value, str) and _REFERENCE.fullmatch(value) else HIDDEN
    if any(word in lowered for word in _SECRET_WORDS):
        return HIDDEN
    return shorten(value, 200) if isinstance(value, str) else value


def _json(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        if len(value) > MAX_JSON_TEXT:
            return f"<{len(value)} characters>"
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return "<not valid JSON>"
    return value


def safe_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return a stored row's fields for display and audit, hiding what may be a secret (a
    reference that looks like no variable name or path, a key naming a credential)."""
    shown: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("auth_meta", "config"):
            shown[name] = _hide(_json(value))
        elif value is None or isinstance(value, (bool, int, float)):
            shown[name] = value
        elif isinstance(value, str):
            shown[name] = shorten(value, MAX_LENGTHS.get(name, 200))
        elif hasattr(value, "isoformat"):
            shown[name] = value.isoformat()
        else:
            shown[name] = f"<{type(value).__name__}>"
    return shown


def _from_raw(row: Mapping[str, Any]) -> StoredRow:
    from llmpool.repository.sql.schema import row_mapping

    llm_id = str(row["id"])
    name = row.get("name") if isinstance(row.get("name"), str) else None
    scope = row.get("scope") if isinstance(row.get("scope"), str) else None
    raw = {str(k): v for k, v in row.items() if k != "generation"}
    try:
        config = LLMConfig.from_row(row_mapping(row))
    except Exception as error:  # whatever one row holds, it is reported, never raised
        if not isinstance(error, InvalidConfigError):
            msg = f"{describe_row(name, llm_id)} could not be read ({type(error).__name__})"
            error = InvalidConfigError(msg, llm_name=name, llm_id=llm_id)
        values = {k: _json(v) if k in ("auth_meta", "config") else v for k, v in raw.items()}
        return StoredRow(llm_id, name, scope, None, error, safe_fields(raw), values)
    return _valid(config)


def _valid(config: LLMConfig) -> StoredRow:
    fields = config.model_dump(mode="json")
    return StoredRow(
        config.id, config.name, config.scope, config, None, fields, config.model_dump()
    )


def stored_rows(store: Any, *, scope: str | None = None) -> list[StoredRow]:
    """Return every row of ``store`` (of one scope, or all), the invalid ones included."""
    check_argument("scope", scope, MAX_LENGTHS["scope"])
    raw_rows = getattr(store, "raw_rows", None)
    if callable(raw_rows):
        return [_from_raw(row) for row in raw_rows(scope=scope)]
    snapshot = store.snapshot()
    rows = [_valid(c) for c in snapshot.configs if scope is None or c.scope == scope]
    for bad in snapshot.bad_rows:
        error = InvalidConfigError(bad.error, llm_name=bad.name, llm_id=bad.llm_id)
        rows.append(StoredRow(bad.llm_id, bad.name, None, None, error, {"id": bad.llm_id}))
    return rows


def find_row(store: Any, ref: str, *, scope: str | None = None) -> StoredRow:
    """Return the row whose id, or else name, is ``ref`` (in ``scope``); `LLMNotFoundError`,
    or `AmbiguousNameError` listing the rows of that name."""
    check_argument("name", ref, MAX_LENGTHS["name"])
    rows = stored_rows(store, scope=scope)
    for row in rows:
        if row.id in (ref, canonical_id(ref)):
            return row
    matches = [row for row in rows if row.name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(
            f"scope {shorten(r.scope or '?')!r} (id {r.id})"
            for r in sorted(matches, key=lambda r: (r.scope or "", r.id))
        )
        msg = (
            f"{len(matches)} LLMs are named {shorten(ref)!r}: {listed}; "
            "give the id, or the scope (--scope)"
        )
        raise AmbiguousNameError(msg, candidates=[r.id for r in matches])
    where = f" in scope {shorten(scope)!r}" if scope is not None else ""
    names = sorted({row.name for row in rows if row.name})
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise LLMNotFoundError(f"No LLM with id or name {shorten(ref)!r}{where}{hint}")
