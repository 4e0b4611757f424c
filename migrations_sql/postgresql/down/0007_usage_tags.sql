-- Reverses 0007_usage_tags: each row's minutes are folded back into one (their tags are lost).

CREATE TEMPORARY TABLE llm_usage_folded ON COMMIT DROP AS
SELECT bucket_start, llm_id, max(scope) AS scope, max(name) AS name, max(provider) AS provider, max(model_name) AS model_name, sum(calls) AS calls, sum(errors) AS errors, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost, sum(latency_ms_sum) AS latency_ms_sum, sum(latency_le_50) AS latency_le_50, sum(latency_le_100) AS latency_le_100, sum(latency_le_250) AS latency_le_250, sum(latency_le_500) AS latency_le_500, sum(latency_le_1000) AS latency_le_1000, sum(latency_le_2500) AS latency_le_2500, sum(latency_le_5000) AS latency_le_5000, sum(latency_le_10000) AS latency_le_10000, sum(latency_le_30000) AS latency_le_30000, sum(latency_gt_30000) AS latency_gt_30000
FROM llm_usage GROUP BY bucket_start, llm_id;

DELETE FROM llm_usage;
ALTER TABLE llm_usage DROP CONSTRAINT llm_usage_pkey;
ALTER TABLE llm_usage DROP COLUMN tags;
ALTER TABLE llm_usage ADD CONSTRAINT llm_usage_pkey PRIMARY KEY (bucket_start, llm_id);
INSERT INTO llm_usage (bucket_start, llm_id, scope, name, provider, model_name, calls, errors, input_tokens, output_tokens, cost, latency_ms_sum, latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000, latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000) SELECT * FROM llm_usage_folded;
