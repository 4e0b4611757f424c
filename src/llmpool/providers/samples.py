"""A deterministic value for a JSON schema: what the ``fake`` provider answers with as tool
arguments and structured output."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Values for the string formats pydantic checks.
_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00",
    "duration": "PT0S",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}

#: Deeper than this, a required recursive field is ``None`` (a model would stop somewhere too).
_MAX_DEPTH = 12


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#") else ():
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node if isinstance(node, Mapping) else {}


def _number(schema: Mapping[str, Any], integer: bool) -> float:
    step = 1 if integer else 0.5
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
    value = low if low is not None else (0 if high is None or high >= 0 else high)
    return int(value) if integer else float(value)


def sample(schema: Mapping[str, Any], name: str = "value") -> Any:
    """Return a value valid for ``schema``: its ``const``, ``default``, first ``enum`` or
    ``examples`` value, else one built from its type (every property of an object, one item
    of an array, ``"fake <name>"`` for a string, the lowest allowed number, ``True``).

    Example:
        >>> sample({"properties": {"city": {"type": "string"}, "days": {"type": "integer",
        ...         "minimum": 1}, "unit": {"enum": ["C", "F"]}}})
        {'city': 'fake city', 'days': 1, 'unit': 'C'}
    """
    return _sample(schema, schema, name, 0)


def _sample(schema: Mapping[str, Any], root: Mapping[str, Any], name: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _sample(_resolve(root, schema["$ref"]), root, name, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return copy.deepcopy(schema[key])
    for key in ("enum", "examples"):
        if isinstance(schema.get(key), list) and schema[key]:
            return copy.deepcopy(schema[key][0])
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if isinstance(o, Mapping)]
        if options:
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            return _sample(chosen, root, name, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(root, part["$ref"]) if "$ref" in part else part)
        return _sample(merged, root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {key: _sample(sub, root, key, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        if schema.get("prefixItems"):
            return [_sample(item, root, name, depth + 1) for item in schema["prefixItems"]]
        count = max(1, schema.get("minItems", 0))
        if schema.get("maxItems") == 0:
            count = 0
        return [_sample(schema.get("items") or {}, root, name, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _FORMATS.get(schema.get("format", ""), f"fake {name}")
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[: schema["maxLength"]] if "maxLength" in schema else text
