"""The installed llmpool's version (``llmpool.__version__``), read from its package metadata
when first asked for, not when ``llmpool`` is imported.

Example:
    >>> from importlib.metadata import version
    >>> __version__ == version("llmpool")
    True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("llmpool")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
