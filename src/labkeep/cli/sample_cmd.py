"""``labkeep sample add/list/show/edit/link/unlink``: the samples/subjects registry."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, handle_errors, open_keep, out, table

sample_app = typer.Typer(
    name="sample",
    help="Samples and subjects (mice, tissue blocks, patients) that datasets come from.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

AttrOpt = Annotated[list[str] | None, typer.Option("--attr", help="KEY=VALUE (repeat for more).")]


def register(app: typer.Typer) -> None:
    app.add_typer(sample_app, name="sample")


def _show(record: dict[str, object]) -> None:
    out.print(f"{record['sample']} ({record['type'] or 'no type'})", markup=False)
    attrs = record["attrs"]
    assert isinstance(attrs, dict)
    for key, value in attrs.items():
        out.print(f"  {key}={value}", markup=False, highlight=False)
    if record.get("description"):
        out.print(f"  {record['description']}", markup=False)
    datasets = record["datasets"]
    assert isinstance(datasets, list)
    out.print(f"  datasets: {', '.join(datasets) or 'none'}", markup=False)


@sample_app.command("add")
@handle_errors
def add(
    name: Annotated[str, typer.Argument(help="Sample id, e.g. mouse-42")],
    type_: Annotated[str, typer.Option("--type", help="mouse, tissue, patient ...")] = "",
    attr: AttrOpt = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    group: Annotated[str | None, typer.Option(help="Owning group (default: yours).")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a sample."""
    from labkeep.ops.keyvalues import parse_pairs

    with open_keep(root) as keep:
        record = keep.add_sample(
            name, type=type_, attrs=parse_pairs(attr or []), description=description, group=group
        ).to_dict()
    if json_out:
        emit_json(record)
        return
    out.print(f"registered sample {name}", markup=False)


@sample_app.command("edit")
@handle_errors
def edit(
    name: Annotated[str, typer.Argument(help="Sample id")],
    type_: Annotated[str | None, typer.Option("--type")] = None,
    attr: AttrOpt = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Attribute to remove.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a sample's type, attributes or description."""
    from labkeep.ops.keyvalues import parse_pairs

    with open_keep(root) as keep:
        record = keep.update_sample(
            name,
            type=type_,
            attrs=parse_pairs(attr or []),
            unset=unset or [],
            description=description,
        ).to_dict()
    if json_out:
        emit_json(record)
        return
    _show(record)


@sample_app.command("list")
@handle_errors
def list_(
    type_: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The samples you may see."""
    with open_keep(root) as keep:
        records = [s.to_dict() for s in keep.list_samples(type=type_)]
    if json_out:
        emit_json(records)
        return
    t = table("sample", "type", "attributes", "datasets")
    for r in records:
        attrs = ", ".join(f"{k}={v}" for k, v in r["attrs"].items())
        t.add_row(r["sample"], r["type"], attrs, str(len(r["datasets"])))
    out.print(t)


@sample_app.command("show")
@handle_errors
def show(
    name: Annotated[str, typer.Argument(help="Sample id")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A sample and the datasets (that you may see) acquired from it."""
    with open_keep(root) as keep:
        record = keep.get_sample(name).to_dict()
    if json_out:
        emit_json(record)
        return
    _show(record)


@sample_app.command("link")
@handle_errors
def link(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    name: Annotated[str, typer.Argument(help="Sample id")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record that a dataset was acquired from a sample."""
    with open_keep(root) as keep:
        record = keep.link_sample(address, name).to_dict()
    if json_out:
        emit_json(record)
        return
    out.print(f"linked {address} to sample {name}", markup=False)


@sample_app.command("unlink")
@handle_errors
def unlink(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    name: Annotated[str, typer.Argument(help="Sample id")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a dataset's link to a sample."""
    with open_keep(root) as keep:
        record = keep.unlink_sample(address, name).to_dict()
    if json_out:
        emit_json(record)
        return
    out.print(f"unlinked {address} from sample {name}", markup=False)
