"""The usage guide's main.py integration: the database's LLMs with fallback, else an Ollama
configured by environment variables (OLLAMA_BASE_URL, OLLAMA_CHAT_MODEL).

Run: python examples/main_integration.py

Needs langchain-ollama (pip install "llmpool[ollama]"). With the example database, the
database's chain loads (offline, "Local Fake" answers). To see the fallback to the environment's
Ollama, give it a database with no usable rows and an Ollama server:

    llmpool migrate --database-url sqlite:///empty.sqlite3
    LLMPOOL_DATABASE_URL=sqlite:///empty.sqlite3 OLLAMA_BASE_URL=http://localhost:11434 \
        python examples/main_integration.py
"""

import os

from _setup import local_database

local_database()

from langchain_ollama import ChatOllama

OLLAMA_CHAT_MODEL = os.environ.get("OLLAMA_CHAT_MODEL", "llama2")
OLLAMA_BASE_URL = os.environ.get("OLLAMA_BASE_URL", "http://localhost:11434")

from llmpool import get_llm, get_llm_with_fallback

# Try to load LLM from database, fallback to environment variables
try:
    llm = get_llm_with_fallback()
    print("✓ Loaded LLM from database with fallback support")
except Exception as e:
    print(f"⚠ Failed to load LLM from database: {e}")
    print(f"⚠ Falling back to environment-configured Ollama: {OLLAMA_CHAT_MODEL}")
    llm = ChatOllama(model=OLLAMA_CHAT_MODEL, base_url=OLLAMA_BASE_URL, temperature=0.2)

print("llm:", llm.invoke("Hello!").content)

# Better: keep the environment-configured Ollama as the last candidate of the chain itself,
# so it also answers when every database LLM fails at call time.
resilient = get_llm_with_fallback(
    fallbacks=[ChatOllama(model=OLLAMA_CHAT_MODEL, base_url=OLLAMA_BASE_URL, temperature=0.2)]
)
print("resilient:", resilient.invoke("Hello!").content)
