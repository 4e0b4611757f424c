-- Reverses 0009_experiments: no llm_feedback table (the feedback given is lost), no
-- experiment definitions, and scopes that routed as an experiment route by priority.

DROP TABLE IF EXISTS llm_feedback;
UPDATE llm_scopes SET routing = 'priority' WHERE routing = 'experiment';
ALTER TABLE llm_scopes
    DROP COLUMN IF EXISTS experiment,
    DROP CONSTRAINT ck_llm_scopes_routing,
    ADD CONSTRAINT ck_llm_scopes_routing
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy'));
