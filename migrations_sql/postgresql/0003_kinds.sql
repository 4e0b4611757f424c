-- 0003_kinds: what kind of model a row is, and the vector space of an embedding row.
--
-- llms.kind: 'chat' (every existing row, and the default) or 'embedding'. Chat functions read
--   only chat rows and embedding functions only embedding rows.
-- llms.space: an embedding row's vector space label, set by an admin when two deployments
--   serve the same model (OpenAI and Azure OpenAI, two regions); NULL means the space is the
--   row's model_name and its config's dimensions. A fallback chain of embedding rows never
--   crosses between spaces.
-- The one-default-per-scope rule becomes one default per scope and kind: a scope has a default
--   chat model and a default embedding model (uq_llms_default_per_scope_kind replaces
--   uq_llms_default_per_scope).

ALTER TABLE llms
    ADD COLUMN kind varchar(20) NOT NULL DEFAULT 'chat'
        CONSTRAINT ck_llms_kind CHECK (kind IN ('chat', 'embedding')),
    ADD COLUMN space varchar(200) NULL
        CONSTRAINT ck_llms_space CHECK (space IS NULL OR length(btrim(space)) > 0);

DROP INDEX uq_llms_default_per_scope;
CREATE UNIQUE INDEX uq_llms_default_per_scope_kind ON llms (scope, kind) WHERE is_default;
