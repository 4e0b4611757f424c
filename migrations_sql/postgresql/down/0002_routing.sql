-- Reverses 0002_routing: no llm_scopes table (every scope routes by priority again), and no
-- weight, rpm or tpm columns on llms.

DROP TABLE IF EXISTS llm_scopes;
DROP FUNCTION IF EXISTS llmpool_scopes_changed();
ALTER TABLE llms DROP COLUMN IF EXISTS tpm, DROP COLUMN IF EXISTS rpm,
    DROP COLUMN IF EXISTS weight;
