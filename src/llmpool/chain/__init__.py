"""From rows to chains (`llmpool.chain.builder`), what every call of a scope uses, built once
per generation; the order of a call's candidates (`llmpool.chain.routing`)."""
