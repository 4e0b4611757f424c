"""An experiment: 9 in 10 users on GPT-4o (control), 1 in 10 on Claude (candidate), each user
keeping their arm; thumbs given as feedback; the report per arm.

Run: python examples/experiment.py

Needs nothing else: the rows are offline `fake` models in memory. The same calls against real
rows: `llmpool experiment set global --arm control=GPT-4o --arm candidate=Claude --weight
control=9 --sticky session`, then `llmpool experiment report global`.
"""

from llmpool import InMemoryStore, LLMPool

store = InMemoryStore(
    [
        {"name": "GPT-4o", "provider": "fake", "model_name": "gpt-4o", "priority": 1,
         "config": {"responses": ["Paris, of course."]}},
        {"name": "Claude", "provider": "fake", "model_name": "claude", "priority": 2,
         "config": {"responses": ["It is Paris."]}},
    ]
)  # fmt: skip
store.set_experiment(
    "global",
    {
        "arms": {
            "control": {"rows": ["GPT-4o"], "weight": 9},
            "candidate": {"rows": ["Claude"], "weight": 1},
        },
        "sticky": "session",
    },
    actor="example",
)

with LLMPool(store, poll_interval=0) as pool:
    llm = pool.get_llm_with_fallback()
    for user in range(200):
        answer = llm.invoke(
            "What is the capital of France?", config={"metadata": {"session_key": f"user-{user}"}}
        )
        arm = answer.response_metadata["llmpool"]["arm"]
        # Every answer pleases the candidate arm's users; three in four of control's.
        pool.feedback(answer, "thumbs_up", arm == "candidate" or user % 4 > 0)
    for line in pool.experiment_report("global"):
        up = {m.metric: m for m in line.metrics}["thumbs_up"]
        print(
            f"{line.arm:<10} weight {line.weight:g}  calls {line.calls:>3}  "
            f"thumbs_up {up.mean:.2f} (95 % CI {up.low:.2f} to {up.high:.2f}, {up.method})"
        )
