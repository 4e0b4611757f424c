-- 0009_experiments: a scope may route as an experiment, and calls may be given feedback.
--
-- llm_scopes.routing may also be 'experiment'; llm_scopes.experiment is then the scope's
--   definition, a JSON object: {"arms": {"control": {"rows": ["GPT-4o"], "weight": 9}, ...},
--   "sticky": null | "session" | "tag:NAME"} (rows by name within the scope, weights > 0).
--   It stays when the scope routes otherwise again, so `llmpool routing SCOPE experiment`
--   resumes it. A change bumps llmpool_state.generation and sends NOTIFY (0002's trigger).
-- llm_feedback: one row per call and metric (a thumbs-up, a score): the call's id from its
--   answer's metadata, the scope, arm and row that served it, the metric's name and value, and
--   when it was given; giving a metric again for a call replaces its value. Pools write it in
--   batches off the call path. No trigger: feedback is not a change to llms.

ALTER TABLE llm_scopes
    DROP CONSTRAINT ck_llm_scopes_routing,
    ADD CONSTRAINT ck_llm_scopes_routing
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy', 'experiment')),
    ADD COLUMN experiment jsonb NULL
        CONSTRAINT ck_llm_scopes_experiment
        CHECK (experiment IS NULL OR jsonb_typeof(experiment) = 'object');

CREATE TABLE llm_feedback (
    call_id     varchar(64)      NOT NULL,
    metric      varchar(64)      NOT NULL,
    scope       varchar(100)     NOT NULL,
    arm         varchar(64)      NOT NULL,
    llm_id      varchar(64)      NOT NULL,
    value       double precision NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, metric)
);

CREATE INDEX ix_llm_feedback_scope_created ON llm_feedback (scope, created_at);
