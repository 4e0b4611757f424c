-- 0002_routing: how a scope spreads its calls, and each row's weight and rate limits.
--
-- llms.weight: the row's share of calls among rows of equal priority when its scope routes
--   'weighted' (0 to 1,000,000; 0 makes the row a fallback only); default 1.
-- llms.rpm, llms.tpm: requests and tokens per minute the row takes at most; NULL is no limit.
--   A row at its limit is skipped before any network call, and tried again when its window
--   frees (counted per process, or across replicas through Redis).
-- llm_scopes: one row per scope that routes other than 'priority' (a scope without a row, and
--   every scope before this migration, routes by priority): 'priority', 'weighted', 'latency'
--   or 'least_busy'. `version` is bumped on every UPDATE; every change bumps
--   llmpool_state.generation like a change to llms, so running pools switch strategy on their
--   next check.

ALTER TABLE llms ADD COLUMN weight INTEGER NOT NULL DEFAULT 1
    CHECK (weight BETWEEN 0 AND 1000000);
ALTER TABLE llms ADD COLUMN rpm INTEGER NULL CHECK (rpm IS NULL OR rpm > 0);
ALTER TABLE llms ADD COLUMN tpm INTEGER NULL CHECK (tpm IS NULL OR tpm > 0);

CREATE TABLE llm_scopes (
    scope       VARCHAR(100) PRIMARY KEY CHECK (length(trim(scope)) > 0),
    routing     VARCHAR(32) NOT NULL DEFAULT 'priority'
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy')),
    updated_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    version     INTEGER NOT NULL DEFAULT 1
);

CREATE TRIGGER llm_scopes_bump_version AFTER UPDATE ON llm_scopes
FOR EACH ROW WHEN NEW.version = OLD.version
BEGIN
    UPDATE llm_scopes
       SET version = OLD.version + 1,
           updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
     WHERE scope = NEW.scope;
END;

CREATE TRIGGER llm_scopes_changed_insert AFTER INSERT ON llm_scopes
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llm_scopes_changed_update AFTER UPDATE ON llm_scopes
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llm_scopes_changed_delete AFTER DELETE ON llm_scopes
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;
