-- Reverses 0002_routing: no llm_scopes table (every scope routes by priority again), and no
-- weight, rpm or tpm columns on llms.

DROP TABLE IF EXISTS llm_scopes;
ALTER TABLE llms DROP COLUMN tpm;
ALTER TABLE llms DROP COLUMN rpm;
ALTER TABLE llms DROP COLUMN weight;
