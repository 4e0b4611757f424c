-- Reverses 0006_usage_latency: drops the latency columns of llm_usage (their history is lost).

ALTER TABLE llm_usage
    DROP COLUMN IF EXISTS latency_ms_sum,
    DROP COLUMN IF EXISTS latency_le_50,
    DROP COLUMN IF EXISTS latency_le_100,
    DROP COLUMN IF EXISTS latency_le_250,
    DROP COLUMN IF EXISTS latency_le_500,
    DROP COLUMN IF EXISTS latency_le_1000,
    DROP COLUMN IF EXISTS latency_le_2500,
    DROP COLUMN IF EXISTS latency_le_5000,
    DROP COLUMN IF EXISTS latency_le_10000,
    DROP COLUMN IF EXISTS latency_le_30000,
    DROP COLUMN IF EXISTS latency_gt_30000;
