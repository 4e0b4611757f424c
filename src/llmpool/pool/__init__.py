"""`LLMPool` (`facade`, `options`; its usage and experiments: `accounts`), its snapshot kept
current (`snapshots`, `watch`), its health views (`health`) and the table's diagnosis
(`doctor`)."""
