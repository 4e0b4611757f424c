-- 0005_spaces: the length of each vector space's vectors, the same for every process.
--
-- llm_spaces: one row per space (an embedding row's `space` label, or provider/model@dimensions
--   without one), written by the first answer any process gets in that space (INSERT ... ON
--   CONFLICT DO NOTHING: the first writer wins). From then on every process refuses an answer
--   of another length from a row of the space and falls back to the next row of the space.
--   Delete a space's row (after re-indexing with another model) to let it take a new length.
--   No trigger: a recorded length is not a change to llms.

CREATE TABLE llm_spaces (
    space        varchar(300) PRIMARY KEY,
    dimensions   integer      NOT NULL CHECK (dimensions > 0),
    llm_id       varchar(64)  NOT NULL,
    recorded_at  timestamptz  NOT NULL DEFAULT now()
);
