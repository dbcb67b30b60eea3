"""``labkeep meta show`` and ``labkeep meta extract``: metadata read from files."""

from __future__ import annotations

from typing import Annotated, Any

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
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead
from labkeep.cli.meta_cmd import meta_app
from labkeep.extract.model import objective_text, quantity_text


def register(app: typer.Typer) -> None:
    del app  # the commands live in the 'meta' group
    meta_app.command("show")(show)
    meta_app.command("extract")(extract)


def _lines(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """The fields a person reads first, in order, then the rest."""
    rows: list[tuple[str, str]] = []
    if "format" in fields:
        rows.append(("format", str(fields["format"])))
    if fields.get("size_x"):
        sizes = " ".join(f"{a.upper()}={fields.get(f'size_{a}', 1)}" for a in "xyzct")
        rows.append(("size", sizes))
    if fields.get("pixel_type"):
        rows.append(("pixel type", str(fields["pixel_type"])))
    physical = [
        f"{a.upper()}={quantity_text(fields[f'physical_size_{a}'])}"
        for a in "xyz"
        if f"physical_size_{a}" in fields
    ]
    if physical:
        rows.append(("pixel size", " ".join(physical)))
    for ch in fields.get("channels") or []:
        waves = [
            f"{k[:2]} {quantity_text(ch[k])}"
            for k in ("excitation_wavelength", "emission_wavelength")
            if ch.get(k)
        ]
        rows.append(("channel", " ".join([str(ch.get("name") or "?"), *waves])))
    objective = fields.get("objective")
    if isinstance(objective, dict):
        rows.append(("objective", objective_text(objective)))
    for key, label in (("instrument", "instrument"), ("acquisition_date", "acquired")):
        if fields.get(key):
            rows.append((label, str(fields[key])))
    shown_keys = {"format", "pixel_type", "channels", "objective", "instrument"}
    shown_keys |= {"acquisition_date", "size"} | {f"size_{a}" for a in "xyzct"}
    shown_keys |= {f"physical_size_{a}" for a in "xyz"}
    for key, value in fields.items():
        if key not in shown_keys:
            rows.append((key.replace("_", " "), quantity_text(value)))
    return rows


@handle_errors
def show(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET/PATH[@VERSION]")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What labkeep read from a file: sizes (XYZCT), pixel type, physical sizes, channels,
    objective, instrument, acquisition date; or type, size and encoding."""
    with open_keep(root) as keep:
        record = keep.file_metadata(address)
    if json_out:
        emit_json(record.to_dict())
        return
    out.print(f"[bold]{shown(record.dataset)}/{shown(record.path)}[/] @ {record.version}  "
              f"{human_size(record.size)}", markup=True)  # fmt: skip
    if record.status == "pending":
        out.print("not read yet: the extraction job queued after ingest has not run")
        err.print(f"run it now with 'labkeep meta extract {record.dataset}'")
        return
    width = max((len(k) for k, _ in _lines(record.fields)), default=0)
    for key, value in _lines(record.fields):
        out.print(f"  {key:<{width}}  {shown(value)}", markup=False)
    if record.status == "error":
        out.print(f"[bold red]reader error[/] ({record.extractor}): {shown(record.error)}")
    else:
        out.print(f"[dim]read by {record.extractor} {record.extractor_version}[/]")


@handle_errors
def extract(
    target: Annotated[str, typer.Argument(help="PROJECT/DATASET[/PATH][@VERSION]")],
    force: Annotated[
        bool, typer.Option("--force", help="Read again files that have a record.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List OK files too.")] = False,
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Read the metadata (and make previews) of a dataset's files now, instead of waiting
    for the job queued after ingest. Exit 1 when a file could not be read."""
    if background:
        queue_instead(root, "extract", {"dataset": target, "force": force}, json_out)
        return
    with open_keep(root) as keep, progress_for("extract", json_out) as bar:
        report = keep.extract(
            target,
            force=force,
            progress=bar,
            keep_results=False,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
        )
    if not json_out:
        print_summary("extract", report.counts())
    if report.failed:
        raise typer.Exit(1)
