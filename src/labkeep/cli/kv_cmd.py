"""``labkeep meta set/unset/get`` (key-values) and ``labkeep meta schema set/show``.

Registered on the ``meta`` group of :mod:`labkeep.cli.meta_cmd`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, handle_errors, open_keep, out
from labkeep.cli.meta_cmd import meta_app
from labkeep.errors import UsageError

schema_app = typer.Typer(
    name="schema",
    help="The JSON Schema a project's datasets' key-values must pass.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    meta_app.command("set")(set_values)
    meta_app.command("unset")(unset_values)
    meta_app.command("get")(get_values)
    schema_app.command("set")(schema_set)
    schema_app.command("show")(schema_show)
    meta_app.add_typer(schema_app, name="schema")


def _print(record: dict[str, object]) -> None:
    values = record["values"]
    assert isinstance(values, dict)
    if not values:
        out.print(f"{record['target']}: no key-values", markup=False)
    for key, value in values.items():
        out.print(f"{key}={value}", markup=False, highlight=False)
    if record.get("samples"):
        out.print(f"samples: {', '.join(record['samples'])}", markup=False)  # type: ignore[arg-type]


@handle_errors
def set_values(
    address: Annotated[str, typer.Argument(help="PROJECT, PROJECT/DATASET or P/D/PATH")],
    pairs: Annotated[list[str], typer.Argument(help="KEY=VALUE ...")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set key-values (all or none: checked against the project's schema)."""
    from labkeep.ops.keyvalues import parse_pairs

    with open_keep(root) as keep:
        record = keep.set_values(address, parse_pairs(pairs)).to_dict()
    if json_out:
        emit_json(record)
        return
    _print(record)


@handle_errors
def unset_values(
    address: Annotated[str, typer.Argument(help="PROJECT, PROJECT/DATASET or P/D/PATH")],
    keys: Annotated[list[str], typer.Argument(help="KEY ...")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove key-values."""
    with open_keep(root) as keep:
        record = keep.unset_values(address, keys).to_dict()
    if json_out:
        emit_json(record)
        return
    _print(record)


@handle_errors
def get_values(
    address: Annotated[str, typer.Argument(help="PROJECT, PROJECT/DATASET or P/D/PATH")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the key-values (and a dataset's samples)."""
    with open_keep(root) as keep:
        record = keep.get_values(address).to_dict()
    if json_out:
        emit_json(record)
        return
    _print(record)


@handle_errors
def schema_set(
    project: Annotated[str, typer.Argument(help="PROJECT")],
    schema_file: Annotated[
        Path | None, typer.Argument(help="A JSON Schema file (omit with --remove).")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the schema.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Require the key-values of the project's datasets to pass a JSON Schema."""
    if (schema_file is None) != remove:
        raise UsageError("give a schema file, or --remove")
    schema = None
    if schema_file is not None:
        try:
            schema = json.loads(schema_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read {schema_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"{schema_file} is not JSON: {exc}") from None
    with open_keep(root) as keep:
        record = keep.set_kv_schema(project, schema)
    if json_out:
        emit_json(record)
        return
    out.print(f"{'removed the' if remove else 'set the'} key-value schema of {project}")
    for failing in record["failing"]:
        out.print(
            f"  {failing['dataset']} does not pass it yet: {'; '.join(failing['problems'])}",
            markup=False,
        )


@handle_errors
def schema_show(
    project: Annotated[str, typer.Argument(help="PROJECT")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the project's key-value schema."""
    with open_keep(root) as keep:
        schema = keep.get_kv_schema(project)
    if json_out:
        emit_json({"project": project, "schema": schema})
        return
    if schema is None:
        out.print(f"{project} has no key-value schema")
    else:
        out.print(json.dumps(schema, indent=2), markup=False, highlight=False)
