"""The ``llmpool`` command: `llmpool.cli.main` parses and runs it; `args` and `output` hold what
its commands share; `rows`, `database` and `runtime` hold the commands, each parser next to its
handler.
"""
