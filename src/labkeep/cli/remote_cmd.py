"""``labkeep login URL``, ``labkeep logout``, ``labkeep download``: a laptop and a server."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    human_size,
    open_keep_or_remote,
    out,
    print_result,
    print_summary,
)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("download")(download)


@handle_errors
def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. https://data.example.org")],
    name: Annotated[str | None, typer.Option(help="Your user name (prompted if missing).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Use this API token instead of a password.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Sign in to a labkeep server: ls, versions, download, verify, whoami and share
    create/list/revoke then work against it from any folder that holds no keep."""
    import socket

    from labkeep.client import RemoteKeep, save_login, token_for_password

    url = url.rstrip("/")
    if token is None:
        name = name or typer.prompt("user name")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt("password", hide_input=True)
        token = token_for_password(
            url, name, password, f"labkeep login from {socket.gethostname()}"
        )["token"]
    with RemoteKeep(url, token) as remote:
        me = remote.whoami()
    path = save_login(url, token, str(me.get("name", "")))
    record = {
        "action": "login",
        "status": "ok",
        "url": url,
        "user": me.get("name"),
        "saved_to": str(path),
    }
    if json_out:
        emit_json(record)
    else:
        out.print(f"signed in to {url} as {me.get('name')} (token saved in {path})")


@handle_errors
def logout(json_out: JsonOpt = False) -> None:
    """Forget the saved server login (revoke the token in the web UI if it may have leaked)."""
    from labkeep.client import forget_login

    removed = forget_login()
    if json_out:
        emit_json({"action": "logout", "status": "ok" if removed else "notneeded"})
    else:
        out.print("signed out" if removed else "was not signed in")


@handle_errors
def download(
    address: Annotated[
        str, typer.Argument(help="PROJECT/DATASET[/PATH][@VERSION]: a file, folder or dataset")
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Where to: into it if it is a folder (like cp -r), else as it."
        ),
    ] = ".",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every file.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy a file, folder or dataset out of the keep (or the server), checking every
    file's SHA-256; files already downloaded are skipped (run it again to resume)."""
    with open_keep_or_remote(root) as keep:
        report = keep.export(
            address,
            output,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
        )
    if json_out:
        emit_json(report.summary())
    else:
        counts = report.counts()
        print_summary(
            "download",
            counts,
            f" ({human_size(report.info['bytes'])} in {report.info['saved_to']}, "
            "each file checked against its SHA-256)",
        )
        if report.failed:
            err.print("some files were not downloaded (see above): run the same command again")
    if report.failed:
        raise typer.Exit(1)
