-- Reverses 0003_kinds: one default per scope again, and no kind or space columns.
--
-- The embedding rows are deleted first: without a kind column they would read as chat rows,
-- and chat functions would hand out embedding models.

DELETE FROM llms WHERE kind = 'embedding';
DROP INDEX IF EXISTS uq_llms_default_per_scope_kind;
CREATE UNIQUE INDEX uq_llms_default_per_scope ON llms (scope) WHERE is_default;
ALTER TABLE llms DROP COLUMN IF EXISTS space, DROP COLUMN IF EXISTS kind;
