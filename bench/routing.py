"""Routing strategies and rate limits: their cost per call, against the bare model and LiteLLM.

Subjects (the same in the wall-clock run, ``python -m bench.run --only routing``, and in the
instruction counts, ``python -m bench.instructions``):

- a fallback model over two rows of equal priority, routed ``priority``, ``weighted``,
  ``latency`` and ``least_busy`` (the last two with the `RowStats` check they read), primary
  answering: the strategies' own cost, with its target of 1.10x the bare model;
- the same through a pool (usage tracking off; the pool's observers on), for reference;
- a local rate-limit check (`RateLimiter.admit` on a row with an ``rpm``, then `release`);
- LiteLLM's Router over two deployments of one model (``mock_response``: no network), with
  ``simple-shuffle`` and ``latency-based-routing``, as references (wall clock only: LiteLLM's
  import alone takes minutes under callgrind).

The real 60-second window is measured by ``python -m bench.routing --window``: 8 processes
sharing Redis call a row with ``rpm=60`` for a while; the worst 60-second window the local
server saw is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STRATEGIES = ("priority", "weighted", "latency", "least_busy")


def _pool(strategy: str, track_usage: bool = False) -> Any:
    from llmpool import LLMPool
    from llmpool.repository.memory import InMemoryStore

    rows = [
        {"name": f"row {i}", "provider": "fake", "model_name": "m", "priority": 1,
         "config": {"responses": ["ok"]}}
        for i in range(2)
    ]  # fmt: skip
    store = InMemoryStore(rows)
    store.set_routing("global", strategy)
    # The usage meter's flush and spend reading run every so many seconds in a thread of their
    # own, not per call: an hour apart, none lands in one measured process and not the other.
    return LLMPool(
        store,
        poll_interval=0,
        track_usage=track_usage,
        routing_seed=1,
        usage_flush_interval=3600,
        budget_refresh=3600,
    )


def strategy_subjects() -> dict[str, Callable[[], Any]]:
    """The pool's fallback model under each strategy, primary answering."""
    subjects: dict[str, Callable[[], Any]] = {}
    for strategy in STRATEGIES:
        llm = _pool(strategy).get_llm_with_fallback()
        subjects[f"primary answers: llmpool pool, {strategy}"] = lambda llm=llm: llm.invoke("hi")
    row = llm._current().candidates[0].model  # the model a pool's row built, called bare
    subjects[ROW_BARE] = lambda: row.invoke("hi")
    metered = _pool("priority", track_usage=True).get_llm_with_fallback()
    subjects[METERED] = lambda: metered.invoke("hi")
    metadata = {"metadata": {"request_id": "r-42", "client": "web"}}
    subjects[METADATA] = lambda: metered.invoke("hi", metadata)
    tags = {"metadata": {"llmpool_tags": {"tenant": "acme", "feature": "chat"}}}
    subjects[TAGGED] = lambda: metered.invoke("hi", tags)
    pool = _pool("priority", track_usage=True)
    pool.store.set_quota("tag", "tenant=acme", budget=1e9, period="day")
    budgeted = pool.get_llm_with_fallback()
    subjects[TAG_BUDGET] = lambda: budgeted.invoke("hi", tags)
    return subjects


#: The pool as a service runs it: counting every call's usage (in memory here: no database).
METERED = "primary answers: llmpool pool with its usage meter"
#: The model a pool's row builds (the `fake` provider's, which also counts tokens), called
#: bare: the baseline of the pool's subjects, whose rows answer with it.
ROW_BARE = "bare fake model of a pool's row (the fake provider's)"
#: The same, each call with run metadata (LangChain carries it; llmpool reads two keys of it).
METADATA = "primary answers: llmpool pool with its usage meter, run metadata"
#: The same, the run metadata naming two tags (`llmpool.tags`): checked, counted per tag set.
TAGGED = "primary answers: llmpool pool with its usage meter, two tags"
#: The same, one of the tags with a day's budget (`llmpool.chain.quotas`, counted in-process).
TAG_BUDGET = "primary answers: llmpool pool with its usage meter, two tags, one tag budget"


def model_subjects() -> dict[str, Callable[[], Any]]:
    """A fallback model over two rows of equal priority under each strategy, primary
    answering: the strategy's own cost (the latency and least_busy ones with the `RowStats`
    admission check they read), without a pool's other observers."""
    import random

    from bench.run import _candidates, _fake
    from llmpool.chain.routing import make_routing
    from llmpool.chain.stats import RowStats
    from llmpool.fallback.model import FallbackChatModel

    subjects: dict[str, Callable[[], Any]] = {}
    for strategy in STRATEGIES:
        stats = RowStats()
        llm = FallbackChatModel(
            candidates=_candidates(_fake(), _fake()),
            routing=make_routing(strategy, stats, random.Random(1)),
            admissions=(stats,) if strategy in ("latency", "least_busy") else (),
        )
        subjects[f"primary answers: llmpool FallbackChatModel, {strategy}"] = lambda llm=llm: (
            llm.invoke("hi")
        )
    return subjects


def limit_check() -> Callable[[], Any]:
    """One local rate-limit check: admit (a window with room) and release."""
    from llmpool.contracts import Candidate
    from llmpool.limits import RateLimiter
    from llmpool.models import LLMConfig

    limiter = RateLimiter()
    row = Candidate(LLMConfig(id="r", name="r", provider="fake", model_name="m", rpm=1000))

    def check() -> None:
        limiter.admit(row, None)
        limiter.release(row, None)

    return check


def litellm_subjects() -> dict[str, Callable[[], Any]]:
    """LiteLLM's Router over two deployments, by strategy (empty without litellm)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return {}
    litellm.suppress_debug_info = True
    model_list = [
        {
            "model_name": "chat",
            "litellm_params": {"model": f"openai/d{i}", "api_key": "sk-x", "mock_response": "ok"},
        }
        for i in range(2)
    ]
    messages = [{"role": "user", "content": "hi"}]
    subjects: dict[str, Callable[[], Any]] = {}
    for strategy in ("simple-shuffle", "latency-based-routing"):
        router = litellm.Router(model_list=model_list, routing_strategy=strategy, num_retries=0)
        subjects[f"LiteLLM Router ({strategy}, mock_response)"] = lambda router=router: (
            router.completion(model="chat", messages=messages)
        )
    return subjects


def bench_routing(n: dict[str, int]) -> list[Any]:
    """Wall clock: the strategies against the bare model, the limit check, LiteLLM."""
    from bench.harness import Row, compare
    from bench.run import _fake, _sync, compared

    bare = _fake()
    subjects: dict[str, Callable[[], Any]] = {"bare fake model": lambda: bare.invoke("hi")}
    subjects.update(model_subjects())
    subjects.update(strategy_subjects())
    targets = {name: 1.10 for name in model_subjects()}
    measure = "routing, primary answers (x bare)"
    rows: list[Row] = compared(measure, subjects, litellm_subjects(), n, targets)
    check = compare({"check": limit_check()}, **_sync(n))["check"]
    median = check.median / 1000.0
    rows.append(
        Row(
            "rate limit, one local check",
            "RateLimiter.admit + release (LocalLimits)",
            f"{median:.2f} µs (p95 {check.p95 / 1000.0:.2f})",
            None,
            "≤ 5 µs",
            "pass" if median <= 5.0 else "miss",
        )
    )
    return rows


# -- the real 60-second window, across processes sharing Redis --------------------------------

_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from llmpool import LLMPool
    from llmpool.limits.redis import RedisLimits
    from llmpool.repository.memory import InMemoryStore

    rows = [
        {{"id": {row!r}, "name": "A", "provider": "openai", "model_name": "gpt-4",
          "priority": 1, "rpm": {rpm}, "auth_meta": {{"api_key_env": "OPENAI_API_KEY"}},
          "config": {{"base_url": {url!r} + "/v1", "max_retries": 0}}}},
        {{"name": "B", "provider": "fake", "model_name": "m", "priority": 2}},
    ]
    limits = RedisLimits({redis!r}, prefix={prefix!r})
    pool = LLMPool(InMemoryStore(rows), poll_interval=0, limits=limits, track_usage=False)
    llm = pool.get_llm_with_fallback()
    while not os.path.exists({go!r}):
        time.sleep(0.01)
    end = time.monotonic() + {seconds}
    names = []
    while time.monotonic() < end:
        names.append(llm.invoke("hi").response_metadata["llmpool"]["name"])
        time.sleep({pause})
    pool.close()
    print(json.dumps(names))
    """
)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        arrived = time.monotonic()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.arrivals.append(arrived)  # type: ignore[attr-defined]
        body = json.dumps(
            {
                "id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def worst_window(times: list[float], window: float) -> int:
    """The most entries in any window ``[t, t + window)``."""
    ordered = sorted(times)
    worst, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def measure_window(
    processes: int = 8, rpm: int = 60, seconds: float = 150.0, pause: float = 0.05
) -> dict[str, Any]:
    """Run ``processes`` replicas sharing Redis against a row with ``rpm``; report the worst
    60-second window of requests the row's server received."""
    import tempfile

    import redis

    url = os.environ.get("LLMPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"llmpool-bench:{uuid.uuid4().hex}:"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.arrivals = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        script = _WORKER.format(
            row=str(uuid.uuid4()), rpm=rpm, url=f"http://127.0.0.1:{server.server_address[1]}",
            redis=url, prefix=prefix, go=go, seconds=seconds, pause=pause,
        )  # fmt: skip
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        workers = [
            subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
            for _ in range(processes)
        ]
        time.sleep(15.0)  # the workers import and build their models
        open(go, "w").close()
        outputs = [w.communicate()[0] for w in workers]
    server.shutdown()
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    names = [n for out in outputs for n in json.loads(out.decode().splitlines()[-1])]
    arrivals: list[float] = server.arrivals  # type: ignore[attr-defined]
    return {
        "processes": processes,
        "rpm": rpm,
        "seconds": seconds,
        "calls": len(names),
        "to the limited row": names.count("A"),
        "to the next row": names.count("B"),
        "requests the limited row's server received": len(arrivals),
        "worst 60 s window": worst_window(arrivals, 60.0),
    }


def main(argv: list[str] | None = None) -> int:
    """``--window``: the 60-second window measurement; else a smoke run of each subject."""
    parser = argparse.ArgumentParser(prog="python -m bench.routing")
    parser.add_argument("--window", action="store_true", help="measure the real 60 s window")
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args(argv)
    if args.window:
        print(json.dumps(measure_window(seconds=args.seconds), indent=2))
        return 0
    subjects = {**model_subjects(), **strategy_subjects(), **litellm_subjects()}
    for call in [*subjects.values(), limit_check()]:
        call()
    print("bench.routing: every subject ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
