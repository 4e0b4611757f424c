"""The usage guide's Example: Multi-LLM Application.

The guide's class calls create_llm_instance without importing it; the import line below adds
it (the only change to the guide's code).

Run: python examples/multi_llm_service.py

Needs nothing else: offline, the comparison shows each row's error and the chat is answered by
"Local Fake". Set OPENAI_API_KEY (and OPENAI_API_BASE), OLLAMA_BASE_URL, ... for real answers.
"""

from _setup import local_database

local_database()

from llmpool import get_llm, get_llm_with_fallback, get_llms_from_db, create_llm_instance

class MultiLLMService:
    def __init__(self):
        # Primary LLM with fallback
        self.primary_llm = get_llm_with_fallback()
        
    def chat(self, message: str) -> str:
        """Standard chat using default LLM."""
        response = self.primary_llm.invoke(message)
        return response.content
    
    def compare_responses(self, message: str, provider: str = None):
        """Get responses from multiple LLMs for comparison."""
        llms = get_llms_from_db(enabled_only=True)
        
        if provider:
            llms = [l for l in llms if l['provider'] == provider]
        
        responses = {}
        for llm_config in llms[:3]:  # Compare up to 3
            try:
                llm_instance = create_llm_instance(llm_config)
                resp = llm_instance.invoke(message)
                responses[llm_config['name']] = resp.content
            except Exception as e:
                responses[llm_config['name']] = f"Error: {e}"
        
        return responses

# Usage
service = MultiLLMService()

# Standard chat
answer = service.chat("What is Python?")

# Compare multiple models
comparisons = service.compare_responses("Explain quantum computing")
for model, response in comparisons.items():
    print(f"\n{model}:\n{response}")

print(f"\nchat: {answer}")
