"""Rows written by raw SQL, as an operator's mistake or another tool would write them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa


def insert_raw(store: Any, name: str, **values: Any) -> str:
    """Insert a row with raw SQL, bypassing every check; return its id."""
    dialect = store.engine.dialect.name
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "provider": "fake",
        "model_name": "m",
        "scope": "global",
        "priority": 50,
        "enabled": True,
        "is_default": False,
        "auth_meta": {},
        "config": {},
        **values,
    }
    for key in ("auth_meta", "config"):
        row[key] = json.dumps(row[key])
    cast = "CAST(:{} AS jsonb)" if dialect == "postgresql" else ":{}"
    sql = sa.text(
        "INSERT INTO llms (id, name, provider, model_name, scope, priority, enabled, "
        "is_default, auth_meta, config, created_at, updated_at, version) VALUES (:id, :name, "
        f":provider, :model_name, :scope, :priority, :enabled, :is_default, "
        f"{cast.format('auth_meta')}, {cast.format('config')}, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP, 1)"
    )
    with store.engine.begin() as conn:
        conn.execute(sql, row)
    return str(row["id"])


def set_routing_raw(store: Any, scope: str, routing: str) -> None:
    """Write a scope's routing with raw SQL, past the CHECK constraint that refuses it (turned
    off for the statement on SQLite, dropped on PostgreSQL, as an operator could)."""
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as conn:
        if postgres:
            conn.execute(
                sa.text("ALTER TABLE llm_scopes DROP CONSTRAINT IF EXISTS ck_llm_scopes_routing")
            )
        else:
            conn.execute(sa.text("PRAGMA ignore_check_constraints = ON"))
        conn.execute(sa.text("DELETE FROM llm_scopes WHERE scope = :scope"), {"scope": scope})
        conn.execute(
            sa.text("INSERT INTO llm_scopes (scope, routing) VALUES (:scope, :routing)"),
            {"scope": scope, "routing": routing},
        )
        if not postgres:
            conn.execute(sa.text("PRAGMA ignore_check_constraints = OFF"))
