"""The ``llmpool`` command: `main` runs it, `args` and `output` hold what its commands share,
`rows`, `database` and `runtime` the commands (each parser next to its handler)."""
