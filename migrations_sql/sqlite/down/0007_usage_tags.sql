-- Reverses 0007_usage_tags: each row's minutes are folded back into one (their tags are lost).

CREATE TABLE llm_usage_old (
    bucket_start     TIMESTAMP    NOT NULL,
    llm_id           VARCHAR(64)  NOT NULL,
    scope            VARCHAR(100) NOT NULL,
    name             VARCHAR(200) NOT NULL,
    provider         VARCHAR(100) NOT NULL,
    model_name       VARCHAR(200) NOT NULL,
    calls            INTEGER      NOT NULL DEFAULT 0 CHECK (calls >= 0),
    errors           INTEGER      NOT NULL DEFAULT 0 CHECK (errors >= 0),
    input_tokens     INTEGER      NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens    INTEGER      NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost             REAL         NOT NULL DEFAULT 0 CHECK (cost >= 0),
    latency_ms_sum   REAL         NOT NULL DEFAULT 0 CHECK (latency_ms_sum >= 0),
    latency_le_50    INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_50 >= 0),
    latency_le_100   INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_100 >= 0),
    latency_le_250   INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_250 >= 0),
    latency_le_500   INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_500 >= 0),
    latency_le_1000  INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_1000 >= 0),
    latency_le_2500  INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_2500 >= 0),
    latency_le_5000  INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_5000 >= 0),
    latency_le_10000 INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_10000 >= 0),
    latency_le_30000 INTEGER      NOT NULL DEFAULT 0 CHECK (latency_le_30000 >= 0),
    latency_gt_30000 INTEGER      NOT NULL DEFAULT 0 CHECK (latency_gt_30000 >= 0),
    PRIMARY KEY (bucket_start, llm_id)
);

INSERT INTO llm_usage_old (bucket_start, llm_id, scope, name, provider, model_name, calls, errors, input_tokens, output_tokens, cost, latency_ms_sum, latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000, latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000)
SELECT bucket_start, llm_id, max(scope) AS scope, max(name) AS name, max(provider) AS provider, max(model_name) AS model_name, sum(calls) AS calls, sum(errors) AS errors, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost, sum(latency_ms_sum) AS latency_ms_sum, sum(latency_le_50) AS latency_le_50, sum(latency_le_100) AS latency_le_100, sum(latency_le_250) AS latency_le_250, sum(latency_le_500) AS latency_le_500, sum(latency_le_1000) AS latency_le_1000, sum(latency_le_2500) AS latency_le_2500, sum(latency_le_5000) AS latency_le_5000, sum(latency_le_10000) AS latency_le_10000, sum(latency_le_30000) AS latency_le_30000, sum(latency_gt_30000) AS latency_gt_30000
FROM llm_usage GROUP BY bucket_start, llm_id;

DROP TABLE llm_usage;
ALTER TABLE llm_usage_old RENAME TO llm_usage;
CREATE INDEX ix_llm_usage_llm_bucket ON llm_usage (llm_id, bucket_start);
