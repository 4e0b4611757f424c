-- Reverses 0001_llms: drops the llms table, its audit log and the change counter, with the
-- triggers that keep `version` and `generation` current (the rows and the audit history are
-- lost).

DROP TRIGGER IF EXISTS llms_changed_delete;
DROP TRIGGER IF EXISTS llms_changed_update;
DROP TRIGGER IF EXISTS llms_changed_insert;
DROP TRIGGER IF EXISTS llms_bump_version;
DROP INDEX IF EXISTS ix_llm_audit_at;
DROP INDEX IF EXISTS ix_llm_audit_llm_at;
DROP TABLE IF EXISTS llm_audit;
DROP TABLE IF EXISTS llmpool_state;
DROP INDEX IF EXISTS ix_llms_fallback_order;
DROP INDEX IF EXISTS uq_llms_default_per_scope;
DROP INDEX IF EXISTS uq_llms_scope_name;
DROP TABLE IF EXISTS llms;
