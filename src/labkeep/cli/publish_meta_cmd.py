"""``labkeep meta edit``, ``labkeep meta datacite`` and ``labkeep release``: DataCite
metadata and immutable releases."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
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
    shown,
)
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead
from labkeep.cli.meta_cmd import meta_app


def register(app: typer.Typer) -> None:
    meta_app.command("edit")(edit)
    meta_app.command("datacite")(datacite)
    app.command("release")(release)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover (the publish extra brings it)
        from labkeep.errors import UsageError

        raise UsageError(
            "editing metadata needs PyYAML", hint="pip install 'labkeep[publish]'"
        ) from None
    return yaml


def _parse(text: str, where: str) -> Any:
    """A YAML (or JSON, which is YAML) document; a clear error when it is neither."""
    from labkeep.errors import UsageError

    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(
            f"{where} is not valid YAML{at}: {getattr(exc, 'problem', exc)}",
            hint="fix it and try again (a list item starts with '- ', a field with 'name: ')",
        ) from None


def _dump(form: dict[str, Any]) -> str:
    return str(_yaml().safe_dump(form, allow_unicode=True, sort_keys=False, width=88))


def _value(text: str) -> Any:
    """A --set value: YAML for lists and mappings (``[a, b]``, ``{name: X}``), else text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        return _parse(stripped, "the value")
    return text


@handle_errors
def edit(
    address: Annotated[str, typer.Argument(help="PROJECT or PROJECT/DATASET")],
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Take the fields from this YAML or JSON file."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="FIELD=VALUE, repeatable; lists as YAML: --set 'keywords=[cells, DAPI]'; "
            "an empty VALUE removes the field.",
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Replace the stored fields instead of merging into them.")
    ] = False,
    show: Annotated[bool, typer.Option(help="Print the stored fields and change nothing.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Edit DataCite metadata (creators with ORCID and ROR, licence, keywords, funding,
    related papers and data...): in $EDITOR, from a file, or field by field. A project's
    fields are the defaults of its datasets. Every field is checked, and the result
    against the DataCite schema; nothing is stored unless all of it passes."""
    from labkeep.ops.metadata import template

    with open_keep(root) as keep:
        if show:
            record = keep.get_metadata(address)
            if json_out:
                emit_json(record.to_dict())
            else:
                out.print(_dump(record.own) if record.own else template(), end="", markup=False)
            return
        changes: dict[str, Any] = {}
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep:
                from labkeep.errors import UsageError

                raise UsageError(
                    f"--set {item!r}: give FIELD=VALUE", hint="e.g. --set license=CC0-1.0"
                )
            changes[key.strip()] = _value(value) if value else None
        form: Any = None
        if file is not None:
            form = _parse(_read(file), str(file))
        elif not changes:
            form = _edit_interactively(keep.get_metadata(address).own)
            replace = True
            if form is None:
                out.print("No change.")
                return
        if form is not None and not isinstance(form, dict):
            from labkeep.errors import UsageError

            raise UsageError(
                "the metadata must be a mapping of fields (title: ..., creators: ...)",
                hint="see 'labkeep meta edit --show' for the fields",
            )
        record = keep.set_metadata(address, form, changes=changes, replace=replace)
    if json_out:
        emit_json({"action": "meta-edit", "status": "ok", **record.to_dict()})
    else:
        out.print(f"Saved the metadata of {shown(record.address)}.")


def _read(path: Path) -> str:
    from labkeep.errors import SourceError

    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path} is not UTF-8 text") from None


def _edit_interactively(current: dict[str, Any]) -> dict[str, Any] | None:
    """The form in $VISUAL/$EDITOR; None when the text was not changed."""
    from labkeep.errors import UsageError
    from labkeep.ops.metadata import template

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise UsageError(
            "no editor: set $EDITOR, or give the fields with --file or --set",
            hint="e.g. labkeep meta edit P/D --set license=CC-BY-4.0",
        )
    text = template() + ("\n" + _dump(current) if current else "")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        f.write(text)
        name = f.name
    try:
        subprocess.run([*shlex.split(editor), name], check=False)
        new = Path(name).read_text(encoding="utf-8")
    finally:
        os.unlink(name)
    if new == text:
        return None
    form = _parse(new, "the edited text")
    return form if form is not None else {}


@handle_errors
def datacite(
    address: Annotated[str, typer.Argument(help="PROJECT, PROJECT/DATASET or PROJECT/DATASET@N")],
    cite: Annotated[bool, typer.Option("--cite", help="Print the citation only.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the DataCite 4.5 JSON of a project or dataset (and how to cite it)."""
    from labkeep.ops.metadata import citation

    with open_keep(root) as keep:
        record = keep.get_metadata(address)
    text = citation(record.datacite)
    if json_out:
        emit_json({**record.to_dict(), "citation": text})
        return
    if cite:
        out.print(shown(text))
        return
    out.print(json.dumps(record.datacite, indent=2, ensure_ascii=False), markup=False)
    out.print(f"\nCite as: {shown(text)}")
    for problem in record.problems:
        err.print(f"[yellow]not yet valid DataCite:[/] {shown(problem)}")


@handle_errors
def release(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET@N (the head if no @N)")],
    name: Annotated[str, typer.Option("--name", "-n", help="The release dataset's name.")],
    message: Annotated[str, typer.Option("--message", "-m", help="Why this release.")] = "",
    title: Annotated[str, typer.Option(help="Its title (default: the source's).")] = "",
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make an immutable, sealed release dataset PROJECT/NAME from a version: its content
    checked file by file, its own landing page and metadata. Run it again to finish one
    that was cut short."""
    if background:
        args = {"source": address, "name": name, "message": message, "title": title}
        queue_instead(root, "release", args, json_out)
        return
    with open_keep(root) as keep:
        result = keep.release(address, name=name, message=message, title=title)
    if json_out:
        emit_json(result.to_dict())
    elif result.status == "ok":
        out.print(
            f"Released {shown(result.source)} as {shown(result.release)}: {result.files:,} "
            f"file{'s' if result.files != 1 else ''}, {human_size(result.bytes)}, sealed."
        )
        out.print(
            f"Describe it with 'labkeep meta edit {shown(result.release)}', then package or "
            "publish it."
        )
    elif result.status == "notneeded":
        out.print(shown(result.message))
    else:
        for problem in result.problems[:20]:
            where, what = shown(str(problem.get("path"))), shown(str(problem.get("message")))
            err.print(f"[red]error[/] {where}: {what}")
        err.print(shown(result.message))
    if result.status == "error":
        from labkeep.errors import EXIT_PROBLEMS

        raise typer.Exit(EXIT_PROBLEMS)
