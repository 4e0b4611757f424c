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
--   llmpool_state.generation and sends NOTIFY on `llmpool_changes` like a change to llms, so
--   running pools switch strategy at once.

ALTER TABLE llms
    ADD COLUMN weight integer NOT NULL DEFAULT 1
        CONSTRAINT ck_llms_weight CHECK (weight BETWEEN 0 AND 1000000),
    ADD COLUMN rpm integer NULL
        CONSTRAINT ck_llms_rpm CHECK (rpm IS NULL OR rpm > 0),
    ADD COLUMN tpm integer NULL
        CONSTRAINT ck_llms_tpm CHECK (tpm IS NULL OR tpm > 0);

CREATE TABLE llm_scopes (
    scope       varchar(100) PRIMARY KEY CHECK (length(btrim(scope)) > 0),
    routing     varchar(32)  NOT NULL DEFAULT 'priority'
        CONSTRAINT ck_llm_scopes_routing
        CHECK (routing IN ('priority', 'weighted', 'latency', 'least_busy')),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    version     integer      NOT NULL DEFAULT 1
);

CREATE TRIGGER llm_scopes_bump_version BEFORE UPDATE ON llm_scopes
    FOR EACH ROW EXECUTE FUNCTION llmpool_bump_version();

CREATE FUNCTION llmpool_scopes_changed() RETURNS trigger AS $$
DECLARE
    gen bigint;
    changed text;
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1 RETURNING generation INTO gen;
    IF TG_OP = 'DELETE' THEN
        changed := OLD.scope;
    ELSE
        changed := NEW.scope;
    END IF;
    PERFORM pg_notify(
        'llmpool_changes',
        json_build_object(
            'schema', current_schema(), 'scope', changed, 'op', TG_OP, 'generation', gen
        )::text
    );
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER llm_scopes_changed AFTER INSERT OR UPDATE OR DELETE ON llm_scopes
    FOR EACH ROW EXECUTE FUNCTION llmpool_scopes_changed();
