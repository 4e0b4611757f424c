-- 0008_quotas: budgets and rate limits on a row, a scope, a provider or a tag's value.
--
-- llm_quotas: one row per (kind, target). kind: 'row' (target: the row's id), 'scope' (the
--   scope's name), 'provider' (the provider's name) or 'tag' (a tag pair 'name=value', as a
--   call's llmpool_tags give it). budget: the most the target's calls may cost per UTC
--   `period` ('day' or 'month'), in the rows' prices' currency; rpm, tpm: requests and tokens
--   per minute. NULL is no limit; at least one is set. A tag's or scope's quota refuses a call
--   that would pass it (QuotaExceededError); a row's or provider's skips the row (fallback).
--   Every change bumps llmpool_state.generation and sends NOTIFY on `llmpool_changes` like a
--   change to llms, so running pools enforce it at once.

CREATE TABLE llm_quotas (
    kind        varchar(16)      NOT NULL
        CONSTRAINT ck_llm_quotas_kind CHECK (kind IN ('row', 'scope', 'provider', 'tag')),
    target      varchar(200)     NOT NULL CHECK (length(btrim(target)) > 0),
    budget      double precision NULL
        CONSTRAINT ck_llm_quotas_budget CHECK (budget IS NULL OR budget > 0),
    period      varchar(8)       NULL
        CONSTRAINT ck_llm_quotas_period CHECK (
            (budget IS NULL AND period IS NULL)
            OR (budget IS NOT NULL AND period IN ('day', 'month'))
        ),
    rpm         integer          NULL CONSTRAINT ck_llm_quotas_rpm CHECK (rpm IS NULL OR rpm > 0),
    tpm         integer          NULL CONSTRAINT ck_llm_quotas_tpm CHECK (tpm IS NULL OR tpm > 0),
    created_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT ck_llm_quotas_some CHECK (
        budget IS NOT NULL OR rpm IS NOT NULL OR tpm IS NOT NULL
    ),
    PRIMARY KEY (kind, target)
);

CREATE FUNCTION llmpool_quotas_changed() RETURNS trigger AS $$
DECLARE
    gen bigint;
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1 RETURNING generation INTO gen;
    PERFORM pg_notify(
        'llmpool_changes',
        json_build_object(
            'schema', current_schema(), 'quotas', true, 'op', TG_OP, 'generation', gen
        )::text
    );
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER llm_quotas_changed AFTER INSERT OR UPDATE OR DELETE ON llm_quotas
    FOR EACH STATEMENT EXECUTE FUNCTION llmpool_quotas_changed();
