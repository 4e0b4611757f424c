"""A provider plugin that raises at import, as a plugin with a broken dependency would."""

raise RuntimeError("llmpool_broken cannot start: its dependency is missing")
