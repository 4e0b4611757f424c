-- Reverses 0008_quotas: no llm_quotas table (no quota is enforced any more).

DROP TABLE IF EXISTS llm_quotas;
DROP FUNCTION IF EXISTS llmpool_quotas_changed();
