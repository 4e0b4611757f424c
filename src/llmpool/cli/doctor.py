"""``llmpool doctor``: every problem of the table's rows, with the command that fixes each.

Exit code 0 when nothing is wrong, 1 when something is (see `llmpool.pool.doctor`).
"""

from __future__ import annotations

import argparse

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import emit, one_line, open_pool, table

__all__ = ["COMMANDS", "register"]

_EPILOG = (
    "Reports invalid rows, literal secrets, unresolvable references (run it with the "
    "environment of the hosts that serve the models), unknown providers and config keys, "
    "names of one scope differing only by case or spaces, disabled defaults, and scopes whose "
    "stored routing is no strategy. Exit code 1 when anything is found."
)


def register(add: AddCommand) -> None:
    """Add the ``doctor`` parser."""
    p = add("doctor", "find invalid rows and other problems, with the command fixing each", _EPILOG)
    p.add_argument("--scope", type=bounded("scope"), help="only this scope (default: all)")


def cmd_doctor(args: argparse.Namespace) -> int:
    """``llmpool doctor [--scope S]``."""
    from llmpool.pool.doctor import diagnose
    from llmpool.repository.sql.url import mask_url

    with open_pool(args) as pool:
        engine = getattr(pool.store, "engine", None)
        database = mask_url(engine) if engine is not None else repr(pool.store)
        findings = [f.as_dict() for f in diagnose(pool.store, scope=args.scope)]
    for finding in findings:
        finding["problem"] = one_line(finding["problem"])
        finding["fix"] = one_line(finding["fix"])

    def render() -> str:
        if not findings:
            return f"no problems found (database: {database})"
        lines = [f"{len(findings)} problem(s) found (database: {database})", ""]
        lines.append(table(findings, ("kind", "name", "llm_id", "field")))
        for finding in findings:
            lines += [
                "",
                f"{finding['kind']}: {finding['problem']}",
                f"  fix: {finding['fix']}",
            ]
        return "\n".join(lines)

    emit(args, {"database": database, "ok": not findings, "findings": findings}, render)
    return 1 if findings else 0


COMMANDS: dict[str, Handler] = {"doctor": cmd_doctor}
