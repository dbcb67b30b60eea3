"""``labkeep check``: catalog against tree, event chain, copies, runs and jobs."""

from __future__ import annotations

from collections import Counter

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, err, handle_errors, open_keep, out


def register(app: typer.Typer) -> None:
    app.command("check")(check)


@handle_errors
def check(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Every inconsistency a data steward must know about, each with the command that
    fixes it. Exit 1 when anything was found (3 when the catalog or tree cannot be read)."""
    from rich.markup import escape

    counts: Counter[str] = Counter()
    with open_keep(root) as keep:
        for finding in keep.check():
            counts[finding.kind] += 1
            if json_out:
                emit_json(finding.to_dict())
            else:
                out.print(
                    f"[red]{finding.kind}[/] {escape(finding.target)}: {escape(finding.message)}"
                    f"\n    fix: {escape(finding.fix)}"
                )
    if json_out:
        emit_json({"action": "check", "status": "error" if counts else "ok", "found": counts})
    elif counts:
        err.print("check: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    else:
        out.print("check: no inconsistencies found")
    if counts:
        raise typer.Exit(1)
