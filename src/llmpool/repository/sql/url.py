"""Where the database is, and how its URL is shown (password masked)."""

from __future__ import annotations

import os

from sqlalchemy import exc
from sqlalchemy.engine import URL, Engine, make_url

from llmpool.errors import DatabaseError

#: What `resolve_database_url` accepts, as messages say it.
SUPPORTED_SCHEMES = (
    "postgresql:// (also postgres://, postgresql+psycopg://; psycopg 3) and sqlite:// "
    "(embedded; sqlite+aiosqlite:// for async)"
)


def resolve_database_url(url: str | URL | None = None) -> URL:
    """Return the database URL llmpool uses (``None``: ``LLMPOOL_DATABASE_URL``, else
    ``DATABASE_URL``, else the SQLite file ``LLMPOOL_SQLITE_PATH`` or ``./llmpool.sqlite3``),
    PostgreSQL ones set to psycopg 3 (`DatabaseError`: unparseable or unsupported)."""
    if url is None:
        url = (
            os.environ.get("LLMPOOL_DATABASE_URL")
            or os.environ.get("DATABASE_URL")
            or "sqlite:///" + os.environ.get("LLMPOOL_SQLITE_PATH", "llmpool.sqlite3")
        )
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        msg = "Could not parse the database URL; expected e.g. postgresql://user:pass@host/db"
        raise DatabaseError(msg) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        scheme = parsed.drivername
        raise DatabaseError(
            f"Unsupported database URL scheme {scheme!r} ({mask_url(parsed)}): llmpool "
            f"supports {SUPPORTED_SCHEMES}"
        )
    return parsed


def mask_url(url: str | URL | Engine) -> str:
    """Render a URL with its password replaced by ``***``."""
    if isinstance(url, Engine):
        url = url.url
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)
