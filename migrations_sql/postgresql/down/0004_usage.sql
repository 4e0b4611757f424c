-- Reverses 0004_usage: drops llm_usage and its index (the usage history is lost).

DROP INDEX IF EXISTS ix_llm_usage_llm_bucket;
DROP TABLE IF EXISTS llm_usage;
