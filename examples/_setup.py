"""Setup shared by the examples: a local database holding the usage guide's example rows.

With ``LLMPOOL_DATABASE_URL`` or ``DATABASE_URL`` set, the examples use that database as it is.
Otherwise they create an embedded SQLite file next to them and add the usage guide's rows
(GPT-4, GPT-3.5, Claude 3 Opus, Ollama Llama2) plus "Local Fake" (id ``abc-123-def-456``, the
id the guide's ``get_llm(llm_id=...)`` example uses), so every example runs offline. Rows
reference ``OPENAI_API_BASE`` / ``ANTHROPIC_BASE_URL`` when those are set, so the same rows can
talk to real providers or to local servers.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def local_database(*, enable_claude: bool = False) -> str:
    """Point llmpool at a ready database and return its URL."""
    configured = os.environ.get("LLMPOOL_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        return configured
    from llmpool.migrate import STARTER_ROWS, migrate
    from llmpool.repository.sql import SQLStore

    path = Path(os.environ.get("LLMPOOL_EXAMPLE_DB", HERE / "example.sqlite3"))
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    store = SQLStore(url)
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
    store.engine.dispose()
    os.environ["LLMPOOL_DATABASE_URL"] = url
    return url
