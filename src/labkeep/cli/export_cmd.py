"""``labkeep export P/D[@N] --format bagit|bia --to DIR [--zip]``: packages of a version."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    human_size,
    open_keep,
    out,
    print_result,
    print_summary,
    progress_for,
    shown,
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


@handle_errors
def export(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET[@VERSION] (the head if none).")],
    to: Annotated[str, typer.Option("--to", help="Folder to write the package into.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="bagit (BagIt + RO-Crate) or bia.")
    ] = "bagit",
    zip: Annotated[
        bool, typer.Option("--zip", help="One zip (stored, ZIP64) of the bag instead of a folder.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read and check every byte, even where the catalog's digests suffice."
        ),
    ] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Parallel copies.", show_default="up to 4")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every file.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a package of a dataset version: a BagIt bag with an RO-Crate inside, or a
    BioImage Archive submission package. Run it again to finish one that was cut short."""
    with open_keep(root) as keep, progress_for(f"export {format}", json_out) as bar:
        report = keep.export_package(
            address,
            to,
            format=format,
            zip=zip,
            verify=verify,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
        )
    info = report.info
    if json_out:
        emit_json(report.summary())
    else:
        if info.get("status") == "notneeded":
            out.print(f"already done: {shown(info['package'])}")
        else:
            tail = f" ({info['files']} files, {human_size(int(info['bytes']))}"
            tail += f"; {human_size(int(info['bytes_read']))} read to hash)"
            print_summary(f"export {info['source']} as {format}", report.counts(), tail)
            if info.get("finished"):
                out.print(f"package: {shown(info['package'])}")
            else:
                err.print(
                    (info.get("message") or "the package was not finished")
                    + "; fix what is listed above and run the same command again"
                )
    if not info.get("finished"):
        raise typer.Exit(1)
