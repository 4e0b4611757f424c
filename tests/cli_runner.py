"""Run the ``llmpool`` command in this process as a fresh process would, or through its script.

`run_cli` calls ``llmpool.cli.main.main(argv)`` with stdin, stdout and stderr swapped for strings
and the environment the console script gets from `run_script`: no provider variables, no
configured database, plugins off. Whatever ``main`` leaves behind in the process is put back
after each run, so that one run cannot see another: the provider registry (discovered afresh,
reading ``LLMPOOL_DISABLE_PLUGIN_AUTOLOAD`` as a new process would), the secret values
remembered for redaction, and the warning handler ``main`` attaches to the ``llmpool`` logger.
An exception escaping ``main`` becomes what the interpreter would make of it: its traceback
on stderr and exit code 1.

`run_script` runs the installed console script in a subprocess, for what needs a real
process: a pipe on stdin, the interpreter's exit, a closed stdout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmpool.cli import main as cli
from llmpool.credentials import redaction
from llmpool.providers import set_registry

#: The installed console script next to this interpreter.
SCRIPT = shutil.which("llmpool", path=str(Path(sys.executable).parent))

#: Variables of the test run that a command must not see (keys, endpoints, a database).
HIDDEN_PREFIXES = ("OPENAI", "OLLAMA", "ANTHROPIC", "LLMPOOL_DATABASE")


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code, its stdout and its stderr."""

    code: int
    out: str
    err: str
    args: tuple[str, ...] = ()


def _hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES) or name == "DATABASE_URL"


def script_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment as a command sees it, with ``env`` on top."""
    environ = {k: v for k, v in os.environ.items() if not _hidden(k)}
    environ["LLMPOOL_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    environ.update(env or {})
    return environ


def _exit_code(exit_: SystemExit, err: io.StringIO) -> int:
    # What the interpreter does with SystemExit: None is 0, an int is itself, else print it.
    if exit_.code is None or isinstance(exit_.code, int):
        return exit_.code or 0
    print(exit_.code, file=err)
    return 1


def run_cli(*argv: str, env: Mapping[str, str] | None = None, stdin: str = "") -> Result:
    """Run ``llmpool ARGV`` in this process, with ``stdin`` as its (non-terminal) input."""
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("llmpool")
    handlers = list(logger.handlers)
    redaction.forget_all()
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            set_registry(None),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            for name in [name for name in os.environ if _hidden(name)]:
                patch.delenv(name)
            for name, value in script_environ(env).items():
                if os.environ.get(name) != value:
                    patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            try:
                code = cli.main(list(argv))
            except SystemExit as exit_:
                code = _exit_code(exit_, err)
            except Exception:
                err.write(traceback.format_exc())
                code = 1
    finally:
        logger.handlers[:] = handlers
        redaction.forget_all()
    return Result(code, out.getvalue(), err.getvalue(), argv)


def run_script(
    *argv: str, env: Mapping[str, str] | None = None, stdin: str = "", timeout: float = 120
) -> Result:
    """Run the installed console script in a subprocess, with stdin a pipe holding ``stdin``."""
    assert SCRIPT, "the llmpool console script is not installed next to this interpreter"
    done = subprocess.run(
        [SCRIPT, *argv],
        capture_output=True,
        text=True,
        env=script_environ(env),
        input=stdin,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr, argv)
