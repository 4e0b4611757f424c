-- 0004_usage: llm_usage, the calls, tokens and cost of each row, in minute buckets.
--
-- llm_usage: one row per (bucket_start, llm_id): the calls made to that row of llms in the
--   minute starting at bucket_start (UTC, text 'YYYY-MM-DD HH:MM:SS.ffffff'), how many failed,
--   the tokens they used (usage_metadata) and their cost (the row's prices, in the prices'
--   currency). scope, name, provider and model_name are the row's labels when the calls were
--   made, so the history survives renames and deletes. Pools aggregate in memory and add their
--   batches here (INSERT ... ON CONFLICT DO UPDATE SET calls = calls + excluded.calls, ...), so
--   the processes sharing the file share one count, which also holds the spend of the rows'
--   budgets. No trigger: writing usage is not a change to llms (llmpool_state.generation stays).

CREATE TABLE llm_usage (
    bucket_start   TIMESTAMP    NOT NULL,
    llm_id         VARCHAR(64)  NOT NULL,
    scope          VARCHAR(100) NOT NULL,
    name           VARCHAR(200) NOT NULL,
    provider       VARCHAR(100) NOT NULL,
    model_name     VARCHAR(200) NOT NULL,
    calls          INTEGER      NOT NULL DEFAULT 0 CHECK (calls >= 0),
    errors         INTEGER      NOT NULL DEFAULT 0 CHECK (errors >= 0),
    input_tokens   INTEGER      NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens  INTEGER      NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost           REAL         NOT NULL DEFAULT 0 CHECK (cost >= 0),
    PRIMARY KEY (bucket_start, llm_id)
);

CREATE INDEX ix_llm_usage_llm_bucket ON llm_usage (llm_id, bucket_start);
