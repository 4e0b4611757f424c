"""The invoke overheads in CPU instructions, counted by valgrind's callgrind: noise-free ratios.

Wall-clock ratios on a shared 2-core machine move by 10-20 % between runs; an instruction count
is the same for the same binary and inputs whatever else the machine does. Each subject runs in
a process of its own under ``valgrind --tool=callgrind``, once with no measured calls and once
with ``--calls`` of them, both with ``PYTHONHASHSEED=0`` (with a random seed, start-up alone
varies by millions of instructions between two processes); the difference divided by the calls
is its cost per call, and every ratio is against the bare fake model counted in the same run.
The size of the process environment moves a count by up to 8,000 instructions (the memory
layout changes): ``--sizes N`` counts each subject in N environments of different sizes and
reports the mean.

Run from the repository root (needs valgrind; about 40 s of start-up per process, two at a
time)::

    python -m bench.instructions              # prints the table, writes bench/instructions.md
    python -m bench.instructions --smoke      # each subject in-process, no valgrind (CI)
    python -m bench.instructions --calls 1000 --sizes 6 --only "FallbackChatModel"
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WARMUP = 50
#: How many characters of environment each further ``--sizes`` adds.
PAD_STEP = 23

#: The chain whose rows declare what their models can take (`llmpool.providers.fit`).
FITTED = "primary answers: llmpool FallbackChatModel, rows declaring their fit"
#: Calls naming a session (`llmpool.chain.affinity`, kept in the process).
SESSION = "primary answers: llmpool FallbackChatModel, with a session_key"


def subjects() -> dict[str, Callable[[], Any]]:
    """The measured calls, by name: the same subjects as ``bench.run``'s invoke section."""
    from bench.run import _candidates, _failing, _fake
    from llmpool.chain.affinity import Affinity
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.providers.fit import CAPABILITIES, Fit

    bare = _fake()
    failing = _failing()
    no_breaker = FallbackPolicy(attempts=1, failure_threshold=10**9, failure_rate=None)
    answers = FallbackChatModel(candidates=_candidates(_fake(), _fake()))
    fitted = _candidates(_fake(), _fake())
    for candidate in fitted:  # what a gpt-4o row declares: every call measures its prompt
        candidate.fit = Fit(128_000, 16_384, CAPABILITIES)
    fits = FallbackChatModel(candidates=fitted)
    sessions = FallbackChatModel(candidates=_candidates(_fake(), _fake()), affinity=Affinity())
    session = {"metadata": {"session_key": "conversation 42"}}
    raises = FallbackChatModel(candidates=_candidates(_failing(), _fake()), policy=no_breaker)
    lc_answers = _fake().with_fallbacks([_fake()])
    lc_raises = _failing().with_fallbacks([_fake()], exceptions_to_handle=(ConnectionError,))

    def floor() -> None:
        try:
            failing.invoke("hi")
        except ConnectionError:
            bare.invoke("hi")

    return {
        "bare fake model": lambda: bare.invoke("hi"),
        "primary answers: LangChain with_fallbacks": lambda: lc_answers.invoke("hi"),
        "primary answers: llmpool FallbackChatModel": lambda: answers.invoke("hi"),
        FITTED: lambda: fits.invoke("hi"),
        SESSION: lambda: sessions.invoke("hi", config=session),
        "primary raises: floor (the two calls, no fallback code)": floor,
        "primary raises: LangChain with_fallbacks": lambda: lc_raises.invoke("hi"),
        "primary raises: llmpool FallbackChatModel": lambda: raises.invoke("hi"),
        **_embedding_subjects(),
        **_routing_subjects(),
    }


def _routing_subjects() -> dict[str, Callable[[], Any]]:
    """The strategies (a pool over two rows of equal priority) and one local limit check."""
    from bench.routing import limit_check, model_subjects, strategy_subjects

    return {
        **model_subjects(),
        **strategy_subjects(),
        "rate limit: one local check": limit_check(),
    }


#: The embedding subjects' texts: one ``embed_documents`` call of 100.
TEXTS = [f"document number {i}" for i in range(100)]


def _embedding_subjects() -> dict[str, Callable[[], Any]]:
    """A bare fake ``embed_documents`` of 100 texts, and the fallback whose primary answers."""
    from llmpool.contracts import Candidate
    from llmpool.fallback.embeddings import FallbackEmbeddings
    from llmpool.models import LLMConfig
    from llmpool.providers.fake import FakeEmbeddings

    bare = FakeEmbeddings(model="m")
    rows = [
        LLMConfig(id=n, name=n, provider="fake", model_name="m", kind="embedding", priority=p)
        for n, p in (("primary", 1), ("secondary", 2))
    ]
    fallback = FallbackEmbeddings(
        candidates=[Candidate(row, FakeEmbeddings(model="m")) for row in rows]
    )
    return {
        "bare fake embed_documents (100 texts)": lambda: bare.embed_documents(TEXTS),
        "embeddings, primary answers: llmpool FallbackEmbeddings": (
            lambda: fallback.embed_documents(TEXTS)
        ),
    }


def _baselines() -> dict[str, str]:
    """Subjects measured against another baseline than the bare fake chat model: embeddings
    against a bare fake embedding; a pool's calls against the model its rows build, bare."""
    from bench.routing import METADATA, METERED, ROW_BARE, STRATEGIES, TAG_BUDGET, TAGGED

    pooled = [f"primary answers: llmpool pool, {s}" for s in STRATEGIES]
    return {
        "embeddings, primary answers: llmpool FallbackEmbeddings": (
            "bare fake embed_documents (100 texts)"
        ),
        **dict.fromkeys([*pooled, METERED, METADATA, TAGGED, TAG_BUDGET], ROW_BARE),
    }


def _targets() -> dict[str, float]:
    """The ratio each subject must keep (the floor's is added to the one failing over)."""
    from bench.routing import METERED, STRATEGIES

    return {
        "primary answers: llmpool FallbackChatModel": 1.05,
        FITTED: 1.07,  # the fit check: at most 0.02x of the bare model
        METERED: 1.08,
        **{f"primary answers: llmpool FallbackChatModel, {s}": 1.08 for s in STRATEGIES},
        **{f"primary answers: llmpool pool, {s}": 1.08 for s in STRATEGIES},
        "embeddings, primary answers: llmpool FallbackEmbeddings": 1.05,
    }


def _over() -> dict[str, tuple[str, float]]:
    """Subjects whose target is another subject's ratio plus a budget (of the bare model)."""
    from bench.routing import METADATA, TAG_BUDGET, TAGGED

    return {
        # failing over: the two calls with no fallback code, plus 0.10x
        "primary raises: llmpool FallbackChatModel": (
            "primary raises: floor (the two calls, no fallback code)",
            0.10,
        ),
        # a call's tags, checked and counted per tag set, over the same call with run metadata
        # that names none (what LangChain's own handling of the metadata costs is not ours)
        TAGGED: (METADATA, 0.03),
        # the same tags, and one tag's budget checked on every call (`llmpool.chain.quotas`)
        TAG_BUDGET: (METADATA, 0.03),
    }


def _child(name: str, calls: int) -> None:
    call = subjects()[name]
    for _ in range(WARMUP + calls):
        call()


def _count(name: str, calls: int, size: int = 0) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        name,
        str(calls),
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
        # The same start-up in both processes; ``size`` more characters of environment move
        # the process's memory layout (one count moves by up to 8,000 instructions with it).
        env={**os.environ, "PYTHONHASHSEED": "0", "LLMPOOL_BENCH_PAD": "x" * size},
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    msg = f"callgrind printed no count for {name!r}:\n{out.stderr[-2000:]}"
    raise RuntimeError(msg)


def measure(calls: int, only: str = "", sizes: int = 1) -> dict[str, float]:
    """Return the instructions per call of every subject (or of those whose name contains one
    of ``only``'s comma-separated parts, with the baselines they are measured against): the
    mean over ``sizes`` environments of different sizes."""
    parts = [part for part in only.split(",") if part]
    keep = {"bare fake model", *(base for base, _ in _over().values()), *_baselines().values()}
    names = [n for n in subjects() if not parts or n in keep or any(p in n for p in parts)]
    pads = [PAD_STEP * i for i in range(sizes)]
    jobs = [(name, n, pad) for name in names for pad in pads for n in (0, calls)]
    # One process first, uncounted: in a fresh checkout it writes the bytecode caches, which
    # would otherwise be counted in whichever process imported a module first.
    subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--child", names[0], "0"],
        check=True,
        cwd=HERE.parent,
    )
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs), strict=True))
    return {
        name: sum(counts[(name, calls, p)] - counts[(name, 0, p)] for p in pads) / calls / sizes
        for name in names
    }


def render(per_call: dict[str, float], calls: int, sizes: int = 1) -> str:
    """The counts as a Markdown document."""
    from bench.run import _machine, _versions

    bare = per_call["bare fake model"]
    lines = [
        "# llmpool invoke overhead in instructions (callgrind)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_machine()}",
        f"- versions: {_versions()}",
        f"- {calls} measured calls per subject after {WARMUP} warm-up calls, one process each;"
        f" the mean over {sizes} environment size{'s' if sizes > 1 else ''}",
        "- ratios against the bare fake model; a pool's calls against the model its rows build,"
        " called bare; embeddings against a bare fake embedding",
        "",
        "| subject | instructions per call | ratio | target | |",
        "|---|---|---|---|---|",
    ]
    targets, baselines = _targets(), _baselines()

    def base(name: str) -> float:
        return per_call.get(baselines.get(name, ""), bare)

    for subject, (baseline, budget) in _over().items():
        if subject in per_call and baseline in per_call:  # the budget is of the bare model
            targets[subject] = (per_call[baseline] + budget * bare) / base(subject)
    for name, count in per_call.items():
        ratio = count / base(name)
        target = targets.get(name)
        verdict = "" if target is None else ("pass" if ratio <= target else "miss")
        shown = f"≤ {target:.2f}x" if target is not None else ""
        lines.append(f"| {name} | {count:,.0f} | {ratio:.2f}x | {shown} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Count, print and write the table (or, with --smoke, run each subject once)."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--only", default="", help="subjects whose name contains one of a,b,...")
    parser.add_argument(
        "--sizes", type=int, default=1, help="count each subject in N environment sizes, the mean"
    )
    parser.add_argument("--smoke", action="store_true", help="run each subject in-process")
    parser.add_argument("--output", default=str(HERE / "instructions.md"))
    parser.add_argument("--child", nargs=2, metavar=("NAME", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    if args.smoke:
        for call in subjects().values():
            call()
        print("bench.instructions: every subject ran (smoke; no valgrind)")
        return 0
    if shutil.which("valgrind") is None:
        print("bench.instructions: valgrind is not installed", file=sys.stderr)
        return 1
    text = render(measure(args.calls, args.only, args.sizes), args.calls, args.sizes)
    print(text)
    Path(args.output).write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
