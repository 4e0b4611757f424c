"""The ``llms`` table in SQL: PostgreSQL through psycopg 3, and SQLite."""
