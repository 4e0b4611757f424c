"""LLMConfig: validation, JSON parsing, and dict-style access, checked with generated input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool.credentials.checks import is_secret_name
from llmpool.errors import InvalidConfigError
from llmpool.models import LLMConfig

BASE = {"id": "id-1", "name": "GPT-4", "provider": "openai", "model_name": "gpt-4"}

# Text that the secret checks leave alone (they have their own tests in test_secret_checks.py).
plain_text = st.text().filter(
    lambda t: "://" not in t and not any(w in t.lower() for w in ("bearer", "basic"))
)
plain_keys = st.text().filter(lambda k: not is_secret_name(k) and not k.endswith(("_env", "_file")))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | plain_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_keys, inner, max_size=3),
    max_leaves=8,
)
safe_keys = st.sampled_from(["temperature", "max_tokens", "top_p", "stop", "seed", "timeout"])


@given(st.dictionaries(safe_keys, json_values, max_size=5))
def test_config_round_trips_as_json_text_or_mapping(config: dict[str, Any]) -> None:
    """config given as JSON text or as a mapping validates to the same row."""
    from_text = LLMConfig.from_row({**BASE, "config": json.dumps(config)})
    from_mapping = LLMConfig.from_row({**BASE, "config": config})
    assert from_text == from_mapping
    assert from_text.config == config


@given(st.text().filter(lambda t: t.strip()[:1] not in ("{",)))
def test_config_text_that_is_not_a_json_object_is_refused(text: str) -> None:
    """Any config text that is not a JSON object is refused, naming the row and the field."""
    with pytest.raises(InvalidConfigError) as info:
        LLMConfig.from_row({**BASE, "config": text})
    assert info.value.field == "config"
    assert "GPT-4" in str(info.value)


@given(st.one_of(st.text(), st.floats(), st.booleans(), st.none()))
def test_priority_must_be_an_integer(value: Any) -> None:
    """Strings, floats, booleans and null are not priorities."""
    with pytest.raises(InvalidConfigError) as info:
        LLMConfig.from_row({**BASE, "priority": value})
    assert info.value.field == "priority"


def test_indexing_like_a_dict_and_like_an_object() -> None:
    """config["name"] and config.name are the same; unknown keys are a KeyError naming them."""
    config = LLMConfig.from_row(BASE)
    assert config["name"] == config.name == "GPT-4"
    assert config.get("nope", 5) == 5
    assert "priority" in config
    assert list(config.keys())[:3] == ["id", "name", "provider"]
    with pytest.raises(KeyError, match="nope"):
        config["nope"]


def test_configs_are_frozen() -> None:
    """A config cannot be changed in place; writes go through the store."""
    config = LLMConfig.from_row(BASE)
    with pytest.raises(ValueError, match="frozen"):
        config.priority = 1  # type: ignore[misc]
