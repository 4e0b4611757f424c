"""`LLMPool` (`facade`, `options`), its snapshot kept current (`snapshots`, `watch`), its health
views (`health`) and the table's diagnosis (`doctor`)."""
