"""``labkeep events [--check]``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    _escape,
    emit_json,
    handle_errors,
    open_keep,
    out,
    table,
)


def register(app: typer.Typer) -> None:
    app.command("events")(events)


@handle_errors
def events(
    target: Annotated[
        str | None, typer.Argument(help="Only events on this project/dataset.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (ingest, seal, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first); 0 for all.")] = 50,
    check: Annotated[bool, typer.Option("--check", help="Prove the hash chain intact.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The audit log, newest first; --check recomputes its hash chain (exit 1 if broken)."""
    with open_keep(root) as keep:
        if check:
            result = keep.check_events()
            if json_out:
                emit_json(result.to_dict())
            elif result.ok:
                out.print(f"[green]OK[/] {result.message}")
            else:
                out.print(f"[bold red]BROKEN[/] {result.message}")
            if not result.ok:
                raise typer.Exit(1)
            return
        rows = keep.events(target=target, action=action, limit=limit or None)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("id", "when", "actor", "action", "target", "details", paths=("target",))
    for row in rows:
        grid.add_row(
            str(row["id"]),
            row["at"],
            row["actor"],
            row["action"],
            _escape(row["target"]),
            _escape(json.dumps(row["details"], ensure_ascii=False)),
        )
    out.print(grid)
