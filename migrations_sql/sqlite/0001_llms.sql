-- 0001_llms: the llms table, its audit log, and the change counter that caches watch.
--
-- llms: one row per LLM a service may use (the data contract in DESIGN.md).
--   At most one default per scope is enforced here by a partial unique index, not only in Python.
--   `version` is bumped by a trigger on every UPDATE, so caches keyed on (id, version) see
--   changes made by raw SQL too. JSON columns hold JSON text.
-- llmpool_state: one row whose `generation` changes on every INSERT/UPDATE/DELETE of llms;
--   a pool polls it with one cheap query.
-- llm_audit: who changed what and when, with the row before and after (references only: llms
--   holds no secrets).

CREATE TABLE llms (
    id          VARCHAR(36) PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    provider    VARCHAR(100) NOT NULL,
    model_name  VARCHAR(200) NOT NULL,
    scope       VARCHAR(100) NOT NULL DEFAULT 'global',
    priority    INTEGER NOT NULL DEFAULT 100,
    enabled     BOOLEAN NOT NULL DEFAULT 1,
    is_default  BOOLEAN NOT NULL DEFAULT 0,
    auth_meta   TEXT NOT NULL DEFAULT '{}',
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    version     INTEGER NOT NULL DEFAULT 1
);

CREATE UNIQUE INDEX uq_llms_scope_name ON llms (scope, name);
CREATE UNIQUE INDEX uq_llms_default_per_scope ON llms (scope) WHERE is_default;
CREATE INDEX ix_llms_fallback_order ON llms (scope, priority, name, id);

CREATE TABLE llm_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    llm_id  VARCHAR(64) NOT NULL,
    actor   VARCHAR(200) NOT NULL,
    action  VARCHAR(32) NOT NULL,
    before  TEXT,
    after   TEXT,
    at      TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX ix_llm_audit_llm_at ON llm_audit (llm_id, at);
CREATE INDEX ix_llm_audit_at ON llm_audit (at);

CREATE TABLE llmpool_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
);
INSERT INTO llmpool_state (id, generation) VALUES (1, 1);

-- recursive_triggers is off by default, so this UPDATE does not fire itself again.
CREATE TRIGGER llms_bump_version AFTER UPDATE ON llms
FOR EACH ROW WHEN NEW.version = OLD.version
BEGIN
    UPDATE llms
       SET version = OLD.version + 1,
           updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
     WHERE id = NEW.id;
END;

CREATE TRIGGER llms_changed_insert AFTER INSERT ON llms
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llms_changed_update AFTER UPDATE ON llms
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llms_changed_delete AFTER DELETE ON llms
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;
