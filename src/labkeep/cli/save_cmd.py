"""``labkeep save``, ``labkeep log`` and ``labkeep restore``: versions of a working tree."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    _escape,
    emit_json,
    err,
    handle_errors,
    human_size,
    open_keep,
    open_keep_or_remote,
    out,
    print_result,
    progress_for,
    shown,
    table,
)

MARKS = {"added": "A", "modified": "M", "removed": "D", "restored": "R"}


def register(app: typer.Typer) -> None:
    app.command("save")(save)
    app.command("log")(log)
    app.command("restore")(restore)


@handle_errors
def save(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET[/PATH]")],
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Only these files or folders of the dataset (default: all).", show_default=False
        ),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed, and why.")] = "",
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Files read in parallel.", show_default="auto"),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait while another save or ingest holds the dataset.")
    ] = 60.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every change.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record the dataset's working tree as a new version: only what changed is read
    (by size and mtime), and the old content stays retrievable."""
    with open_keep(root) as keep, progress_for("save", json_out) as bar:

        def show(result: object) -> None:
            from labkeep.results import Result

            assert isinstance(result, Result)
            if not json_out and result.status == "ok" and verbose:
                mark = MARKS.get(str(result.extra.get("change")), "?")
                out.print(f"{mark} {shown(result.path or '')}", markup=False, highlight=False)
            else:
                print_result(result, json_out=json_out, show_ok=False)

        report = keep.save(
            address,
            message=message,
            paths=paths or (),
            jobs=jobs,
            wait=wait,
            progress=bar,
            on_result=show,
            keep_results=False,
        )
    info = report.info
    if json_out:
        emit_json(report.summary())
    elif info.get("version") is None:
        out.print(
            f"{info['dataset']}: nothing to save ({info.get('unchanged', 0)} files unchanged)"
        )
    else:
        out.print(
            f"{info['dataset']}@{info['version']}: {info['added']} added, "
            f"{info['modified']} modified, {info['removed']} removed "
            f"({info.get('unchanged', 0)} unchanged)"
        )
    if report.failed:
        err.print("some files were not saved (see above); fix them and save again")
        raise typer.Exit(1)


@handle_errors
def log(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A dataset's versions, newest first: who, when, what, and the run that made it."""
    with open_keep_or_remote(root) as keep:
        rows = list(reversed(keep.versions(address)))
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("version", "kind", "when", "author", "files", "size", "run", "message")
    for v in rows:
        grid.add_row(
            str(v["version"]),
            v["kind"],
            v["committed_at"],
            v["author"],
            str(v["files"]),
            human_size(v["bytes"]),
            str(v.get("run") or ""),
            _escape(v["message"]),
        )
    out.print(grid)


@handle_errors
def restore(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET@N[/PATH]")],
    path: Annotated[str | None, typer.Argument(help="Only this file or folder.")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Version message.")] = "",
    force: Annotated[
        bool,
        typer.Option(help="Replace changes that were not saved (they are saved first)."),
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Put an old version's content back into the working tree, as a new version."""
    if path:  # P/D@N PATH is the address P/D/PATH@N
        base, at, number = address.rpartition("@")
        if at and number.isdigit():
            address = f"{base.rstrip('/')}/{path.strip('/')}@{number}"
        else:
            address = f"{address.rstrip('/')}/{path.strip('/')}"
    with open_keep(root) as keep:
        report = keep.restore(
            address,
            message=message,
            force=force,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=False),
        )
    info = report.info
    if json_out:
        emit_json(report.summary())
    elif info.get("version"):
        out.print(
            f"{info['dataset']}@{info['version']}: restored from @{info['from_version']} "
            f"({info['added']} added, {info['modified']} modified, {info['removed']} removed)"
        )
    elif not report.failed:
        out.print(f"{info['dataset']}: already as @{info['from_version']}; nothing to restore")
    if report.failed:
        err.print("some files could not be restored (see above); no version was made")
        raise typer.Exit(1)
