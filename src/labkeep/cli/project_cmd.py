"""``labkeep project ...`` and ``labkeep dataset ...``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    open_keep,
    out,
    table,
)

project_app = typer.Typer(help="Create and list projects.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="Create datasets (ingest creates session datasets itself).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(project_app, name="project")
    app.add_typer(dataset_app, name="dataset")


@project_app.command("create")
@handle_errors
def project_create(
    name: Annotated[str, typer.Argument(help="Slug, e.g. imaging-2026.")],
    title: Annotated[str, typer.Option(help="Human title.")] = "",
    description: Annotated[str, typer.Option(help="What the project is about.")] = "",
    group: Annotated[
        str | None,
        typer.Option(
            help="The group (lab) that owns it: its members may write, its admins manage "
            "(members may create projects in their groups; without a group: site admins only).",
            show_default=False,
        ),
    ] = None,
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="Group members get no access by default: only explicit grants count "
            "(you get manage).",
        ),
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a project."""
    with open_keep(root) as keep:
        info = keep.create_project(
            name, title=title, description=description, group=group, private=private
        )
    if json_out:
        emit_json({"action": "project-create", "status": "ok", **info.to_dict()})
        return
    where = f" in group {info.group}" if info.group else ""
    out.print(f"created {'private ' if info.private else ''}project {info.name}{where}")
    if info.private:
        err.print(f"next: give people access with 'labkeep grant USER read {info.name}'")


@project_app.command("list")
@handle_errors
def project_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """List projects."""
    with open_keep(root) as keep:
        projects = keep.list_projects()
    if json_out:
        for p in projects:
            emit_json(p.to_dict())
        return
    grid = table("project", "title", "group", "datasets", "created")
    for p in projects:
        group = (p.group or "") + (" (private)" if p.private else "")
        grid.add_row(p.name, escape(p.title), group, str(p.datasets), p.to_dict()["created_at"])
    out.print(grid)


@dataset_app.command("create")
@handle_errors
def dataset_create(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    kind: Annotated[str, typer.Option(help="session, analysis or release.")] = "session",
    title: Annotated[str, typer.Option(help="Human title.")] = "",
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an empty dataset."""
    with open_keep(root) as keep:
        info = keep.create_dataset(address, kind=kind, title=title)
    if json_out:
        emit_json({"action": "dataset-create", "status": "ok", **info.to_dict()})
    else:
        out.print(f"created {info.kind} dataset {info.address}")
