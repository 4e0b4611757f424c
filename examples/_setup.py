"""Setup shared by the examples: a local database holding the usage guide's example rows.

Which database:

- ``LLMPOOL_DATABASE_URL`` or ``DATABASE_URL`` set: that database, used as it is (nothing is
  added to it; run ``llmpool migrate --seed`` against it first).
- ``LLMPOOL_SQLITE_PATH`` set: that SQLite file; created and given the rows below when it has
  no rows yet, never deleted or changed otherwise.
- neither: ``examples/example.sqlite3``, recreated with the rows below on every run.

The rows are the usage guide's (GPT-4, GPT-3.5, Claude 3 Opus, Ollama Llama2) plus "Local Fake"
(id ``abc-123-def-456``, the id the guide's ``get_llm(llm_id=...)`` example uses), so every
example runs offline. Rows reference ``OPENAI_API_BASE`` / ``ANTHROPIC_BASE_URL`` when those are
set, so the same rows can talk to real providers or to local servers. Examples that call OpenAI
or Anthropic directly pass ``standins=``: a provider whose key is unset then answers from a
local stand-in server (see ``_standins.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmpool.repository.sql.store import SQLStore

HERE = Path(__file__).resolve().parent


def local_database(*, enable_claude: bool = False, standins: Sequence[str] = ()) -> str:
    """Point llmpool at a ready database and return its URL.

    Args:
        enable_claude: Add "Claude 3 Opus" enabled (the guide's table has it disabled).
        standins: Providers ("openai", "anthropic") to serve from a local stand-in when their
            key variable is unset.
    """
    if standins:
        from _standins import start_standins

        start_standins(*standins)
    configured = os.environ.get("LLMPOOL_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        return configured
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    chosen = os.environ.get("LLMPOOL_SQLITE_PATH")
    path = Path(chosen) if chosen else HERE / "example.sqlite3"
    if not chosen:
        path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    store = SQLStore(url)
    if not store.list_llms(scope=None):
        _add_rows(store, enable_claude=enable_claude)
    store.engine.dispose()
    os.environ["LLMPOOL_DATABASE_URL"] = url
    return url


def _add_rows(store: SQLStore, *, enable_claude: bool) -> None:
    from llmpool.repository.sql.migrate import STARTER_ROWS

    offline = not os.environ.get("OLLAMA_BASE_URL")
    for row in STARTER_ROWS:
        values = {**row, "auth_meta": dict(row["auth_meta"])}
        if row["provider"] == "openai" and os.environ.get("OPENAI_API_BASE"):
            values["auth_meta"]["base_url_env"] = "OPENAI_API_BASE"
        if row["provider"] == "anthropic":
            values["enabled"] = enable_claude
            if os.environ.get("ANTHROPIC_BASE_URL"):
                values["auth_meta"]["base_url_env"] = "ANTHROPIC_BASE_URL"
        if offline and row.get("is_default"):
            values["is_default"] = False
        store.add(values, actor="examples")
    store.add(
        {
            "id": "abc-123-def-456",
            "name": "Local Fake",
            "provider": "fake",
            "model_name": "demo",
            "priority": 90,
            "is_default": offline,
            "config": {"responses": ["This answer comes from the local fake model."]},
        },
        actor="examples",
    )
