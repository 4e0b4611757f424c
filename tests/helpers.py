"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any


def row(name: str = "GPT-4", **values: Any) -> dict[str, Any]:
    """A valid new row; keywords override its fields."""
    base: dict[str, Any] = {
        "name": name,
        "provider": "openai",
        "model_name": "gpt-4",
        "priority": 10,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"temperature": 0.2},
    }
    base.update(values)
    return base
