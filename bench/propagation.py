"""How changes reach N pools, per `PoolOptions.changes` mode: sessions held, load at idle, and
commit-to-seen latency.

Run from the repository root::

    python -m bench.propagation            # 10 pools, 10 s idle, 20 writes per mode
    python -m bench.propagation --smoke    # 3 modes, 2 pools, short: checks it runs
    python -m bench.propagation --pools 50 --modes poll,redis

Each mode gets N pools in this process on a database of its own (created on
``LLMPOOL_BENCH_DATABASE_URL``'s server, dropped afterwards), reached directly or, for the
``@pgbouncer`` modes, through a PgBouncer in transaction mode that the run starts (skipped when
pgbouncer is not installed). Measured:

- sessions: the database's rows in ``pg_stat_activity`` while the pools idle (through
  PgBouncer: its server connections, which it keeps for ``server_idle_timeout``);
- reads/s at idle: the statements the pools' engines run (each poll is one, in a checkout
  that also pre-pings and rolls back; ``pg_stat_database`` flushes too seldom to count them);
- Redis round trips/s at idle (lease claims, from the watchers' counters);
- commit-to-seen: from a writer's commit returning until each pool's watcher has reloaded the
  new generation (`Watcher.generation`), p50 and max over every (write, pool) pair.

Usage counting is off (``track_usage=False``): only change propagation is measured.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from llmpool import LLMPool
from llmpool.repository.sql.migrate import migrate
from llmpool.repository.sql.store import SQLStore

PG_URL = os.environ.get("LLMPOOL_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LLMPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
MODES = ("notify", "poll", "poll@pgbouncer", "redis", "redis@pgbouncer")


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{tail}" if tail else "")


def _pgbouncer(url: str) -> Any:
    # The tests' PgBouncer runner: transaction mode, a free port, ``options`` ignored.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pgbouncer import PgBouncer, find_binary

    binary = find_binary()
    return PgBouncer(binary, url) if binary else None


def _sessions(admin: Any, database: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchone()
    return int(row[0]) if row else 0


def _count_statements(engines: list[Any]) -> list[int]:
    # Every statement the engines run (a poll: one; its checkout's pre-ping and rollback are
    # round trips of their own, not counted here; a LISTEN connection's wait runs none).
    from sqlalchemy import event

    counter = [0]

    def count(*_args: Any) -> None:
        counter[0] += 1

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    return counter


def measure(
    mode: str, url: str, database: str, admin: Any, pools: int, idle: float, writes: int
) -> dict[str, Any]:
    """Run one mode: start the pools, idle, then write and time each write's arrival."""
    changes = mode.split("@")[0]
    made = [
        LLMPool(url, changes=changes, redis=REDIS_URL, track_usage=False, poll_interval=1.0)
        for _ in range(pools)
    ]
    writer = SQLStore(_with_database(PG_URL, database), validators=())
    try:
        for pool in made:
            pool.snapshot()
        time.sleep(min(2.0, idle))  # LISTENs open, a leader elected
        watchers = [pool.watcher for pool in made]
        assert all(w is not None for w in watchers)
        statements = _count_statements([pool.repository.engine for pool in made])  # SQLStores
        claims = sum(w.fanout.claims for w in watchers if w and w.fanout)
        started = time.monotonic()
        time.sleep(idle)
        sessions = _sessions(admin, database)
        spent = time.monotonic() - started
        per_second = statements[0] / spent
        claims_rate = (sum(w.fanout.claims for w in watchers if w and w.fanout) - claims) / spent
        latencies: list[float] = []
        row = writer.add({"name": "Bench", "provider": "fake", "model_name": "echo"})
        for index in range(writes):
            time.sleep(random.uniform(0.1, 1.1))  # any phase of the pools' 1 s polls
            writer.update(row.id, {"priority": index})
            committed = time.monotonic()
            target = writer.generation()
            waiting = set(range(pools))
            deadline = committed + 60
            while waiting and time.monotonic() < deadline:
                for i in list(waiting):
                    seen = watchers[i].generation if watchers[i] else None
                    if seen is not None and seen >= target:
                        latencies.append(time.monotonic() - committed)
                        waiting.discard(i)
                time.sleep(0.001)
            latencies.extend([float("inf")] * len(waiting))
    finally:
        writer.close()
        for pool in made:
            pool.close()
    latencies.sort()
    return {
        "mode": mode,
        "pools": pools,
        "sessions": sessions,
        "reads_per_s": per_second,
        "redis_per_s": claims_rate,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each mode and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="few pools, short: checks it runs")
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pools, args.idle, args.writes = 2, 0.5, 2
    modes = args.modes or ("notify,poll@pgbouncer,redis" if args.smoke else ",".join(MODES))
    admin = psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"))
    admin.autocommit = True
    print(
        "| mode | pools | PostgreSQL sessions at idle | reads/s at idle | "
        "Redis round trips/s at idle | commit-to-seen p50 | max |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        for mode in modes.split(","):
            database = f"llmpool_bench_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE DATABASE "{database}"')
            bouncer = None
            try:
                url = _with_database(PG_URL, database)
                migrate(url)
                if mode.endswith("@pgbouncer"):
                    bouncer = _pgbouncer(url)
                    if bouncer is None:
                        print(f"| {mode} | skipped: pgbouncer is not installed |")
                        continue
                    url = bouncer.url_for(url)
                result = measure(mode, url, database, admin, args.pools, args.idle, args.writes)
            finally:
                if bouncer is not None:
                    bouncer.stop()
                admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            print(
                f"| {result['mode']} | {result['pools']} | {result['sessions']} | "
                f"{result['reads_per_s']:.1f} | {result['redis_per_s']:.1f} | "
                f"{result['p50_ms']:.0f} ms | {result['max_ms']:.0f} ms |",
                flush=True,
            )
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
