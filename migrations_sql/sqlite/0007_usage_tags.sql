-- 0007_usage_tags: llm_usage per row and tag set, so usage can be read per tenant, feature, ...
--
-- llm_usage.tags: the tags of the minute's calls, as their canonical text (names sorted,
--   'feature=chat,tenant=acme'; '' for untagged calls: every existing minute). The primary key
--   becomes (bucket_start, llm_id, tags): a row's calls with different tags are counted apart, and
--   a row's total is their sum. Pools bound how many distinct values a tag may take per UTC day
--   (PoolOptions.max_tag_values): the rest are counted as 'other'.
--
-- SQLite cannot change a primary key in place: the table is rebuilt, its rows copied.

CREATE TABLE llm_usage_new (
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
    tags             VARCHAR(1400) NOT NULL DEFAULT '',
    PRIMARY KEY (bucket_start, llm_id, tags)
);

INSERT INTO llm_usage_new (bucket_start, llm_id, scope, name, provider, model_name, calls, errors, input_tokens, output_tokens, cost, latency_ms_sum, latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000, latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000, tags)
SELECT bucket_start, llm_id, scope, name, provider, model_name, calls, errors, input_tokens, output_tokens, cost, latency_ms_sum, latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000, latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000, '' FROM llm_usage;

DROP TABLE llm_usage;
ALTER TABLE llm_usage_new RENAME TO llm_usage;
CREATE INDEX ix_llm_usage_llm_bucket ON llm_usage (llm_id, bucket_start);
