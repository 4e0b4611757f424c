"""The usage guide's Fallback Chain Example: GPT-4, then GPT-3.5, then Ollama; Claude is disabled.

Run: python examples/fallback.py

Needs nothing else: offline, GPT-4, GPT-3.5 (no OPENAI_API_KEY) and Ollama (no OLLAMA_BASE_URL)
are skipped and "Local Fake" answers. Set those variables to watch real providers fail over.
"""

from _setup import local_database

local_database()

from llmpool import get_llm_with_fallback, get_llms_from_db

for config in get_llms_from_db(enabled_only=False):
    state = "enabled" if config["enabled"] else "disabled"
    print(f"{config['priority']:>3}  {config['name']:<16} {state}")

llm = get_llm_with_fallback()
response = llm.invoke("Explain machine learning")
print(response.content)

for attempt in response.response_metadata["llmpool"]["attempts"]:
    detail = attempt.get("error") or attempt.get("reason") or ""
    print(f"tried {attempt['name']}: {attempt['outcome']} {detail}".rstrip())
