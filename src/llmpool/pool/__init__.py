"""`LLMPool`: the table's rows served as chat models, kept current without a restart.

- `llmpool.pool.facade`: `LLMPool`.
- `llmpool.pool.snapshots`: the snapshot of the table and its first load.
- `llmpool.pool.cache`: built models, keyed by row id and version.
- `llmpool.pool.watch`: LISTEN/NOTIFY and polling.
"""
