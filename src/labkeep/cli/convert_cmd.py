"""``labkeep convert P/D --to ome-zarr [-o P/DERIVED]``: a derived dataset, with provenance."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, err, handle_errors, open_keep, out
from labkeep.cli.jobs_cmd import queue_instead


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


@handle_errors
def convert(
    target: Annotated[str, typer.Argument(help="PROJECT/DATASET[/PATH][@VERSION] to convert")],
    to: Annotated[str, typer.Option("--to", help="The format: ome-zarr.")] = "ome-zarr",
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="The analysis dataset to save into (default: P/D.ome-zarr)."
        ),
    ] = None,
    now: Annotated[
        bool, typer.Option("--now", help="Convert in this process instead of queueing a job.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a dataset's images (TIFF/OME-TIFF, CZI, ND2, LIF) to OME-Zarr as a recorded
    run: the derived dataset's new version points to the run, which pins the input
    version. Queued as a job unless --now."""
    if not now:
        args = {"dataset": target, "to": to}
        if output:
            args["output"] = output
        queue_instead(root, "convert", args, json_out)
        return
    with open_keep(root) as keep:
        record = keep.convert(target, to=to, output=output)
    if json_out:
        emit_json(record)
        return
    where = f"{record['output_dataset']} version {record['version']}"
    out.print(f"run {record['id']} {record['state']}: {where}")
    err.print(f"how it was made: 'labkeep runs show {record['id']}'")
