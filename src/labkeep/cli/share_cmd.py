"""``labkeep share ...``: secret links that open a project, dataset, version or file
read-only to anyone holding them.

``share create`` prints the link (or, with no base URL known, the token) on stdout and
nothing else, so ``LINK=$(labkeep share create ...)`` works; details go to stderr. The
token is shown this once: the keep stores only its hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    _escape,
    emit_json,
    err,
    handle_errors,
    open_keep_or_remote,
    out,
    table,
)

if TYPE_CHECKING:
    from labkeep.ops.shares import ShareInfo

share_app = typer.Typer(
    help="Share links: read-only access for anyone holding the link.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(share_app, name="share")


def share_url(base_url: str | None, token: str) -> str | None:
    """Where the web server serves a share link: ``<base>/s/<token>``."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/s/{token}"


def _state(info: ShareInfo) -> str:
    return str(info.to_dict()["state"])


@share_app.command("create")
@handle_errors
def share_create(
    address: Annotated[
        str,
        typer.Argument(
            help="What to share: PROJECT[/DATASET[/PATH]][@VERSION]",
            metavar="PROJECT[/DATASET[/PATH]][@VERSION]",
        ),
    ],
    expires: Annotated[str, typer.Option(help="Lifetime: 30m, 12h, 7d, 2w (at most 365d).")] = "7d",
    max_downloads: Annotated[
        int | None,
        typer.Option(help="Stop working after this many downloads.", show_default=False),
    ] = None,
    label: Annotated[str, typer.Option(help="A note for yourself: who it is for.")] = "",
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="LABKEEP_URL",
            help="The labkeep web server's public address, e.g. https://keep.example.org "
            "(default: $LABKEEP_URL).",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a share link and print it (shown once: only its hash is stored)."""
    with open_keep_or_remote(root) as keep:
        token, info = keep.create_share(
            address, expires=expires, max_downloads=max_downloads, label=label
        )
        # a server knows its own address; a local keep may have [web] base_url
        from labkeep.keep import Keep

        served = info.to_dict().get("url")
        local_base = keep.config.web.base_url if isinstance(keep, Keep) else None
        url = served or share_url(base_url or local_base, token)
    if json_out:
        record = {"action": "share-create", "status": "ok", **info.to_dict()}
        emit_json({**record, "token": token, "url": url})
        return
    out.print(url or token, markup=False)
    limit = f", at most {info.max_downloads} downloads" if info.max_downloads else ""
    until = info.to_dict()["expires_at"]
    err.print(
        f"share link {info.id} opens {escape(info.target)} read-only until {until}{limit}. "
        f"It cannot be shown again; revoke it with 'labkeep share revoke {info.id}'."
    )
    if url is None:
        err.print(
            "hint: this is the link's token; the labkeep web server serves it at /s/TOKEN. "
            "Set [web] base_url in labkeep.toml, pass --base-url or set LABKEEP_URL to print "
            "the full link."
        )


@share_app.command("list")
@handle_errors
def share_list(
    target: Annotated[
        str | None,
        typer.Argument(
            help="All links on this PROJECT[/DATASET] (for those who manage it); "
            "default: your own links.",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List share links (never their tokens: those were shown once)."""
    with open_keep_or_remote(root) as keep:
        links = keep.list_shares(target)
    if json_out:
        for link in links:
            emit_json(link.to_dict())
        return
    grid = table("id", "shares", "label", "by", "expires", "downloads", "state", paths=("shares",))
    for link in links:
        record = link.to_dict()
        limit = f"/{link.max_downloads}" if link.max_downloads is not None else ""
        grid.add_row(
            str(link.id),
            _escape(link.target),
            _escape(link.label),
            link.created_by,
            record["expires_at"],
            f"{link.downloads}{limit}",
            _state(link),
        )
    out.print(grid)
    if not links:
        err.print("no share links: create one with 'labkeep share create PROJECT/DATASET'")


@share_app.command("revoke")
@handle_errors
def share_revoke(
    link_id: Annotated[int, typer.Argument(help="The link's id (see 'labkeep share list').")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a share link: it stops working at once."""
    with open_keep_or_remote(root) as keep:
        info = keep.revoke_share(link_id)
    if json_out:
        emit_json({"action": "share-revoke", "status": "ok", **info.to_dict()})
    else:
        out.print(f"revoked share link {info.id} ({escape(info.target)})")
