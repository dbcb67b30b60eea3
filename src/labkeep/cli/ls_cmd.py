"""``labkeep ls`` and ``labkeep versions``."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    _escape,
    emit_json,
    handle_errors,
    human_size,
    open_keep_or_remote,
    out,
    table,
)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
    app.command("versions")(versions)


@handle_errors
def ls(
    address: Annotated[
        str | None,
        typer.Argument(help="PROJECT, PROJECT/DATASET[/PATH][@VERSION]; none: projects."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most this many files.")] = None,
    after: Annotated[str | None, typer.Option(help="Start after this path (next page).")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List projects, a project's datasets, or a dataset's files (at any version)."""
    with open_keep_or_remote(root) as keep:
        listing = keep.ls(address, limit=limit, after=after)
    if json_out:
        for item in listing.items:
            emit_json(item)
        return
    if listing.kind == "projects":
        grid = table("project", "title", "datasets")
        for p in listing.items:
            grid.add_row(p["project"], p["title"], str(p["datasets"]))
    elif listing.kind == "datasets":
        grid = table("dataset", "kind", "version", "sealed", "files", "size")
        for d in listing.items:
            sealed = "sealed" if d["sealed"] else ""
            grid.add_row(
                d["dataset"],
                d["kind"],
                str(d["version"]),
                sealed,
                str(d["files"]),
                human_size(d["bytes"]),
            )
    else:
        grid = table(
            "path",
            "size",
            "sha256",
            "verified",
            title=f"{listing.address} (version {listing.version})",
        )
        for e in listing.items:
            verified = e["verify_status"] or "never"
            if e["verified_at"]:
                verified += f" {e['verified_at']}"
            grid.add_row(_escape(e["path"]), human_size(e["size"]), e["sha256"][:16], verified)
    out.print(grid)


@handle_errors
def versions(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List a dataset's versions."""
    with open_keep_or_remote(root) as keep:
        rows = keep.versions(address)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("version", "kind", "when", "author", "files", "size", "message")
    for v in rows:
        grid.add_row(
            str(v["version"]),
            v["kind"],
            v["committed_at"],
            v["author"],
            str(v["files"]),
            human_size(v["bytes"]),
            v["message"],
        )
    out.print(grid)
