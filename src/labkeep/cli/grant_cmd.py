"""``labkeep grant``, ``revoke``, ``grants`` and ``public``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    open_keep,
    out,
    table,
)

PrincipalArg = Annotated[
    str, typer.Argument(help="Who: alice, user:alice or group:lab-a.", metavar="PRINCIPAL")
]
TargetArg = Annotated[str, typer.Argument(help="PROJECT or PROJECT/DATASET", metavar="TARGET")]


class Level(StrEnum):
    read = "read"
    write = "write"
    manage = "manage"


def register(app: typer.Typer) -> None:
    app.command("grant")(grant)
    app.command("revoke")(revoke)
    app.command("grants")(grants)
    app.command("public")(public)


@handle_errors
def grant(
    principal: PrincipalArg,
    permission: Annotated[
        Level,
        typer.Argument(
            help="read, write or manage (each includes the ones before).", metavar="PERMISSION"
        ),
    ],
    target: TargetArg,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Give a user or group a permission on a project or dataset (replaces an earlier one)."""
    with open_keep(root) as keep:
        record = keep.grant(principal, permission.value, target)
    if json_out:
        emit_json(record)
    else:
        out.print(f"granted {record['permission']} on {record['target']} to {record['principal']}")


@handle_errors
def revoke(
    principal: PrincipalArg,
    target: TargetArg,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Take back a user's or group's grant on a project or dataset."""
    with open_keep(root) as keep:
        record = keep.revoke(principal, target)
    if json_out:
        emit_json(record)
    else:
        out.print(f"revoked the grant of {record['principal']} on {record['target']}")
        if record.get("message"):
            out.print(record["message"] + ": they work again when the access is given back")


@handle_errors
def grants(target: TargetArg, root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Who has which grant on a project (and its datasets) or on one dataset."""
    with open_keep(root) as keep:
        rows = keep.list_grants(target)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("principal", "permission", "on", "granted", "by")
    for row in rows:
        grid.add_row(
            row["principal"], row["permission"], row["target"], row["created_at"], row["created_by"]
        )
    out.print(grid)
    if not rows:
        err.print(
            f"no explicit grants on {target} (group roles still apply); "
            f"add one with 'labkeep grant USER read {target}'"
        )


@handle_errors
def public(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET", metavar="PROJECT/DATASET")],
    off: Annotated[bool, typer.Option("--off", help="Make it private again.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a dataset readable by anyone, without signing in (--off: private again)."""
    with open_keep(root) as keep:
        record = keep.set_public(address, not off)
    if json_out:
        emit_json(record)
    elif record["public"]:
        out.print(f"{record['dataset']} is now public: anyone can read it")
        err.print(f"undo with: labkeep public {record['dataset']} --off")
    else:
        out.print(f"{record['dataset']} is no longer public")
