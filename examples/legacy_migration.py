"""Migrating from the legacy functions: they still work, with a DeprecationWarning.

Run: OPENAI_API_KEY=... python examples/legacy_migration.py
"""

import warnings

from _setup import local_database

local_database()
warnings.simplefilter("always", DeprecationWarning)

# OLD (deprecated)
from llmpool import get_openai_llm, get_anthropic_llm, get_ollama_llm
llm = get_openai_llm()

# NEW (recommended)
from llmpool import get_llm, get_llm_with_fallback
llm = get_llm_with_fallback()

print(llm.invoke("Hello").content)
