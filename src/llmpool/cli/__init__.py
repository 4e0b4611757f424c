"""The ``llmpool`` command.

- `llmpool.cli.main`: the parser and `main`, the console script's entry point.
- `llmpool.cli.admin`: the row commands (list, show, add, edit, ..., audit, migrate).
- `llmpool.cli.runtime`: the commands that build models (providers, chain, check, demo).
"""
