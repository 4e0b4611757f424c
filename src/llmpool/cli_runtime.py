"""``llmpool demo``: the seed's example rows plus a fake one, and a real fallback walk, offline."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DEMO_ROW", "cmd_demo"]

#: The row that answers when nothing else can: langchain-core's fake chat model.
DEMO_ROW: dict[str, Any] = {
    "name": "Demo Fake",
    "provider": "fake",
    "model_name": "demo",
    "priority": 90,
    "config": {"responses": ["Machine learning is software that improves from examples."]},
}


def cmd_demo(args: argparse.Namespace) -> int:
    """Create a database, add the seed's rows and a fake row, and walk the fallback chain."""
    from llmpool.migrate import migrate, seed_starter_rows
    from llmpool.policy import FallbackPolicy
    from llmpool.pool import LLMPool

    with tempfile.TemporaryDirectory(prefix="llmpool-demo-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'demo.sqlite3'}"
        migrate(url)
        policy = FallbackPolicy(attempts=1, deadline=30)
        with LLMPool(url, poll_interval=0, policy=policy) as pool:
            store = pool.store
            seed_starter_rows(store, actor=args.actor)
            if not any(c.name == DEMO_ROW["name"] for c in store.list_llms()):
                store.add(DEMO_ROW, actor=args.actor)
            rows = store.list_llms()
            llm = pool.get_llm_with_fallback()
            answer = llm.invoke("Explain machine learning")
        meta = answer.response_metadata["llmpool"]
        walk = [
            {
                "name": a["name"],
                "outcome": a["outcome"],
                "detail": a.get("reason") or a.get("error"),
            }
            for a in meta["attempts"]
        ]
        data = {
            "database": url,
            "rows": [r.name for r in rows],
            "walk": walk,
            "answered_by": meta["name"],
            "answer": str(answer.content),
        }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"database: {url}")
    print(
        "rows in priority order: "
        + ", ".join(f"{r.name} ({r.priority}{'' if r.enabled else ', disabled'})" for r in rows)
    )
    print("\nget_llm_with_fallback().invoke('Explain machine learning'):")
    for step in walk:
        mark = {"ok": "answered", "error": "failed", "skipped": "skipped"}[step["outcome"]]
        detail = f": {step['detail']}" if step["detail"] else ""
        print(f"  {step['name']:<16} {mark}{detail}")
    print(f"\nanswer from {meta['name']}: {answer.content}")
    return 0
