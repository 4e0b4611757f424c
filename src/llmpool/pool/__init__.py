"""`LLMPool`: the composition root that serves the table's rows, kept current without a restart.

- `llmpool.pool.facade`: `LLMPool`; `llmpool.pool.options`: `PoolOptions`.
- `llmpool.pool.snapshots`: the snapshot of the table and its first load;
  `llmpool.pool.watch`: LISTEN/NOTIFY and polling.
- `llmpool.pool.health`: `status` and `explain`, read from the chains the calls use;
  `llmpool.pool.doctor`: what is wrong in the table, row by row.
"""
