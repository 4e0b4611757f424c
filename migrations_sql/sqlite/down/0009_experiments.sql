-- Reverses 0009_experiments: no llm_feedback table (the feedback given is lost), no
-- experiment definitions, and scopes that routed as an experiment route by priority.

DROP TABLE IF EXISTS llm_feedback;
UPDATE llm_scopes SET routing = 'priority' WHERE routing = 'experiment';

CREATE TABLE llm_scopes_0002 (
    scope       VARCHAR(100) PRIMARY KEY CHECK (length(trim(scope)) > 0),
    routing     VARCHAR(32) NOT NULL DEFAULT 'priority'
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy')),
    updated_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    version     INTEGER NOT NULL DEFAULT 1
);

INSERT INTO llm_scopes_0002 (scope, routing, updated_at, version)
    SELECT scope, routing, updated_at, version FROM llm_scopes;
DROP TABLE llm_scopes;
ALTER TABLE llm_scopes_0002 RENAME TO llm_scopes;

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
