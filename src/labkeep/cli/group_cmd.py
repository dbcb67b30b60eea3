"""``labkeep group ...``: groups (labs) and their members' roles."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

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

group_app = typer.Typer(help="Create groups (labs) and manage their members.", no_args_is_help=True)


class Role(StrEnum):
    admin = "admin"
    member = "member"


def register(app: typer.Typer) -> None:
    app.add_typer(group_app, name="group")


def _members(record: dict[str, Any]) -> str:
    members: dict[str, str] = record.get("members") or {}
    if not members and record.get("member_count"):
        return f"{record['member_count']} members"
    return ", ".join(f"{user} ({role})" for user, role in members.items())


@group_app.command("create")
@handle_errors
def group_create(
    name: Annotated[str, typer.Argument(help="Slug, e.g. lab-a.")],
    title: Annotated[str, typer.Option(help="Human title, e.g. 'Smith lab'.")] = "",
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a group (site admins)."""
    with open_keep(root) as keep:
        record = keep.create_group(name, title=title)
    if json_out:
        emit_json({"action": "group-create", "status": "ok", **record})
        return
    out.print(f"created group {record['group']}")
    err.print(f"next: labkeep group add-member {record['group']} USER --role admin")


@group_app.command("add-member")
@handle_errors
def group_add_member(
    group: Annotated[str, typer.Argument(help="Group name.")],
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[
        Role,
        typer.Option(help="admin: manages members and the group's projects; member: writes."),
    ] = Role.member,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a member to a group, or change a member's role."""
    with open_keep(root) as keep:
        record = keep.set_member(group, user, role.value)
    if json_out:
        emit_json(
            {"action": "group-member", "status": "ok", "user": user, "role": role.value, **record}
        )
    else:
        out.print(f"{user} is now {role.value} of {record['group']}")


@group_app.command("remove-member")
@handle_errors
def group_remove_member(
    group: Annotated[str, typer.Argument(help="Group name.")],
    user: Annotated[str, typer.Argument(help="User name.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a member from a group."""
    with open_keep(root) as keep:
        record = keep.set_member(group, user, None)
    if json_out:
        emit_json({"action": "group-member", "status": "ok", "user": user, "role": None, **record})
    else:
        out.print(f"removed {user} from {record['group']}")


@group_app.command("list")
@handle_errors
def group_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """List groups (with their members, for site admins and the group's own members)."""
    with open_keep(root) as keep:
        groups = keep.list_groups()
    if json_out:
        for record in groups:
            emit_json(record)
        return
    grid = table("group", "title", "members")
    for record in groups:
        grid.add_row(record["group"], escape(record["title"]), _members(record))
    out.print(grid)
    if not groups:
        err.print("no groups yet: create one with 'labkeep group create NAME'")
