"""``labkeep user ...`` and ``labkeep whoami``.

Passwords are read with hidden input (or one line per password from stdin with
``--password-stdin``) and handed to the Keep; they are never printed, echoed or put in a
JSON record.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    open_keep,
    open_keep_or_remote,
    out,
    table,
)
from labkeep.errors import UsageError

user_app = typer.Typer(help="Manage labkeep accounts (site admins).", no_args_is_help=True)

PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of stdin instead of prompting.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.command("whoami")(whoami)


def read_password(prompt: str, *, from_stdin: bool, confirm: bool = True) -> str:
    """One password: a line of stdin, or a hidden prompt (on stderr) typed twice."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError(
                "no password on stdin", hint="pipe it in, e.g. from a password manager"
            )
        return line.rstrip("\r\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))


@user_app.command("add")
@handle_errors
def user_add(
    name: Annotated[str, typer.Argument(help="User name (a slug, e.g. alice).")],
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    site_admin: Annotated[
        bool, typer.Option("--site-admin", help="May do everything, including manage users.")
    ] = False,
    os_user: Annotated[
        str | None,
        typer.Option(
            "--os-user",
            metavar="OSNAME",
            help="The OS account that acts as this user on this machine.",
            show_default=False,
        ),
    ] = None,
    ldap: Annotated[
        bool, typer.Option("--ldap", help="Signs in through LDAP: no password here.")
    ] = False,
    password_stdin: PasswordStdinOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an account; asks for its password (twice, hidden) unless --ldap."""
    if ldap and password_stdin:
        raise UsageError("LDAP accounts have their password in the directory: drop one option")
    with open_keep(root) as keep:
        password = None if ldap else read_password("Password", from_stdin=password_stdin)
        info = keep.add_user(
            name,
            password=password,
            display_name=display_name,
            email=email,
            site_admin=site_admin,
            os_user=os_user,
            ldap=ldap,
        )
    if json_out:
        emit_json({"action": "user-add", "status": "ok", **info.to_dict()})
        return
    role = "site admin" if info.site_admin else "user"
    out.print(f"created {role} {info.name} ({info.source})")
    err.print(
        f"next: labkeep group add-member GROUP {info.name}, "
        f"or labkeep grant {info.name} read PROJECT"
    )


@user_app.command("list")
@handle_errors
def user_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """List accounts and their groups."""
    with open_keep(root) as keep:
        users = keep.list_users()
    if json_out:
        for user in users:
            emit_json(user.to_dict())
        return
    grid = table("user", "name", "email", "source", "admin", "state", "os user", "groups")
    for user in users:
        grid.add_row(
            user.name,
            escape(user.display_name),
            escape(user.email),
            user.source,
            "site admin" if user.site_admin else "",
            "disabled" if user.disabled else "active",
            user.os_user or "",
            ", ".join(f"{g} ({r})" for g, r in user.groups.items()),
        )
    out.print(grid)


def _set_disabled(name: str, disabled: bool, root: str | None, json_out: bool) -> None:
    with open_keep(root) as keep:
        info = keep.set_user_disabled(name, disabled)
    if json_out:
        action = "user-disable" if disabled else "user-enable"
        emit_json({"action": action, "status": "ok", **info.to_dict()})
    elif disabled:
        out.print(f"disabled {info.name}: signed out, API tokens revoked")
        if info.suspended_shares:
            out.print(info.to_dict()["message"] + ": they work again if the account is enabled")
        err.print(f"undo with: labkeep user enable {info.name}")
    else:
        out.print(f"enabled {info.name}")
        if info.resumed_shares:
            out.print(info.to_dict()["message"])


@user_app.command("disable")
@handle_errors
def user_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Disable an account: it can no longer sign in; its API tokens are revoked."""
    _set_disabled(name, True, root, json_out)


@user_app.command("enable")
@handle_errors
def user_enable(
    name: Annotated[str, typer.Argument(help="User name.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enable a disabled account again (its old API tokens stay revoked)."""
    _set_disabled(name, False, root, json_out)


@user_app.command("passwd")
@handle_errors
def user_passwd(
    name: Annotated[
        str | None,
        typer.Argument(help="Whose password (default: yours).", show_default=False),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the new password from stdin (when the current one is asked for, "
            "it comes first, on its own line).",
        ),
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a password: yours (giving the current one), or anyone's as site admin."""
    with open_keep(root) as keep:
        me = keep.principal
        own = name is None or (me.kind == "user" and me.name == name)
        who = me.name if name is None else name
        current = None
        if own and me.kind == "user" and not me.site_admin:
            current = read_password("Current password", from_stdin=password_stdin, confirm=False)
        password = read_password("New password", from_stdin=password_stdin)
        keep.set_password(who, password, current=current)
    if json_out:
        emit_json({"action": "user-passwd", "status": "ok", "user": who})
    else:
        out.print(f"changed the password of {who}")


@handle_errors
def whoami(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Who labkeep takes you for here (or on the server you signed in to), and your groups."""
    with open_keep_or_remote(root) as keep:
        info = keep.whoami()
    if json_out:
        emit_json(info)
        return
    if info["kind"] != "user":
        os_name = str(info["name"]).removeprefix("os:")
        out.print(f"{info['name']} (no labkeep account: you may only see public data)")
        err.print(f"hint: ask a site admin to run 'labkeep user add NAME --os-user {os_name}'")
        return
    flags = [
        flag
        for flag, on in (("site admin", info["site_admin"]), ("read-only", info["read_only"]))
        if on
    ]
    out.print(info["name"] + (f" ({', '.join(flags)})" if flags else ""))
    groups = info.get("groups") or {}
    if groups:
        out.print("groups: " + ", ".join(f"{g} ({r})" for g, r in groups.items()))
    else:
        out.print("groups: none")
