"""Advanced Usage: listing LLMs, the default config, instances from configs, and choosing by
provider (the usage guide's code, unchanged apart from the import lines).

Run: python examples/listing_and_selection.py

Needs OPENAI_API_KEY and ANTHROPIC_API_KEY (with OPENAI_API_BASE / ANTHROPIC_BASE_URL for
compatible servers): it calls the first row, GPT-4, and one OpenAI and one Anthropic model, so
"Claude 3 Opus" is added enabled here. A provider whose key is unset answers from a local
stand-in server in its wire format instead (examples/_standins.py), so it also runs offline.
"""

from _setup import local_database

local_database(enable_claude=True, standins=("openai", "anthropic"))

# --- List All LLMs ------------------------------------------------------------------------
from llmpool import get_llms_from_db

# Get all enabled LLMs, ordered by priority
llms = get_llms_from_db(enabled_only=True, scope="global")

for llm_config in llms:
    print(f"{llm_config['name']}: {llm_config['provider']} - {llm_config['model_name']}")
    print(f"  Priority: {llm_config['priority']}")
    print(f"  Default: {llm_config['is_default']}")

# --- Get Default LLM Config ---------------------------------------------------------------
from llmpool import get_default_llm_config

# Get default LLM configuration (doesn't create instance)
config = get_default_llm_config(scope="global")
print(f"Default LLM: {config['name']}")
print(f"Provider: {config['provider']}")
print(f"Model: {config['model_name']}")

# --- Create LLM Instance from Config ------------------------------------------------------
from llmpool import get_llms_from_db, create_llm_instance

# Get all LLMs
llms = get_llms_from_db()

# Create instance for the first one
if llms:
    llm_instance = create_llm_instance(llms[0])
    response = llm_instance.invoke("Test message")

print(f"{llms[0]['name']} says: {response.content}")

# --- Dynamic LLM Selection ----------------------------------------------------------------
from llmpool import get_llms_from_db, create_llm_instance

def get_llm_by_provider(provider: str):
    """Get first enabled LLM from specific provider."""
    llms = get_llms_from_db(enabled_only=True)
    for llm_config in llms:
        if llm_config['provider'] == provider:
            return create_llm_instance(llm_config)
    raise ValueError(f"No enabled LLM found for provider: {provider}")

# Use it
openai_llm = get_llm_by_provider("openai")
anthropic_llm = get_llm_by_provider("anthropic")

print("openai:", openai_llm.invoke("Hi").content)
print("anthropic:", anthropic_llm.invoke("Hi").content)
