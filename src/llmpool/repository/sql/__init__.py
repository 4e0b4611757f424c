"""The ``llms`` table in SQL: PostgreSQL through psycopg 3, and SQLite.

- `llmpool.repository.sql.engine`: where the database is, engines, and how errors read.
- `llmpool.repository.sql.schema`: the tables as SQLAlchemy Core, and the row parser.
- `llmpool.repository.sql.store`: `SQLStore`, the admin API (reads and audited writes).
- `llmpool.repository.sql.async_store`: `AsyncSQLRepository`, the async reads.
- `llmpool.repository.sql.migrate`: the SQL migrations shipped in the wheel.
"""
