"""A fleet of replicas: separate OS processes, each an `LLMPool` serving calls against local
fake servers, on one PostgreSQL (directly or through PgBouncer) and one Redis.

Run from the repository root::

    python -m bench.fleet                   # 100 processes; writes bench/fleet.md
    python -m bench.fleet --processes 200   # as many as memory allows
    python -m bench.fleet --smoke           # 3 processes, short phases: checks it runs (CI)

Per propagation mode (``notify`` direct, ``poll`` and ``redis`` through PgBouncer by default),
on a database of its own (created on ``LLMPOOL_BENCH_DATABASE_URL``'s server, dropped after):

- memory: each process's resident set once its pool answered a call;
- PostgreSQL sessions held (``pg_stat_activity`` of the database) and statements per second
  (counted by each process's engine), at idle and under load (every process calling);
- change propagation: from a writer's commit until the last process reloaded it (p50, p99 and
  max over the writes) and over every (write, process) pair.

Then, on the last mode (the fleet's configuration: Redis for shared state):

- breaker convergence: a row's server starts answering 500; the requests the fleet still sends
  it until no process calls it any more;
- rpm exactness: a row with ``rpm=60`` called by every process as fast as the limit lets it;
  the worst 60-second window its server saw with Redis up, then around a 20-second Redis
  outage (``CLIENT PAUSE``: every client of that Redis server waits, so run it on a Redis of its
  own), with ``limits_when_redis_down="share"``
  (the default; "closed" refuses the row outright, as the tests show);
- budget overspend of 8 processes racing one budget: ``python -m bench.budget`` has it.

``python -m bench.fleet --tag-budget`` measures only this, on a database of its own: 8 processes
(one pool each, sharing Redis) race tagged calls at one tag's budget of ``TAG_BUDGET`` calls'
cost (``llm_quotas``), every thread calling until the tag's quota refuses it; the overspend is
what the server answered beyond the budget, per process, first sharing Redis, then each
process alone (no Redis: each spends the budget it reads). Writes bench/fleet_tag_budget.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get("LLMPOOL_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LLMPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
MODES = ("notify", "poll@pgbouncer", "redis@pgbouncer")


# -- one replica -------------------------------------------------------------------------------


def worker(config: dict[str, Any]) -> None:
    """A replica: a pool, a statement counter and a reload log; obeys JSON lines on stdin."""
    import logging

    from sqlalchemy import event

    logging.basicConfig(level=logging.WARNING, format=f"replica {os.getpid()}: %(message)s")

    from llmpool import LLMPool
    from llmpool.contracts import Observer

    reloads: list[tuple[int, float]] = []

    class Reloads(Observer):
        def on_reload(self, event: Any) -> None:
            reloads.append((event.generation, time.time()))

    pool = LLMPool(
        config["url"],
        changes=config["changes"],
        redis=config["redis"],
        poll_interval=1.0,
        observers=(Reloads(),),
        limits_when_redis_down=config.get("limits_when_redis_down", "share"),
    )
    statements = [0]

    def count(*_args: Any) -> None:
        statements[0] += 1

    event.listen(pool.repository.engine, "before_cursor_execute", count)  # type: ignore[attr-defined]
    calls = {"ok": 0, "failed": 0}
    load: dict[str, Any] = {"scope": None, "pause": 1.0}

    def call(scope: str) -> None:
        try:
            pool.get_llm_with_fallback(scope=scope).invoke("hi")
            calls["ok"] += 1
        except Exception:  # a refused or failed call is counted, and the load goes on
            calls["failed"] += 1

    def run_load() -> None:
        while True:
            scope = load["scope"]
            if scope is None:
                time.sleep(0.05)
                continue
            started = time.monotonic()
            call(scope)
            time.sleep(
                max(0.0, load["pause"] * random.uniform(0.5, 1.5) - (time.monotonic() - started))
            )

    call("global")
    threading.Thread(target=run_load, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "load":
            load.update(scope=command["scope"], pause=command["pause"])
        elif command["cmd"] == "idle":
            load["scope"] = None
        elif command["cmd"] == "report":
            rss = 0
            for status in Path("/proc/self/status").read_text().splitlines():
                if status.startswith("VmRSS:"):
                    rss = int(status.split()[1])
            print(
                json.dumps(
                    {"rss_kb": rss, "statements": statements[0], "reloads": reloads, **calls}
                ),
                flush=True,
            )
        elif command["cmd"] == "exit":
            break
    pool.close()


class Fleet:
    """``n`` replica processes, started in parallel batches, driven through their stdin."""

    def __init__(self, n: int, config: dict[str, Any]) -> None:
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PYTHONPATH": str(HERE.parent)}
        argv = [sys.executable, "-m", "bench.fleet", "--worker", json.dumps(config)]
        self.processes: list[subprocess.Popen[str]] = []
        for start in range(0, n, 10):  # ten at a time: the imports are CPU-bound
            batch = [
                subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
                )
                for _ in range(start, min(n, start + 10))
            ]
            for process in batch:
                assert process.stdout is not None
                line = process.stdout.readline()
                if not line:
                    msg = "a replica did not start (see its stderr above)"
                    raise RuntimeError(msg)
            self.processes += batch

    def send(self, **command: Any) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()

    def report(self) -> list[dict[str, Any]]:
        self.send(cmd="report")
        return [json.loads(p.stdout.readline()) for p in self.processes]  # type: ignore[union-attr]

    def close(self) -> None:
        self.send(cmd="exit")
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


# -- the servers around it ---------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: Any = self.server
        server.arrivals.append(time.monotonic())
        time.sleep(getattr(server, "delay", 0.0))
        if server.failing:
            body, status = b'{"error": {"message": "down", "type": "server_error"}}', 500
        else:
            body, status = json.dumps(
                {
                    "id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ).encode(), 200  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _server() -> Any:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.arrivals, server.failing = [], False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return server


class RedisOutage:
    """Redis stops answering every client for a while (``CLIENT PAUSE ... ALL``): the replicas'
    round trips time out, as when Redis hangs or a network partition drops its packets."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.url = url

    def cut(self, seconds: float) -> None:
        self.client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")


def worst_window(times: list[float], window: float) -> int:
    """The most entries in any window ``[t, t + window)``."""
    ordered, worst, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the measurements --------------------------------------------------------------------------


def _sessions(admin: Any, database: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchone()
    return int(row[0])


def _rate(fleet: Fleet, seconds: float) -> tuple[float, list[dict[str, Any]]]:
    before = sum(r["statements"] for r in fleet.report())
    time.sleep(seconds)
    after = fleet.report()
    return (sum(r["statements"] for r in after) - before) / seconds, after


def load_and_idle(
    fleet: Fleet, admin: Any, database: str, phase: float, pause: float
) -> dict[str, Any]:
    """Sessions and statements per second, at idle and with every process calling."""
    time.sleep(2.0)  # LISTENs open, a leader elected
    idle_rate, reports = _rate(fleet, phase)
    idle_sessions = _sessions(admin, database)
    fleet.send(cmd="load", scope="global", pause=pause)
    calls = sum(r["ok"] for r in reports)
    busy_rate, reports = _rate(fleet, phase)
    busy_sessions = _sessions(admin, database)
    fleet.send(cmd="idle")
    return {
        "rss_mb": statistics.mean(r["rss_kb"] for r in reports) / 1024,
        "idle_sessions": idle_sessions,
        "idle_statements_per_s": idle_rate,
        "busy_sessions": busy_sessions,
        "busy_statements_per_s": busy_rate,
        "busy_calls_per_s": (sum(r["ok"] for r in reports) - calls) / phase,
    }


def propagation(fleet: Fleet, writer: Any, row_id: str, writes: int) -> dict[str, Any]:
    """Time each write from its commit until every process reloaded it."""
    committed: list[tuple[int, float]] = []
    for index in range(writes):
        time.sleep(random.uniform(0.5, 1.5))  # any phase of the replicas' 1 s polls
        writer.update(row_id, {"priority": 10 + index})
        committed.append((writer.generation(), time.time()))
    time.sleep(3.0)
    reports = fleet.report()
    last: list[float] = []
    pairs: list[float] = []
    missed = 0
    for generation, at in committed:
        seen = []
        for report in reports:
            times = [t for g, t in report["reloads"] if g >= generation]
            if times:
                seen.append(min(times) - at)
        missed += len(reports) - len(seen)
        pairs += seen
        if len(seen) == len(reports):
            last.append(max(seen))
    return {
        "last_p50_ms": statistics.median(last) * 1000 if last else float("nan"),
        "last_p99_ms": _quantile(last, 0.99) * 1000,
        "last_max_ms": max(last, default=float("nan")) * 1000,
        "pairs_p50_ms": statistics.median(pairs) * 1000 if pairs else float("nan"),
        "pairs_p99_ms": _quantile(pairs, 0.99) * 1000,
        "missed": missed,
        "writes": len(committed),
    }


def breaker(fleet: Fleet, flaky: Any, quiet: float) -> dict[str, Any]:
    """The requests the fleet sends a row after its server starts failing."""
    fleet.send(cmd="load", scope="flaky", pause=0.5)
    time.sleep(3.0)
    flaky.arrivals.clear()
    flaky.failing = True
    started = time.monotonic()
    while True:
        time.sleep(0.5)
        arrivals = list(flaky.arrivals)
        if time.monotonic() - (arrivals[-1] if arrivals else started) > quiet:
            break
        if time.monotonic() - started > 120:
            break
    fleet.send(cmd="idle")
    flaky.failing = False
    return {
        "requests_after_failing": len(arrivals),
        "last_request_after_s": (arrivals[-1] - started) if arrivals else 0.0,
    }


def rpm_window(
    fleet: Fleet, limited: Any, redis: RedisOutage, up: float, outage: float
) -> dict[str, Any]:
    """The worst 60 s window of a row with rpm=60, with Redis up, then around an outage."""
    limited.arrivals.clear()
    fleet.send(cmd="load", scope="limited", pause=1.0)
    time.sleep(up)
    cut = time.monotonic()
    redis.cut(outage)
    time.sleep(outage)
    time.sleep(max(5.0, 60.0 - outage) if up >= 60 else 2.0)
    fleet.send(cmd="idle")
    arrivals = list(limited.arrivals)
    before = [t for t in arrivals if t < cut]
    return {
        "worst_window_redis_up": worst_window(before, 60.0),
        "worst_window_with_outage": worst_window(arrivals, 60.0),
        "during_outage": sum(1 for t in arrivals if cut <= t < cut + outage),
    }


# -- one run -----------------------------------------------------------------------------------


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}" + (f"?{tail}" if tail else "")


def _rows(servers: dict[str, Any]) -> list[dict[str, Any]]:
    def row(name: str, server: str, scope: str, priority: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name, "provider": "openai", "model_name": "gpt-4", "scope": scope,
            "priority": priority, "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            "config": {"base_url": servers[server].url, "max_retries": 0}, **extra,
        }  # fmt: skip

    return [
        row("steady", "steady", "global", 1),
        row("flaky", "flaky", "flaky", 1),
        row("backup", "steady", "flaky", 2),
        row("limited", "limited", "limited", 1, rpm=60),
    ]


def run_mode(
    mode: str, args: argparse.Namespace, admin: Any, outage: RedisOutage | None
) -> dict[str, Any]:
    """Start the fleet on a fresh database in ``mode``; measure; tear it all down."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    database = f"llmpool_fleet_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    bouncer = fleet = writer = None
    servers = {name: _server() for name in ("steady", "flaky", "limited")}
    try:
        direct = _with_database(PG_URL, database)
        migrate(direct)
        writer = SQLStore(direct, validators=())
        rows = [writer.add(row) for row in _rows(servers)]
        url = direct
        if mode.endswith("@pgbouncer"):
            sys.path.insert(0, str(HERE.parent / "tests"))
            from pgbouncer import PgBouncer, find_binary

            binary = find_binary()
            if binary is None:
                return {"mode": mode, "skipped": "pgbouncer is not installed"}
            bouncer = PgBouncer(binary, direct)
            url = bouncer.url_for(direct)
        config = {"url": url, "changes": mode.split("@")[0], "redis": REDIS_URL}
        started = time.monotonic()
        fleet = Fleet(args.processes, config)
        result: dict[str, Any] = {
            "mode": mode,
            "processes": args.processes,
            "start_s": time.monotonic() - started,
        }
        result |= load_and_idle(fleet, admin, database, args.phase, args.pause)
        result |= propagation(fleet, writer, rows[0].id, args.writes)
        if outage is not None:
            result["breaker"] = breaker(fleet, servers["flaky"], args.quiet)
            result["rpm_share"] = rpm_window(
                fleet, servers["limited"], outage, args.rpm_up, args.outage
            )
        return result
    finally:
        if fleet is not None:
            fleet.close()
        if writer is not None:
            writer.close()
        if bouncer is not None:
            bouncer.stop()
        for server in servers.values():
            server.shutdown()
        admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results as Markdown."""
    from bench.run import _machine, _versions

    lines = [
        "# llmpool fleet: replicas as separate processes on one PostgreSQL and one Redis",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_machine()}",
        f"- versions: {_versions()}",
        f"- command: `python -m bench.fleet {' '.join(args.argv)}`".rstrip() + "",
        f"- {args.processes} processes per mode, poll_interval 1 s; under load each process "
        f"calls about every {args.pause} s; PostgreSQL `max_connections` "
        f"{getattr(args, 'max_connections', '?')}",
        "",
        "| mode | start (s) | RSS per process (MB) | sessions idle | statements/s idle "
        "| sessions busy | statements/s busy | calls/s busy | commit → last replica p50 / p99 "
        "/ max (ms) | commit → each replica p50 / p99 (ms) | (write, replica) pairs not seen "
        "within 3 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | skipped: {r['skipped']} |")
            continue
        lines.append(
            f"| {r['mode']} | {r['start_s']:.0f} | {r['rss_mb']:.0f} | {r['idle_sessions']} | "
            f"{r['idle_statements_per_s']:.1f} | {r['busy_sessions']} | "
            f"{r['busy_statements_per_s']:.1f} | {r['busy_calls_per_s']:.0f} | "
            f"{r['last_p50_ms']:.0f} / {r['last_p99_ms']:.0f} / {r['last_max_ms']:.0f} | "
            f"{r['pairs_p50_ms']:.0f} / {r['pairs_p99_ms']:.0f} | "
            f"{r.get('missed', '-')} of {r.get('writes', args.writes) * r['processes']} |"
        )
    for r in results:
        if "breaker" in r:
            b, w = r["breaker"], r["rpm_share"]
            lines += [
                "",
                f"## Shared state ({r['mode']}, {r['processes']} processes)",
                "",
                f"- breaker convergence: after the row's server started answering 500, the "
                f"fleet sent it {b['requests_after_failing']} requests; the last "
                f"{b['last_request_after_s']:.1f} s after the first failure.",
                f"- rpm=60: worst 60 s window with Redis up: {w['worst_window_redis_up']} "
                f"requests; around a {args.outage:.0f} s Redis outage "
                f"(limits_when_redis_down='share'): {w['worst_window_with_outage']} "
                f"({w['during_outage']} during the outage).",
            ]
    return "\n".join([*lines, *on_paper(results)]) + "\n"


#: LiteLLM's proxy at the same sizes, from its code (litellm 1.80.0 and 1.110.2 wheels) and docs.
LITELLM = """
### LiteLLM's proxy at that size

- **Changes**: every uvicorn worker (not pod) polls the database every 30 s with no jitter
  (`ProxyConfig.add_deployment` scheduled in `initialize_scheduled_background_jobs`,
  `litellm/proxy/proxy_server.py`; `proxy_config_reload_interval_seconds`, default 30), each tick
  about 15-25 statements that re-read the whole model table, plus a 60 s worker heartbeat
  (`proxy_worker_heartbeat.py`): about 0.7 statements/s per worker, so about 700/s at 1,000
  workers and 7,000/s at 10,000. 1.110 adds a Redis pub/sub resync (`ConfigSyncSubscriber`).
- **Cooldowns** (its breaker, `cooldown_time` 5 s): written to Redis through `DualCache`; in 1.80
  another worker re-reads a missing key at most every 10 s (`redis_batch_cache_expiry`,
  `litellm/caching/dual_cache.py`), so it can miss a 5 s cooldown entirely; 1.110 reads once a
  second (BerriAI/litellm PR #40025). The default failure-rate counters are per worker
  (`track_deployment_metrics.py`, `local_only=True`), so a fleet still sends a dead deployment
  about its request rate times 1-10 s.
- **Limits without Redis**: "a limit of 100 requests per minute across 4 workers really lets
  through 400" (docs.litellm.ai/docs/proxy/redis_requirements); 1.110 adds
  `fail_closed_rate_limit_enforcement`.
- **Connections**: `database_connection_pool_limit` 10 per worker, so 10,000 workers would ask
  for 100,000 PostgreSQL connections without an external PgBouncer.
"""


def on_paper(results: list[dict[str, Any]]) -> list[str]:
    """The measured per-replica figures extrapolated to 1,000 and 10,000 replicas."""
    lines = [
        "",
        "## On paper: 1,000 and 10,000 replicas",
        "",
        "Per replica at idle as measured above; through PgBouncer the PostgreSQL sessions are its",
        "server pool (`default_pool_size`), whatever the replicas. With `redis=`, each replica",
        "makes one statistics round trip a second (`redis_sync_interval`) and, with",
        '`changes="redis"`, one lease claim per `poll_interval`.',
        "",
        "| mode | replicas | PostgreSQL sessions | statements/s at idle | Redis round trips/s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            continue
        n = r["processes"]
        for size in (1_000, 10_000):
            if r["mode"].endswith("@pgbouncer"):
                sessions = f"{r['idle_sessions']} (the pooler's)"
            else:
                sessions = f"{r['idle_sessions'] / n * size:,.0f}"
            if r["mode"].startswith("redis"):
                # One leader polls once a second; the rest scales with the followers.
                statements = 1.0 + max(0.0, r["idle_statements_per_s"] - 1.0) / n * size
                trips = 2 * size
            else:
                statements = r["idle_statements_per_s"] / n * size
                trips = size
            lines.append(f"| {r['mode']} | {size:,} | {sessions} | {statements:,.0f} | {trips:,} |")
    return [*lines, LITELLM]


# -- one tag's budget raced by the fleet --------------------------------------------------------

TAG_BUDGET, TAG_PROCESSES, TAG_THREADS = 20, 8, 4
TAGGED = {"metadata": {"llmpool_tags": {"tenant": "acme"}}}


def _tag_replica(url: str, prefix: str | None, start: Any, results: Any) -> None:
    """One process: a pool (sharing Redis under ``prefix`` unless ``None``), TAG_THREADS
    threads each calling until the tag's quota refuses it; reports its answers."""
    from llmpool import LLMPool, QuotaExceededError

    redis = {"redis": REDIS_URL, "redis_prefix": prefix} if prefix is not None else {}
    pool = LLMPool(url, poll_interval=0, usage_flush_interval=0, **redis)
    llm = pool.get_llm_with_fallback("tags")
    answered = [0] * TAG_THREADS

    def calls(i: int) -> None:
        while True:
            try:
                llm.invoke("hi", TAGGED)
            except QuotaExceededError:
                return
            answered[i] += 1

    start.wait()
    threads = [threading.Thread(target=calls, args=(i,)) for i in range(TAG_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close()
    results.put(sum(answered))


def tag_budget_race(admin: Any, rounds: int) -> list[dict[str, Any]]:
    """Each round, on a fresh database: TAG_PROCESSES processes race one tag's budget (1.0 a
    call, TAG_BUDGET calls' worth), sharing Redis then alone; what they answered beyond it."""
    import multiprocessing

    import langchain_openai  # noqa: F401  (imported once, before the fork: not 8 times after)
    import redis as redis_py

    from llmpool import LLMPool  # noqa: F401
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    client = redis_py.Redis.from_url(REDIS_URL)
    context = multiprocessing.get_context("fork")
    results = []
    for label, shared in (("sharing Redis", True), ("each alone (no Redis)", False)):
        worst, answered = 0, []
        for _ in range(rounds):
            database = f"llmpool_fleet_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE DATABASE "{database}"')
            server = _server()
            server.delay = 0.02
            prefix = f"llmpool-bench:{uuid.uuid4().hex}:" if shared else None
            try:
                url = _with_database(PG_URL, database)
                migrate(url)
                store = SQLStore(url, validators=())
                store.add({
                    "name": "priced", "provider": "openai", "model_name": "gpt-4",
                    "scope": "tags", "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                    "config": {"base_url": server.url, "max_retries": 0,
                               "output_cost_per_million_tokens": 1_000_000},  # 1.0 a call
                })  # fmt: skip
                store.set_quota("tag", "tenant=acme", budget=TAG_BUDGET, period="day")
                store.close()
                start, queue = context.Barrier(TAG_PROCESSES), context.Queue()
                processes = [
                    context.Process(target=_tag_replica, args=(url, prefix, start, queue))
                    for _ in range(TAG_PROCESSES)
                ]
                for process in processes:
                    process.start()
                counts = [queue.get(timeout=120) for _ in processes]
                for process in processes:
                    process.join(30)
                answered.append(len(server.arrivals))
                assert sum(counts) == len(server.arrivals)
                worst = max(worst, len(server.arrivals) - TAG_BUDGET)
            finally:
                server.shutdown()
                admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
                if prefix is not None:
                    for key in client.scan_iter(prefix + "*"):
                        client.delete(key)
        results.append(
            {
                "race": label,
                "processes": TAG_PROCESSES,
                "threads_each": TAG_THREADS,
                "budget_calls": TAG_BUDGET,
                "answered": answered,
                "worst_overspend_calls": max(worst, 0),
                "worst_overspend_per_process": max(worst, 0) / TAG_PROCESSES,
            }
        )
    client.close()
    return results


def render_tag_budget(results: list[dict[str, Any]], rounds: int) -> str:
    """The tag budget race as Markdown."""
    lines = [
        "# One tag's budget raced by a fleet",
        "",
        f"Measured {datetime.date.today()} by `python -m bench.fleet --tag-budget`: "
        f"{TAG_PROCESSES} processes x {TAG_THREADS} threads call with `tenant=acme` until the "
        f"tag's quota ({TAG_BUDGET} calls' cost a day) refuses them; worst of {rounds} rounds. "
        "The bound: at most 1 call of overspend per process.",
        "",
        "| race | answered per round | worst overspend | per process | bound |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        bound = ("pass" if r["worst_overspend_per_process"] <= 1 else "miss") if (
            r["race"] == "sharing Redis") else "-"  # fmt: skip
        lines.append(
            f"| {r['race']} | {', '.join(map(str, r['answered']))} | "
            f"{r['worst_overspend_calls']} calls | {r['worst_overspend_per_process']:g} | {bound} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the fleet in each mode; print and write the results."""
    import psycopg

    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--phase", type=float, default=10.0, help="seconds idle, then busy")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between calls, busy")
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--quiet", type=float, default=5.0, help="breaker: seconds of silence")
    parser.add_argument("--rpm-up", type=float, default=70.0, help="rpm: seconds before outage")
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true", help="3 processes, short phases")
    parser.add_argument("--output", default=str(HERE / "fleet.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    help_text = "only the race of 8 processes at one tag's budget (writes fleet_tag_budget.md)"
    parser.add_argument("--tag-budget", action="store_true", help=help_text)
    parser.add_argument("--rounds", type=int, default=3, help="--tag-budget: rounds")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.smoke:
        args.processes, args.phase, args.writes, args.quiet = 3, 1.0, 2, 2.0
        args.rpm_up, args.outage = 3.0, 2.0
    admin = psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"))
    admin.autocommit = True
    if args.tag_budget:
        try:
            races = tag_budget_race(admin, args.rounds)
        finally:
            admin.close()
        text = render_tag_budget(races, args.rounds)
        print(text)
        if not args.smoke:
            (HERE / "fleet_tag_budget.md").write_text(text)
        return 0
    args.max_connections = admin.execute("SHOW max_connections").fetchone()[0]
    modes = args.modes.split(",")
    results = []
    try:
        for mode in modes:
            outage = RedisOutage(REDIS_URL) if mode == modes[-1] else None
            results.append(run_mode(mode, args, admin, outage))
            print(json.dumps(results[-1]), flush=True)
    finally:
        admin.close()
    text = render(results, args)
    print(text)
    if not args.smoke:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
