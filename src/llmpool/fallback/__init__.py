"""The fallback models (`model`, `embeddings`) on one walk (`walk`): candidates in order, the
first that answers wins; `calls`, `record`, `structured`, `policy` and `breakers` serve it."""
