"""What a fleet's shared state costs Redis: commands per second per replica, idle and under
load, and bytes of Redis memory per row.

Starts a private ``redis-server`` (needs the binary on PATH), then ``--replicas`` pools in this
process standing for replicas (each with its own statistics and sync thread, ``redis=`` on that
server), over ``--rows`` fake rows of equal priority routed ``least_busy``. Counts Redis's own
``INFO commandstats`` over ``--seconds`` seconds: idle (the pools serve, nobody calls), then
under load (``--threads`` callers per pool); then ``MEMORY USAGE`` of each kind of key, and of a
row's statistics with 1, 10 and 100 replicas' parts. Run from the repository root::

    python -m bench.fleet_redis --replicas 4 --rows 10 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def private_redis() -> Iterator[str]:
    """Yield the URL of a throwaway redis-server on a free port."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.fleet_redis: redis-server is not on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait()


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _window(client: Any, seconds: float) -> tuple[dict[str, int], int]:
    client.config_resetstat()
    before = int(client.info("stats")["total_net_input_bytes"])
    time.sleep(seconds)
    counted = _commands(client)
    counted.pop("config|resetstat", None)
    counted.pop("info", None)
    return counted, int(client.info("stats")["total_net_input_bytes"]) - before


def main(argv: list[str] | None = None) -> int:
    """Measure and print the numbers as JSON."""
    import redis

    from llmpool.chain.fleet import FleetStats
    from llmpool.contracts import Candidate
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.memory import InMemoryStore

    parser = argparse.ArgumentParser(prog="python -m bench.fleet_redis")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    rows = [
        {"name": f"row{i}", "provider": "fake", "model_name": "m", "priority": 1,
         "config": {"responses": ["ok"]}}
        for i in range(args.rows)
    ]  # fmt: skip
    result: dict[str, Any] = {"replicas": args.replicas, "rows": args.rows}
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        store = InMemoryStore(rows)
        store.set_routing("global", "least_busy")
        pools = [LLMPool(store, poll_interval=0, redis=url) for _ in range(args.replicas)]
        llms = [pool.get_llm_with_fallback() for pool in pools]
        time.sleep(1.5)  # every replica synced once
        idle, idle_bytes = _window(client, args.seconds)
        stop, calls = threading.Event(), [0]
        lock = threading.Lock()

        def call(llm: Any) -> None:
            done = 0
            while not stop.is_set():
                llm.invoke("hi")
                done += 1
            with lock:
                calls[0] += done

        callers = [
            threading.Thread(target=call, args=(llm,)) for llm in llms for _ in range(args.threads)
        ]
        for caller in callers:
            caller.start()
        load, load_bytes = _window(client, args.seconds)
        stop.set()
        for caller in callers:
            caller.join()
        per = args.seconds * args.replicas
        result["idle"] = {
            "commands_per_s_per_replica": round(sum(idle.values()) / per, 2),
            "by_command": {k: round(v / per, 2) for k, v in sorted(idle.items())},
            "bytes_in_per_s_per_replica": round(idle_bytes / per),
        }
        result["load"] = {
            "calls_per_s_per_replica": round(calls[0] / per, 1),
            "commands_per_s_per_replica": round(sum(load.values()) / per, 2),
            "by_command": {k: round(v / per, 2) for k, v in sorted(load.items())},
            "bytes_in_per_s_per_replica": round(load_bytes / per),
        }
        sizes: dict[str, list[int]] = {}
        for key in client.scan_iter("llmpool:*"):
            kind = key.decode().split(":")[1] + ":" + key.decode().split(":")[2].split("-")[0]
            sizes.setdefault(kind.rstrip(":"), []).append(int(client.memory_usage(key) or 0))
        result["memory_bytes_per_key"] = {k: round(sum(v) / len(v)) for k, v in sizes.items()}
        for pool in pools:
            pool.close()
        # One row's statistics as the fleet grows: each replica's part of a busy row.
        row = Candidate(LLMConfig(id="busy", name="busy", provider="fake", model_name="m"))
        grown: dict[int, int] = {}
        replicas: list[FleetStats] = []
        for count in (1, 10, 100):
            while len(replicas) < count:
                stats = FleetStats(client, prefix="size:")
                for latency in (0.2, 0.4, 0.8, 1.6, 3.2) * 10:
                    stats.admit(row, None)
                    stats.record(row, None, ok=latency < 3, latency=latency, usage=None)
                stats.admit(row, None)  # one call in flight
                stats.serve()
                replicas.append(stats)
            time.sleep(1.5)  # each has published its part
            grown[count] = int(client.memory_usage("size:row:busy") or 0)
        for stats in replicas:
            stats.close()
        result["row_statistics_bytes_by_replicas"] = grown
        client.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
