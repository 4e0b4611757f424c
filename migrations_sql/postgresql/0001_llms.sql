-- 0001_llms: the llms table, its audit log, and the change counter that caches watch.
--
-- llms: one row per LLM a service may use (the data contract in DESIGN.md).
--   At most one default per scope is enforced here by a partial unique index, not only in Python.
--   `version` is bumped by a trigger on every UPDATE, so caches keyed on (id, version) see
--   changes made by raw SQL too.
-- llmpool_state: one row whose `generation` changes on every INSERT/UPDATE/DELETE of llms;
--   a pool polls it with one cheap query. Each change also sends NOTIFY on channel
--   `llmpool_changes` with a JSON payload naming the schema, so listeners in other schemas on the
--   same database ignore it.
-- llm_audit: who changed what and when, with the row before and after (references only: llms
--   holds no secrets).

CREATE TABLE llms (
    id          uuid PRIMARY KEY,
    name        varchar(200) NOT NULL CHECK (length(btrim(name)) > 0),
    provider    varchar(100) NOT NULL CHECK (length(btrim(provider)) > 0),
    model_name  varchar(200) NOT NULL CHECK (length(btrim(model_name)) > 0),
    scope       varchar(100) NOT NULL DEFAULT 'global',
    priority    integer      NOT NULL DEFAULT 100,
    enabled     boolean      NOT NULL DEFAULT true,
    is_default  boolean      NOT NULL DEFAULT false,
    auth_meta   jsonb        NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(auth_meta) = 'object'),
    config      jsonb        NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    version     integer      NOT NULL DEFAULT 1
);

CREATE UNIQUE INDEX uq_llms_scope_name ON llms (scope, name);
CREATE UNIQUE INDEX uq_llms_default_per_scope ON llms (scope) WHERE is_default;
CREATE INDEX ix_llms_fallback_order ON llms (scope, priority, name, id);

CREATE TABLE llm_audit (
    id      bigserial PRIMARY KEY,
    llm_id  varchar(64)  NOT NULL,
    actor   varchar(200) NOT NULL,
    action  varchar(32)  NOT NULL,
    before  jsonb,
    after   jsonb,
    at      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX ix_llm_audit_llm_at ON llm_audit (llm_id, at);
CREATE INDEX ix_llm_audit_at ON llm_audit (at);

CREATE TABLE llmpool_state (
    id          integer PRIMARY KEY CHECK (id = 1),
    generation  bigint NOT NULL
);
INSERT INTO llmpool_state (id, generation) VALUES (1, 1);

CREATE FUNCTION llmpool_bump_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER llms_bump_version BEFORE UPDATE ON llms
    FOR EACH ROW EXECUTE FUNCTION llmpool_bump_version();

CREATE FUNCTION llmpool_llms_changed() RETURNS trigger AS $$
DECLARE
    gen bigint;
    row_id text;
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1 RETURNING generation INTO gen;
    IF TG_OP = 'DELETE' THEN
        row_id := OLD.id::text;
    ELSE
        row_id := NEW.id::text;
    END IF;
    PERFORM pg_notify(
        'llmpool_changes',
        json_build_object('schema', current_schema(), 'id', row_id, 'op', TG_OP, 'generation', gen)::text
    );
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER llms_changed AFTER INSERT OR UPDATE OR DELETE ON llms
    FOR EACH ROW EXECUTE FUNCTION llmpool_llms_changed();
