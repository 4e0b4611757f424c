"""The examples in the docstrings run: every module's doctests pass."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmpool
from llmpool.providers import set_registry

MODULES = sorted(m.name for m in pkgutil.walk_packages(llmpool.__path__, "llmpool."))


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Doctests run in an empty directory, with a registry of their own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMPOOL_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with set_registry(None):
        yield


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    """Each docstring example of the module gives the output it shows."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_every_public_function_shows_an_example() -> None:
    """The public API's functions each carry a runnable example in their docstring."""
    missing = [
        name
        for name in llmpool.__all__
        if callable(obj := getattr(llmpool, name))
        and not isinstance(obj, type)
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert missing == []
