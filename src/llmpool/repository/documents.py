"""Documents (what `llmpool.repository.declarative` plans and applies) as JSON or YAML text.

Reading one fails with nothing but `InvalidConfigError`, whatever the text holds: nesting is
bounded while the text is read, and an object giving a key twice is refused, naming the key
and the entry (JSON and YAML would keep the last value without a word).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from llmpool.errors import InvalidConfigError, LLMPoolError, describe_row, shorten, visible
from llmpool.models import MAX_JSON_DEPTH, json_text_depth


def dumps(document: Mapping[str, Any], fmt: str = "json") -> str:
    """Return a document as ``json`` or ``yaml`` text (`LLMPoolError`: no PyYAML for yaml)."""
    if fmt == "yaml":
        yaml = _yaml()
        text: str = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)
        return text
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


#: How deeply a document nests objects and lists: ``{"llms": [{"config": ...}]}`` around the
#: `llmpool.models.MAX_JSON_DEPTH` levels a row's ``config`` may take.
MAX_DOCUMENT_DEPTH = MAX_JSON_DEPTH + 3


def loads(text: str, fmt: str | None = None) -> dict[str, Any]:
    """Parse a document from JSON or YAML text (``fmt`` ``None``: JSON when it parses as JSON);
    `InvalidConfigError` when it is no document, nests too deep or repeats a key.

    Example:
        >>> loads('{"llms": [{"name": "A", "priority": 1, "priority": 2}]}')
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: entry 0 (LLM 'A'): the key 'priority' is given twice...
    """
    loaded = _parse(text, fmt)
    if isinstance(loaded, list):
        loaded = {"llms": loaded}
    if not isinstance(loaded, dict) or not isinstance(loaded.get("llms", []), list):
        raise InvalidConfigError('a document is an object with a list of rows under "llms"')
    _refuse_repeated_keys(loaded)
    unknown = sorted(set(loaded) - {"llms", "scopes", "quotas"})
    if unknown:
        msg = (
            f'a document holds only "llms", "scopes" and "quotas"; unknown key '
            f"{shorten(str(unknown[0]))!r}"
        )
        raise InvalidConfigError(msg)
    document: dict[str, Any] = {"llms": list(loaded.get("llms") or [])}
    for key in ("scopes", "quotas"):
        if loaded.get(key) is not None:
            document[key] = loaded[key]
    return document


def load_object(text: str, fmt: str | None = None) -> dict[str, Any]:
    """Parse an object of any shape (another tool's config) from JSON or YAML text, with the
    bounds of `loads`; `InvalidConfigError` when it is no object, nests too deep or repeats a key.

    Example:
        >>> load_object("model_list: []")
        {'model_list': []}
    """
    loaded = _parse(text, fmt)
    if not isinstance(loaded, dict):
        raise InvalidConfigError("the file does not hold an object (a mapping of settings)")
    _refuse_repeated_keys(loaded)
    return loaded


def _parse(text: str, fmt: str | None) -> Any:
    if json_text_depth(text) > MAX_DOCUMENT_DEPTH:
        raise _too_deep()
    if fmt != "yaml":
        try:
            return json.loads(text, object_pairs_hook=_object)
        except RecursionError:  # the stack was already deep: the text itself is bounded
            raise _too_deep() from None
        except ValueError as error:
            if fmt == "json":
                msg = f"the document is not valid JSON: {shorten(str(error), 200)}"
                raise InvalidConfigError(msg) from None
    return _load_yaml(text)


def _too_deep() -> InvalidConfigError:
    return InvalidConfigError(f"the document nests deeper than {MAX_DOCUMENT_DEPTH} levels")


class _Repeated(dict[Any, Any]):
    """An object of the document that gave ``key`` twice (refused by `_refuse_repeated_keys`)."""

    def __init__(self, key: Any, data: Mapping[Any, Any]) -> None:
        super().__init__(data)
        self.key = key


#: What `_first_repeated` returns when no key is repeated (``None`` may be a YAML key).
_NO_KEY = object()


def _first_repeated(keys: Iterable[Any]) -> Any:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return _NO_KEY


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads's object_pairs_hook: every pair of the object, a repeated key included.
    data = dict(pairs)
    return (
        data if len(data) == len(pairs) else _Repeated(_first_repeated(k for k, _ in pairs), data)
    )


def _refuse_repeated_keys(document: dict[str, Any]) -> None:
    # Every object of the document, walked once (a YAML alias may make a cycle).
    stack: list[tuple[Any, tuple[Any, ...]]] = [(document, ())]
    seen: set[int] = set()
    while stack:
        value, path = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, _Repeated):
            where = _path_text(document, path)
            msg = (
                f"{where}: the key {shorten(visible(str(value.key)))!r} is given twice in one "
                "object; give it once (the last value would silently win)"
            )
            raise InvalidConfigError(msg, field=shorten(str(value.key)))
        if isinstance(value, dict):
            stack.extend((child, (*path, key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, (*path, index)) for index, child in enumerate(value))


def _path_text(document: dict[str, Any], path: tuple[Any, ...]) -> str:
    # "entry 3 (LLM 'A') at config.extra" for a row's entry; "scopes.global" elsewhere.
    if len(path) >= 2 and path[0] == "llms" and isinstance(path[1], int):
        entry = document["llms"][path[1]]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"entry {path[1]} ({describe_row(name if isinstance(name, str) else None, None)})"
        rest = path[2:]
        return where + (f" at {_dotted(rest)}" if rest else "")
    return f"the document at {_dotted(path)}" if path else "the document"


def _dotted(path: tuple[Any, ...]) -> str:
    return shorten(visible(".".join(str(part) for part in path)), 200)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise LLMPoolError('YAML needs PyYAML: pip install "llmpool[yaml]" (or use JSON)') from None
    return yaml


def _load_yaml(text: str) -> Any:
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_bounded_loader())  # a SafeLoader (see there)
    except yaml.YAMLError as error:
        msg = f"the document is not valid YAML: {shorten(' '.join(str(error).split()), 200)}"
        raise InvalidConfigError(msg) from None
    except RecursionError:  # not reached with the depth bound; never a traceback
        raise _too_deep() from None


@functools.cache
def _bounded_loader() -> type:
    """PyYAML's safe loader that stops composing at `MAX_DOCUMENT_DEPTH` (it composes
    recursively: ``- - - x`` nested thousands deep would exhaust the stack), and marks
    repeated keys."""
    import yaml

    class BoundedSafeLoader(yaml.SafeLoader):
        depth = 0

        def compose_sequence_node(self, anchor: Any) -> Any:
            return self._nested(super().compose_sequence_node, anchor)

        def compose_mapping_node(self, anchor: Any) -> Any:
            return self._nested(super().compose_mapping_node, anchor)

        def _nested(self, compose: Any, anchor: Any) -> Any:
            if self.depth >= MAX_DOCUMENT_DEPTH:
                raise _too_deep()
            self.depth += 1
            try:
                return compose(anchor)
            finally:
                self.depth -= 1

        def construct_yaml_map(self, node: Any) -> Any:
            loader: Any = self  # the constructor methods are untyped in older PyYAML stubs
            repeated = _first_repeated(
                loader.construct_object(key)
                for key, _ in node.value
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge"
            )
            data: dict[Any, Any] = {} if repeated is _NO_KEY else _Repeated(repeated, {})
            yield data
            data.update(loader.construct_mapping(node))

    cast(Any, BoundedSafeLoader).add_constructor(
        "tag:yaml.org,2002:map", BoundedSafeLoader.construct_yaml_map
    )
    return BoundedSafeLoader
