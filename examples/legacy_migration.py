"""Migrating from the legacy functions: they still work, with a DeprecationWarning.

Run: python examples/legacy_migration.py

Needs OPENAI_API_KEY (and OPENAI_API_BASE for an OpenAI-compatible server): get_openai_llm()
reads them. When OPENAI_API_KEY is unset, a local stand-in server answers in OpenAI's wire
format instead (examples/_standins.py), so it also runs offline.
"""

import warnings

from _setup import local_database

local_database(standins=("openai",))
warnings.simplefilter("always", DeprecationWarning)

# OLD (deprecated)
from llmpool import get_openai_llm, get_anthropic_llm, get_ollama_llm
llm = get_openai_llm()

# NEW (recommended)
from llmpool import get_llm, get_llm_with_fallback
llm = get_llm_with_fallback()

print(llm.invoke("Hello").content)
