-- Reverses 0006_usage_latency: drops the latency columns of llm_usage (their history is lost).

ALTER TABLE llm_usage DROP COLUMN latency_ms_sum;
ALTER TABLE llm_usage DROP COLUMN latency_le_50;
ALTER TABLE llm_usage DROP COLUMN latency_le_100;
ALTER TABLE llm_usage DROP COLUMN latency_le_250;
ALTER TABLE llm_usage DROP COLUMN latency_le_500;
ALTER TABLE llm_usage DROP COLUMN latency_le_1000;
ALTER TABLE llm_usage DROP COLUMN latency_le_2500;
ALTER TABLE llm_usage DROP COLUMN latency_le_5000;
ALTER TABLE llm_usage DROP COLUMN latency_le_10000;
ALTER TABLE llm_usage DROP COLUMN latency_le_30000;
ALTER TABLE llm_usage DROP COLUMN latency_gt_30000;
