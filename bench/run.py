"""Benchmarks: llmpool against LangChain's with_fallbacks and LiteLLM's Router, in one run.

Run from the repository root::

    python -m bench.run                 # the full run; writes bench/results.md and .svg
    python -m bench.run --smoke         # a few iterations, to check the harness works (CI)
    python -m bench.run --only invoke   # rows whose key contains "invoke"
    python -m bench.run --only cli      # ``llmpool list``'s start-up

Every performance figure is a ratio against a baseline measured in the same run, in rounds that
interleave baseline and subject. PostgreSQL rows use ``LLMPOOL_BENCH_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) in a schema of their own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.harness import Row, Sample, compare, compare_async_batch, time_process

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get("LLMPOOL_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


# LiteLLM fetches a model price list from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _sync(n: dict[str, int]) -> dict[str, int]:
    return {"rounds": n["rounds"], "batch": n["batch"], "warmup": n["warmup"]}


def _fake(answer: str = "ok") -> Any:
    from langchain_core.language_models import FakeListChatModel

    return FakeListChatModel(responses=[answer])


def _failing() -> Any:
    from llmpool.providers.fake import FakeChatModel

    return FakeChatModel(error="down")


def _candidates(*models: Any) -> list[Any]:
    from llmpool.fallback.model import Candidate
    from llmpool.models import LLMConfig

    return [
        Candidate(LLMConfig(id=f"r{i}", name=f"row {i}", provider="fake", model_name="m"), m)
        for i, m in enumerate(models)
    ]


def _litellm_router(fail_primary: bool) -> Any:
    try:
        import litellm
    except ImportError:
        return None
    litellm.suppress_debug_info = True
    model_list = [
        {
            "model_name": "primary",
            "litellm_params": {"model": "openai/primary", "api_key": "sk-x", "mock_response": "ok"},
        },
        {
            "model_name": "backup",
            "litellm_params": {"model": "openai/backup", "api_key": "sk-x", "mock_response": "ok"},
        },
    ]
    router = litellm.Router(
        model_list=model_list, fallbacks=[{"primary": ["backup"]}], num_retries=0
    )
    messages = [{"role": "user", "content": "hi"}]
    if fail_primary:
        return lambda: router.completion(
            model="primary", messages=messages, mock_testing_fallbacks=True
        )
    return lambda: router.completion(model="primary", messages=messages)


def _ratio_rows(
    measure: str,
    samples: dict[str, Any],
    baseline: str,
    targets: dict[str, float],
    unit: str = "µs",
    scale: float = 1000.0,
) -> list[Row]:
    base = samples[baseline].median
    rows = []
    for name, sample in samples.items():
        ratio = sample.median / base
        target = targets.get(name)
        rows.append(
            Row(
                measure,
                name,
                f"{sample.median / scale:.1f} {unit} (p95 {sample.p95 / scale:.1f})",
                ratio,
                f"≤ {target:.2f}x" if target else "",
                ("pass" if ratio <= target else "miss") if target else "",
            )
        )
    return rows


def compared(
    measure: str,
    subjects: dict[str, Any],
    theirs: dict[str, Any],
    n: dict[str, int],
    targets: dict[str, float],
) -> list[Row]:
    """Ratio rows of ``subjects`` (the first is the baseline), and of LiteLLM's ``theirs``
    timed apart against the same baseline: its Router goes on working in background threads
    after its calls, which slows whatever runs next (so its own ratios are, if anything, low)."""
    baseline = next(iter(subjects))
    rows = _ratio_rows(measure, compare(subjects, **_sync(n)), baseline, targets)
    if theirs:
        samples = compare({baseline: subjects[baseline], **theirs}, **_sync(n))
        rows += [r for r in _ratio_rows(measure, samples, baseline, {}) if r.subject in theirs]
    return rows


def bench_invoke(n: dict[str, int]) -> list[Row]:
    """Sync invoke overhead when the primary answers, and when it raises at once."""
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy

    bare = _fake()
    no_breaker = FallbackPolicy(attempts=1, failure_threshold=10**9, failure_rate=None)
    ours = FallbackChatModel(candidates=_candidates(_fake(), _fake()))
    subjects: dict[str, Any] = {
        "bare fake model": lambda: bare.invoke("hi"),
        "LangChain with_fallbacks": (lambda lc: lambda: lc.invoke("hi"))(
            _fake().with_fallbacks([_fake()])
        ),
        "llmpool FallbackChatModel": lambda: ours.invoke("hi"),
    }
    router = _litellm_router(fail_primary=False)
    theirs = {"LiteLLM Router (mock_response)": router} if router is not None else {}
    targets = {"llmpool FallbackChatModel": 1.10}
    rows = compared("invoke, primary answers (x bare)", subjects, theirs, n, targets)

    lc_failing = _failing().with_fallbacks([_fake()], exceptions_to_handle=(ConnectionError,))
    ours_failing = FallbackChatModel(candidates=_candidates(_failing(), _fake()), policy=no_breaker)
    ours_breaker = FallbackChatModel(candidates=_candidates(_failing(), _fake()))
    failing = _failing()

    def floor() -> None:
        # The least any fallback can cost: the failing call plus the answering call.
        try:
            failing.invoke("hi")
        except ConnectionError:
            bare.invoke("hi")

    subjects = {
        "bare fake model": lambda: bare.invoke("hi"),
        "floor: failing call + answering call, no fallback code": floor,
        "LangChain with_fallbacks": lambda: lc_failing.invoke("hi"),
        "llmpool FallbackChatModel": lambda: ours_failing.invoke("hi"),
        "llmpool, breaker open (default policy)": lambda: ours_breaker.invoke("hi"),
    }
    router = _litellm_router(fail_primary=True)
    theirs = {"LiteLLM Router (mock_testing_fallbacks)": router} if router is not None else {}
    targets = {"llmpool FallbackChatModel": 2.0}
    rows += compared("invoke, primary raises at once (x bare)", subjects, theirs, n, targets)
    return rows


def bench_failover_closed_port(n: dict[str, int]) -> list[Row]:
    """Failover from a real ChatOpenAI pointed at a closed port on 127.0.0.1: built by hand
    (no request timeout: llmpool's deadline reads it in a reader thread), and with the 60 s
    timeout a pool gives the rows it builds (called in the caller's thread)."""
    import socket

    from langchain_openai import ChatOpenAI

    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = ChatOpenAI(
        model="m", api_key="sk-x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
    )
    bare = _fake()
    lc = dead.with_fallbacks([_fake()])
    ours = FallbackChatModel(
        candidates=_candidates(dead, _fake()),
        policy=FallbackPolicy(attempts=1, failure_threshold=10**9, failure_rate=None),
    )
    # as a pool builds a row: a 60 s request timeout, within the deadline (no reader thread)
    timed = ChatOpenAI(
        model="m", api_key="sk-x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=60
    )
    ours_row = FallbackChatModel(candidates=_candidates(timed, _fake()), policy=ours.policy)
    ours_breaker = FallbackChatModel(candidates=_candidates(dead, _fake()))
    subjects = {
        "bare fake model": lambda: bare.invoke("hi"),
        "LangChain with_fallbacks": lambda: lc.invoke("hi"),
        "llmpool FallbackChatModel": lambda: ours.invoke("hi"),
        "llmpool FallbackChatModel, the row's 60 s timeout": lambda: ours_row.invoke("hi"),
        "llmpool, breaker open (default policy)": lambda: ours_breaker.invoke("hi"),
    }
    small = {**_sync(n), "batch": max(1, n["batch"] // 10)}
    return _ratio_rows(
        "failover, ChatOpenAI at a closed port (x bare)",
        compare(subjects, **small),
        "bare fake model",
        {},
    )


def bench_concurrent(n: dict[str, int]) -> list[Row]:
    """1,000 concurrent ainvoke calls."""
    from llmpool.fallback.model import FallbackChatModel

    bare = _fake()
    lc = _fake().with_fallbacks([_fake()])
    ours = FallbackChatModel(candidates=_candidates(_fake(), _fake()))
    subjects: dict[str, Any] = {
        "bare fake model": lambda: bare.ainvoke("hi"),
        "LangChain with_fallbacks": lambda: lc.ainvoke("hi"),
        "llmpool FallbackChatModel": lambda: ours.ainvoke("hi"),
    }
    measure = f"{n['concurrency']} concurrent ainvoke (x bare, per call)"
    rounds, concurrency = n["rounds"], n["concurrency"]
    samples = compare_async_batch(subjects, rounds=rounds, concurrency=concurrency)
    rows = _ratio_rows(measure, samples, "bare fake model", {"llmpool FallbackChatModel": 1.15})
    try:
        import litellm
    except ImportError:
        return rows
    router = litellm.Router(
        model_list=[
            {
                "model_name": "p",
                "litellm_params": {"model": "openai/p", "api_key": "sk-x", "mock_response": "ok"},
            }
        ]
    )
    theirs = "LiteLLM Router (mock_response)"
    subjects = {  # apart, as `compared` explains
        "bare fake model": subjects["bare fake model"],
        theirs: lambda: router.acompletion(model="p", messages=[{"role": "user", "content": "hi"}]),
    }
    samples = compare_async_batch(subjects, rounds=rounds, concurrency=concurrency)
    return rows + [
        r for r in _ratio_rows(measure, samples, "bare fake model", {}) if r.subject == theirs
    ]


def bench_import(n: dict[str, int]) -> list[Row]:
    """Import time in fresh interpreters, net of the interpreter's own start-up."""
    chat_model = "from langchain_core.language_models import BaseChatModel; import sqlalchemy"
    codes = {
        "python (start-up only)": "pass",
        "import langchain_core.language_models, sqlalchemy": (
            "import langchain_core.language_models, sqlalchemy"
        ),
        "BaseChatModel + sqlalchemy (what any LangChain chat model imports)": chat_model,
        "import llmpool": "import llmpool",
        "from llmpool import get_llm_with_fallback": "from llmpool import get_llm_with_fallback",
        "from llmpool import FallbackChatModel": "from llmpool import FallbackChatModel",
    }
    try:
        version("litellm")
        codes["import litellm"] = "import litellm"
    except PackageNotFoundError:
        pass
    samples = {name: Sample(name) for name in codes}
    for _ in range(n["import_repeat"]):  # interleave the processes too
        for name, code in codes.items():
            samples[name].values += time_process(code, repeat=1).values
    start = samples.pop("python (start-up only)").median
    chat_base = samples["BaseChatModel + sqlalchemy (what any LangChain chat model imports)"]
    base_net = (chat_base.median - start) / 1e6
    rows = []
    for name, sample in samples.items():
        net = (sample.median - start) / 1e6
        target = (
            250.0
            if name in ("import llmpool", "from llmpool import get_llm_with_fallback")
            else None
        )
        ratio = net / base_net if name == "from llmpool import FallbackChatModel" else None
        rows.append(
            Row(
                "import time (net of interpreter start)",
                name,
                f"{net:.0f} ms",
                ratio,
                "≤ 250 ms" if target else "",
                ("pass" if net <= target else "miss") if target else "",
            )
        )
    return rows


def bench_first_answer(n: dict[str, int], tmp: Path) -> list[Row]:
    """Time to a first answer from SQLite in a new process."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp / 'first.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add({"name": "Fake", "provider": "fake", "model_name": "m", "is_default": True})
    store.engine.dispose()
    code = (
        f"from llmpool import LLMPool; pool = LLMPool({url!r}, poll_interval=0); "
        "print(pool.get_llm_with_fallback().invoke('hi').content)"
    )
    start = time_process("pass", repeat=n["import_repeat"]).median
    sample = time_process(code, repeat=n["import_repeat"])
    return [
        Row(
            "first answer from SQLite in a new process",
            "llmpool",
            f"{(sample.median - start) / 1e6:.0f} ms (net of interpreter start)",
        )
    ]


def bench_cli(n: dict[str, int], tmp: Path) -> list[Row]:
    """``llmpool list`` on SQLite against ``import sqlalchemy, pydantic``, whole processes taken
    in turn (ABAB...), the median of each."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp / 'cli.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add({"name": "Fake", "provider": "fake", "model_name": "m", "is_default": True})
    store.add({"name": "GPT", "provider": "openai", "model_name": "gpt-4o", "priority": 2})
    store.engine.dispose()
    # As an installed wheel runs: its modules compiled once, not on every start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {
        "llmpool list": [sys.executable, "-m", "llmpool", "--database-url", url, "list"],
        "import sqlalchemy, pydantic": [sys.executable, "-c", "import sqlalchemy, pydantic"],
    }
    samples = {name: Sample(name) for name in commands}
    for round_ in range(1 + n["cli_repeat"]):
        for name, command in commands.items():
            started = time.perf_counter_ns()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            if round_:  # the first round writes the compiled modules
                samples[name].values.append(time.perf_counter_ns() - started)
    ratio = samples["llmpool list"].median / samples["import sqlalchemy, pydantic"].median
    return [
        Row(
            "CLI start-up: a whole process, x `python -c 'import sqlalchemy, pydantic'`",
            "llmpool list (SQLite, 2 rows)",
            f"{samples['llmpool list'].median / 1e6:.0f} ms",
            ratio,
            "≤ 1.3x",
            "pass" if ratio <= 1.3 else "miss",
        )
    ]


def bench_cached(n: dict[str, int]) -> list[Row]:
    """Cached against uncached get_llm_with_fallback()."""
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.memory import InMemoryStore

    rows = [
        {"name": f"M{i}", "provider": "fake", "model_name": "m", "priority": i} for i in range(5)
    ]
    pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
    pool.get_llm_with_fallback()

    def uncached() -> None:
        fresh = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        fresh.get_llm_with_fallback()
        fresh.close()

    samples = compare(
        {"cached": pool.get_llm_with_fallback, "uncached (new pool)": uncached},
        rounds=n["rounds"],
        batch=n["batch"],
        warmup=n["warmup"],
    )
    cached = samples["cached"].median / 1000
    rows_out = [
        Row(
            "get_llm_with_fallback()",
            "cached",
            f"{cached:.2f} µs",
            None,
            "≤ 10 µs",
            "pass" if cached <= 10 else "miss",
        ),
        Row(
            "get_llm_with_fallback()",
            "uncached (new pool, 5 rows)",
            f"{samples['uncached (new pool)'].median / 1000:.0f} µs",
        ),
    ]
    try:
        import litellm

        def router_build() -> None:
            litellm.Router(
                model_list=[
                    {
                        "model_name": "p",
                        "litellm_params": {
                            "model": "openai/p",
                            "api_key": "sk-x",
                            "mock_response": "ok",
                        },
                    }
                ]
            )

        sample = compare(
            {"router": router_build}, rounds=max(3, n["rounds"] // 4), batch=1, warmup=1
        )["router"]
        rows_out.append(
            Row(
                "get_llm_with_fallback()",
                "LiteLLM Router build (reference)",
                f"{sample.median / 1000:.0f} µs",
            )
        )
    except ImportError:
        pass
    return rows_out


def _pg_schema() -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{PG_URL}?options=-csearch_path%3D{schema}"


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench_postgres(n: dict[str, int]) -> list[Row]:
    """Listing 10,000 rows, and change propagation between two pools."""
    import psycopg

    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    try:
        schema, url = _pg_schema()
    except psycopg.OperationalError as error:
        return [Row("PostgreSQL rows", "skipped", f"no PostgreSQL at {PG_URL}: {error}")]
    try:
        migrate(url)
        count = n["rows"]
        copy_sql = (
            "COPY llms (id, name, provider, model_name, priority, auth_meta, config) FROM STDIN"
        )
        with (
            psycopg.connect(url, autocommit=True) as conn,
            conn.cursor() as cur,
            cur.copy(copy_sql) as copy,
        ):
            for i in range(count):
                copy.write_row(
                    (
                        str(uuid.uuid4()),
                        f"LLM {i:05d}",
                        "openai",
                        "gpt-4",
                        i % 100,
                        '{"api_key_env": "OPENAI_API_KEY"}',
                        '{"temperature": 0.2}',
                    )
                )
        store = SQLStore(url)
        raw = psycopg.connect(url)

        def raw_fetch() -> None:
            with raw.cursor() as cur:
                cur.execute("SELECT * FROM llms ORDER BY priority, name, id")
                cur.fetchall()

        small = {"rounds": max(3, n["rounds"] // 4), "batch": 1, "warmup": 1}
        samples = compare(
            {
                "raw psycopg fetch": raw_fetch,
                "SQLStore.list_llms (validated LLMConfig)": lambda: store.list_llms(scope=None),
                # A store that has seen none of the rows: every row parsed and validated.
                "SQLStore.list_llms, first read (every row validated)": lambda: SQLStore(
                    store.engine
                ).list_llms(scope=None),
            },
            **small,
        )
        rows = _ratio_rows(
            f"list {count:,} rows from PostgreSQL (x raw psycopg)",
            samples,
            "raw psycopg fetch",
            {"SQLStore.list_llms (validated LLMConfig)": 1.5},
            unit="ms",
            scale=1e6,
        )
        raw.close()
        store.engine.dispose()
    finally:
        _drop_schema(schema)
    # Propagation on a table of realistic size, in a schema of its own.
    schema, url = _pg_schema()
    try:
        migrate(url)
        return rows + _propagation(url, n)
    finally:
        _drop_schema(schema)


def _propagation(url: str, n: dict[str, int]) -> list[Row]:
    import statistics

    from llmpool.pool.facade import LLMPool

    out = []
    with LLMPool(url, poll_interval=0) as writer:
        row = writer.store.add(
            {"name": "Propagation", "provider": "fake", "model_name": "m", "scope": "bench"}
        )
        for label, kwargs in (
            ("NOTIFY", {"listen": True, "poll_interval": 1.0}),
            ("polling every 0.1 s", {"listen": False, "poll_interval": 0.1}),
        ):
            reader = LLMPool(url, **kwargs)
            reader.get_llms_from_db(scope="bench")
            if kwargs["listen"]:
                deadline = time.monotonic() + 10
                while not ((w := reader._snapshots.watcher) and w.listening):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
            times = []
            for i in range(n["propagation"]):
                enabled = i % 2 == 1
                started = time.perf_counter()
                writer.store.update(row.id, {"enabled": enabled})
                while any(
                    c.enabled != enabled
                    for c in reader.get_llms_from_db(enabled_only=False, scope="bench")
                ):
                    time.sleep(0.0005)
                times.append((time.perf_counter() - started) * 1000)
            reader.close()
            target = 50.0 if kwargs["listen"] else 1000.0
            median = statistics.median(times)
            out.append(
                Row(
                    "change propagation, commit to another pool",
                    label,
                    f"{median:.1f} ms (max {max(times):.1f})",
                    None,
                    f"≤ {target:.0f} ms",
                    "pass" if median <= target else "miss",
                )
            )
    return out


SECTIONS = {
    "invoke": bench_invoke,
    "failover": bench_failover_closed_port,
    "concurrent": bench_concurrent,
    "import": bench_import,
    "cached": bench_cached,
    "postgres": bench_postgres,
    "routing": lambda n: __import__("bench.routing", fromlist=["x"]).bench_routing(n),
    "budget": lambda n: __import__("bench.budget", fromlist=["x"]).bench_budget(n),
}


def _versions() -> str:
    names = [
        "llmpool",
        "langchain-core",
        "langchain-openai",
        "sqlalchemy",
        "psycopg",
        "pydantic",
        "tenacity",
        "litellm",
    ]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    return f"{cpu}, {os.cpu_count()} cores, {memory}; Python {platform.python_version()}"


def render(rows: list[Row], settings: dict[str, int]) -> str:
    """The results as a Markdown document."""
    lines = [
        "# llmpool benchmarks",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_machine()}",
        f"- versions: {_versions()}",
        f"- settings: {settings}",
        "- ratios are medians against the baseline measured in the same run, in interleaved"
        " rounds; p95 in parentheses",
        "",
        "| measure | subject | median | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        lines.append(
            f"| {r.measure} | {r.subject} | {r.value} | {ratio} | {r.target} | {r.verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print (and, unless --smoke, write) the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--smoke", action="store_true", help="a few iterations; no file written")
    parser.add_argument("--only", help="run the sections whose name contains this")
    parser.add_argument("--iterations", type=int, help="rounds per measurement")
    parser.add_argument(
        "--output",
        help="where to write the results (default bench/results.md; a partial run with --only "
        "writes only when this is given, so it never replaces the full results)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        n = {
            "rounds": 3,
            "batch": 5,
            "warmup": 2,
            "concurrency": 50,
            "import_repeat": 1,
            "cli_repeat": 1,
            "rows": 200,
            "propagation": 2,
        }
    else:
        n = {
            "rounds": 30,
            "batch": 200,
            "warmup": 200,
            "concurrency": 1000,
            "import_repeat": 7,
            "cli_repeat": 10,
            "rows": 10_000,
            "propagation": 20,
        }
    if args.iterations:
        n["rounds"] = args.iterations
    import tempfile

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, section in SECTIONS.items():
            if args.only and args.only not in name:
                continue
            rows += section(n)
            print(f"... {name} done", file=sys.stderr)
        if not args.only or args.only in "first":
            rows += bench_first_answer(n, Path(tmp))
        if not args.only or args.only in "cli":
            rows += bench_cli(n, Path(tmp))
    text = render(rows, n)
    print(text)
    if args.smoke:
        from bench import instructions

        instructions.main(["--smoke"])
    output = args.output or (None if args.only else str(HERE / "results.md"))
    if not args.smoke and output:
        Path(output).write_text(text, "utf-8")
        from bench.chart import draw

        date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
        print(f"chart: {draw(rows, Path(output).with_suffix('.svg'), date)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
