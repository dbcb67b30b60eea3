"""``labkeep publish P/D[@N] --to zenodo|invenio`` and ``labkeep publish --status P/D``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

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
    progress_for,
    shown,
    table,
)
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead

if TYPE_CHECKING:
    from labkeep.ops.deposit import DepositResult


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)


@handle_errors
def publish(
    address: Annotated[
        str, typer.Argument(help="PROJECT/DATASET[@N]: a sealed dataset (a release).")
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="The repository: zenodo, invenio, or a [publish.NAME] of labkeep.toml."
        ),
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Use the target's sandbox_url (test DOIs).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the metadata and the files that would be sent; send nothing."
        ),
    ] = False,
    status: Annotated[
        bool,
        typer.Option("--status", help="Show the dataset's deposits: draft, uploading, published."),
    ] = False,
    credentials: Annotated[
        str | None,
        typer.Option(
            "--credentials",
            help="INI file holding the token ([NAME] token = ...); default: "
            "$LABKEEP_<NAME>_TOKEN, then credentials_file in labkeep.toml.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every file sent.")] = False,
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deposit a dataset version in a repository (InvenioRDM, Zenodo) and publish it for a
    DOI. Resumable: after any failure, run the same command again."""
    from labkeep.errors import UsageError

    if status:
        _status(address, root, json_out)
        return
    if not to:
        raise UsageError("say where to publish: --to zenodo (or invenio, or a [publish.NAME])")
    if background:
        if dry_run:
            raise UsageError("--dry-run runs here, not in the background")
        args: dict[str, object] = {"dataset": address, "to": to, "sandbox": sandbox}
        if credentials:
            import os

            args["credentials"] = os.path.abspath(credentials)
        queue_instead(root, "publish", args, json_out)
        return
    with open_keep(root) as keep, progress_for("publish", json_out) as bar:
        result = keep.publish(
            address,
            to=to,
            sandbox=sandbox,
            dry_run=dry_run,
            credentials=credentials,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
        )
    if json_out:
        emit_json(result.to_dict())
        return
    if dry_run:
        _print_plan(result)
        return
    if result.packaged:
        err.print(f"[yellow]note:[/] {shown(result.message.split('; ')[0])}")
    out.print(
        f"published {shown(result.dataset)}@{result.version} in {result.target}"
        + (" (sandbox)" if result.sandbox else "")
        + f": {result.files_sent} file(s) sent, {result.files_skipped} already there"
    )
    if result.doi:
        out.print(f"DOI: {result.doi}  (https://doi.org/{result.doi})")
    if result.record_url:
        out.print(f"record: {result.record_url}")


def _print_plan(result: DepositResult) -> None:
    out.print("[bold]metadata[/] (what would be sent as the draft):")
    out.print(json.dumps(result.metadata, indent=2, ensure_ascii=False), markup=False)
    grid = table("key", "kind", "size", "files", title="files", paths=("key",))
    for f in result.files:
        grid.add_row(
            shown(str(f["key"])),
            str(f["kind"]),
            human_size(f.get("size")),
            str(f.get("files", 1)),
        )
    out.print(grid)
    if result.packaged:
        err.print(f"[yellow]note:[/] {shown(result.message)}")
    else:
        out.print(shown(result.message))


def _status(address: str, root: str | None, json_out: bool) -> None:
    with open_keep(root) as keep:
        deposits = keep.publish_status(address)
    if json_out:
        for d in deposits:
            emit_json(d.to_dict())
        return
    if not deposits:
        out.print(f"{shown(address)} has not been published")
        return
    grid = table("target", "version", "state", "record", "DOI", "error", paths=("record",))
    for d in deposits:
        grid.add_row(
            d.target + (" (sandbox)" if d.sandbox else ""),
            str(d.version),
            d.summary,
            shown(d.record_url or d.record_id or ""),
            d.doi or "",
            shown(d.last_error.splitlines()[0]) if d.last_error and d.state != "published" else "",
        )
    out.print(grid)
