-- 0008_quotas: budgets and rate limits on a row, a scope, a provider or a tag's value.
--
-- llm_quotas: one row per (kind, target). kind: 'row' (target: the row's id), 'scope' (the
--   scope's name), 'provider' (the provider's name) or 'tag' (a tag pair 'name=value', as a
--   call's llmpool_tags give it). budget: the most the target's calls may cost per UTC
--   `period` ('day' or 'month'), in the rows' prices' currency; rpm, tpm: requests and tokens
--   per minute. NULL is no limit; at least one is set. A tag's or scope's quota refuses a call
--   that would pass it (QuotaExceededError); a row's or provider's skips the row (fallback).
--   Every change bumps llmpool_state.generation like a change to llms, so running pools
--   enforce it on their next check.

CREATE TABLE llm_quotas (
    kind        VARCHAR(16) NOT NULL CHECK (kind IN ('row', 'scope', 'provider', 'tag')),
    target      VARCHAR(200) NOT NULL CHECK (length(trim(target)) > 0),
    budget      REAL NULL CHECK (budget IS NULL OR budget > 0),
    period      VARCHAR(8) NULL CHECK (
        (budget IS NULL AND period IS NULL)
        OR (budget IS NOT NULL AND period IN ('day', 'month'))
    ),
    rpm         INTEGER NULL CHECK (rpm IS NULL OR rpm > 0),
    tpm         INTEGER NULL CHECK (tpm IS NULL OR tpm > 0),
    created_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at  TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    CHECK (budget IS NOT NULL OR rpm IS NOT NULL OR tpm IS NOT NULL),
    PRIMARY KEY (kind, target)
);

CREATE TRIGGER llm_quotas_changed_insert AFTER INSERT ON llm_quotas
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llm_quotas_changed_update AFTER UPDATE ON llm_quotas
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER llm_quotas_changed_delete AFTER DELETE ON llm_quotas
BEGIN
    UPDATE llmpool_state SET generation = generation + 1 WHERE id = 1;
END;
