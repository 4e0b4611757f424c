"""The ``llmpool`` command, one module per command group (each command's parser next to its
handler).

- `llmpool.cli.main`: `main`, the console script's entry point, and the parser.
- `llmpool.cli.args`, `llmpool.cli.output`: shared options and argument types; errors, safe
  one-line text, tables and JSON.
- `llmpool.cli.rows`: list, show, add, edit, enable, disable, delete, set-default, audit.
- `llmpool.cli.schema`: migrate.
- `llmpool.cli.chain`: chain, the scope's health (`LLMPool.status`).
- `llmpool.cli.runtime`: the commands that build models (providers, check, demo).
"""
