-- 0009_experiments: a scope may route as an experiment, and calls may be given feedback.
--
-- llm_scopes.routing may also be 'experiment'; llm_scopes.experiment is then the scope's
--   definition, a JSON object as text: {"arms": {"control": {"rows": ["GPT-4o"], "weight": 9},
--   ...}, "sticky": null | "session" | "tag:NAME"} (rows by name within the scope, weights
--   > 0). It stays when the scope routes otherwise again, so `llmpool routing SCOPE
--   experiment` resumes it. SQLite cannot change a CHECK constraint: llm_scopes is rebuilt,
--   with 0002's triggers (a change bumps llmpool_state.generation).
-- llm_feedback: one row per call and metric (a thumbs-up, a score): the call's id from its
--   answer's metadata, the scope, arm and row that served it, the metric's name and value, and
--   when it was given (UTC text); giving a metric again for a call replaces its value. Pools
--   write it in batches off the call path. No trigger: feedback is not a change to llms.

CREATE TABLE llm_scopes_0009 (
    scope       VARCHAR(100) PRIMARY KEY CHECK (length(trim(scope)) > 0),
    routing     VARCHAR(32) NOT NULL DEFAULT 'priority'
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy', 'experiment')),
    updated_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    version     INTEGER NOT NULL DEFAULT 1,
    experiment  TEXT NULL
        CHECK (experiment IS NULL OR (json_valid(experiment) AND json_type(experiment) = 'object'))
);

INSERT INTO llm_scopes_0009 (scope, routing, updated_at, version)
    SELECT scope, routing, updated_at, version FROM llm_scopes;
DROP TABLE llm_scopes;
ALTER TABLE llm_scopes_0009 RENAME TO llm_scopes;

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

CREATE TABLE llm_feedback (
    call_id     VARCHAR(64)  NOT NULL,
    metric      VARCHAR(64)  NOT NULL,
    scope       VARCHAR(100) NOT NULL,
    arm         VARCHAR(64)  NOT NULL,
    llm_id      VARCHAR(64)  NOT NULL,
    value       REAL         NOT NULL,
    created_at  TIMESTAMP    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    PRIMARY KEY (call_id, metric)
);

CREATE INDEX ix_llm_feedback_scope_created ON llm_feedback (scope, created_at);
