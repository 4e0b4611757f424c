"""Quick Start: the three ways to load an LLM (the usage guide's first section).

Run: python examples/quickstart.py

Needs nothing else: offline, the rows that need a key or a server are skipped and "Local Fake"
answers. Set OPENAI_API_KEY (and OPENAI_API_BASE), OLLAMA_BASE_URL, ... to use real providers.
"""

from _setup import local_database

local_database()

# --- 1. Get Default LLM -------------------------------------------------------------------
from llmpool import get_llm

# Get the default LLM from database
llm = get_llm()

# Use it
response = llm.invoke("Hello, how are you?")
print(response.content)

# --- 2. Get Specific LLM by ID ------------------------------------------------------------
from llmpool import get_llm

# Get a specific LLM by its database ID
llm = get_llm(llm_id="abc-123-def-456")

# Use it
response = llm.invoke("What is Python?")
print(response.content)

# --- 3. Get LLM with Automatic Fallback (Recommended) -------------------------------------
from llmpool import get_llm_with_fallback

# Get LLM with automatic fallback to next priority if one fails
llm = get_llm_with_fallback()

# Use it
response = llm.invoke("Explain machine learning")
print(response.content)

print("answered by:", response.response_metadata["llmpool"]["name"])
