-- Reverses 0005_spaces: drops llm_spaces (the recorded vector lengths are lost).

DROP TABLE IF EXISTS llm_spaces;
