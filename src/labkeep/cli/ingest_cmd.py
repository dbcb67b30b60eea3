"""``labkeep ingest SOURCE PROJECT/DATASET``."""

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
)
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


@handle_errors
def ingest(
    source: Annotated[str, typer.Argument(help="Folder (or file) written by the instrument.")],
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET (created if missing).")],
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Parallel file workers.", show_default="one per core"),
    ] = None,
    link: Annotated[
        bool, typer.Option(help="Hard-link instead of copy (same filesystem).")
    ] = False,
    seal: Annotated[bool, typer.Option(help="Seal raw/ when the ingest had no errors.")] = False,
    delete_source: Annotated[
        bool, typer.Option(help="Delete each source file once its copy is verified.")
    ] = False,
    kind: Annotated[str, typer.Option(help="Kind of a new dataset.")] = "session",
    message: Annotated[str, typer.Option("--message", "-m", help="Version message.")] = "",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every file.")] = False,
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy SOURCE into PROJECT/DATASET/raw/, hashing every file (resumable)."""
    if background:
        import os

        if delete_source:
            from labkeep.errors import UsageError

            raise UsageError(
                "--delete-source is not run in the background",
                hint=("buffer copies are deleted by 'labkeep buffer clean' once safely kept"),
            )
        args = {"source": os.path.abspath(source), "dataset": address, "link": link,
                "seal": seal, "kind": kind, "message": message}  # fmt: skip
        if jobs:
            args["jobs"] = jobs
        queue_instead(root, "ingest", args, json_out)
        return
    with open_keep(root) as keep, progress_for("ingest", json_out) as bar:
        report = keep.ingest(
            source,
            address,
            jobs=jobs,
            link=link,
            seal=seal,
            delete_source=delete_source,
            kind=kind,
            message=message,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    if json_out:
        emit_json(report.summary())
    else:
        size = int(report.info.get("bytes", 0))
        version = report.info.get("version")
        tail = f" ({human_size(size)} ingested" + (f", version {version}" if version else "")
        repaired = report.info.get("repaired")
        tail += f"; {repaired} damaged or missing in the keep restored)" if repaired else ")"
        print_summary(f"ingest {report.info['dataset']}", report.counts(), tail)
        sealed = report.info.get("seal")
        if sealed:
            for warning in sealed.get("warnings", []):
                err.print(f"[yellow]warning:[/] {warning}")
            out.print(f"seal: {sealed.get('status')} {sealed.get('message', '')}".rstrip())
        if report.failed:
            err.print(
                "some files were not ingested (see above); fix them and run the same "
                "command again: what is already in is skipped"
            )
    if report.failed:
        raise typer.Exit(1)
