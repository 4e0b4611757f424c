"""The installed version, from the package metadata: llmpool.__version__ and llmpool --version."""

from __future__ import annotations

from importlib.metadata import version

from cli_runner import run_cli

import llmpool


def test_version_attribute_is_the_installed_distributions() -> None:
    """llmpool.__version__ is the version pip installed, not a copy that could drift."""
    assert llmpool.__version__ == version("llmpool")
    assert "__version__" in llmpool.__all__


def test_cli_prints_its_version() -> None:
    """`llmpool --version` prints the program and its version and exits 0."""
    result = run_cli("--version")
    assert result.code == 0, result.err
    assert result.out == f"llmpool {version('llmpool')}\n"
