"""``labkeep serve``: the web server (UI + JSON API) on this keep."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from labkeep.cli._common import RootOpt, err, handle_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    create: Annotated[
        bool, typer.Option("--create", help="Create the keep at --root if there is none.")
    ] = False,
    root: RootOpt = None,
) -> None:
    """Serve the web UI and the JSON API (/api/v1) of the keep."""
    import uvicorn

    from labkeep.config import CONFIG_NAME, find_root
    from labkeep.keep import Keep

    if create and root and not os.path.exists(os.path.join(root, CONFIG_NAME)):
        Keep.init(root).close()
        err.print(f"created a new keep at {os.path.abspath(root)}")
    keep_root = find_root(root)
    with Keep.open(keep_root) as keep:
        password = keep.ensure_admin_password()
        web = keep.config.web
        admin = keep.actor
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    url = web.base_url or f"http://{shown_host}:{port}{web.root_path}"
    err.print(f"[bold]labkeep[/] serving {keep_root} at [bold]{url}/[/]")
    if password:
        err.print(
            f"sign in as [bold]{admin}[/] with password [bold]{password}[/] "
            "(shown once: change it on your account page, or with 'labkeep user passwd')"
        )
    else:
        err.print("sign in with your labkeep account (site admins: 'labkeep user add' for others)")
    os.environ["LABKEEP_ROOT"] = str(keep_root)
    uvicorn.run(
        "labkeep.web:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=web.forwarded_allow_ips,
        log_level="info",
    )
