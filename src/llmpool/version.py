"""The installed llmpool's version, read from its package metadata (``llmpool.__version__``).

Read when first asked for, not when ``llmpool`` is imported.

Example:
    >>> from importlib.metadata import version
    >>> __version__ == version("llmpool")
    True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]


def _installed_version() -> str:
    try:
        return version("llmpool")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__: str = _installed_version()
