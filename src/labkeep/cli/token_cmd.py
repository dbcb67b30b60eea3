"""``labkeep token ...``: API tokens for scripts, acting as you (optionally read-only).

``token create`` prints the secret on stdout and nothing else (``TOKEN=$(labkeep token
create)`` works); it is shown this once: the keep stores only its hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from labkeep.ops.tokens import TokenInfo

token_app = typer.Typer(help="API tokens for scripts and the web API.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


def _state(info: TokenInfo) -> str:
    if info.revoked_at is not None:
        return "revoked"
    return "active" if info.to_dict()["active"] else "expired"


@token_app.command("create")
@handle_errors
def token_create(
    name: Annotated[str, typer.Option(help="What it is for, e.g. 'nightly-sync'.")] = "",
    expires: Annotated[str, typer.Option(help="Lifetime: 12h, 30d, 2w.")] = "90d",
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Can read and download, nothing else.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an API token acting as you, and print its secret (shown once)."""
    with open_keep(root) as keep:
        secret, info = keep.create_token(name, expires=expires, read_only=read_only)
    if json_out:
        emit_json({"action": "token-create", "status": "ok", **info.to_dict(), "token": secret})
        return
    out.print(secret, markup=False)
    mode = "read-only " if info.read_only else ""
    err.print(
        f"{mode}API token {info.id} for {info.user}, valid until {info.to_dict()['expires_at']}. "
        "Store it now: it cannot be shown again. "
        f"Revoke it with 'labkeep token revoke {info.id}'."
    )


@token_app.command("list")
@handle_errors
def token_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """List your API tokens (a site admin sees everyone's); never their secrets."""
    with open_keep(root) as keep:
        tokens = keep.list_tokens()
    if json_out:
        for info in tokens:
            emit_json(info.to_dict())
        return
    grid = table("id", "user", "name", "access", "created", "expires", "last used", "state")
    for info in tokens:
        record = info.to_dict()
        grid.add_row(
            str(info.id),
            info.user,
            escape(info.name),
            "read-only" if info.read_only else "full",
            record["created_at"],
            record["expires_at"],
            record["last_used_at"] or "never",
            _state(info),
        )
    out.print(grid)
    if not tokens:
        err.print("no API tokens: create one with 'labkeep token create --name WHAT-FOR'")


@token_app.command("revoke")
@handle_errors
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see 'labkeep token list').")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke an API token: it stops working at once."""
    with open_keep(root) as keep:
        info = keep.revoke_token(token_id)
    if json_out:
        emit_json({"action": "token-revoke", "status": "ok", **info.to_dict()})
    else:
        out.print(f"revoked API token {info.id} ({escape(info.name) or 'unnamed'}) of {info.user}")
