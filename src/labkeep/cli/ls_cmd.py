"""``labkeep ls`` and ``labkeep versions``."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Any

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
    shown,
    table,
)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
    app.command("versions")(versions)
    app.command("diff")(diff)


#: files shown by a plain ``labkeep ls DATASET`` (--all or --limit for more; --json: all)
DEFAULT_LIMIT = 1000


@handle_errors
def ls(
    address: Annotated[
        str | None,
        typer.Argument(help="PROJECT, PROJECT/DATASET[/PATH][@VERSION]; none: projects."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help=f"Show at most this many files (default: {DEFAULT_LIMIT} in a table, "
            "all with --json).",
            show_default=False,
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every file.")] = False,
    after: Annotated[str | None, typer.Option(help="Start after this path (next page).")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List projects, a project's datasets, or a dataset's files (at any version).

    Files stream in path order: the first line comes at once, however many there are.
    """
    with open_keep_or_remote(root) as keep:
        if address and "/" in address:
            if show_all:
                limit = None
            elif limit is None and not json_out:
                limit = DEFAULT_LIMIT
            _print_entries(keep, address, limit, after, json_out)
            return
        listing = keep.ls(address)
    if json_out:
        for item in listing.items:
            emit_json(item)
        return
    if listing.kind == "projects":
        grid = table("project", "title", "datasets", paths=("project",))
        for p in listing.items:
            grid.add_row(p["project"], _escape(p["title"]), str(p["datasets"]))
    else:
        grid = table("dataset", "kind", "version", "sealed", "files", "size", paths=("dataset",))
        for d in listing.items:
            sealed = "sealed" if d["sealed"] else ""
            grid.add_row(
                d["dataset"],
                d["kind"],
                str(d["version"]),
                sealed,
                str(d["files"]),
                human_size(d["bytes"]),
            )
    out.print(grid)


def _print_entries(
    keep: Any, address: str, limit: int | None, after: str | None, json_out: bool
) -> None:
    """Stream a dataset's files: one line each (the path last and never cut), or JSON."""
    stream = keep.stream_entries(address, after=after)
    write = sys.stdout.write
    if not json_out:
        write(f"{shown(stream.address)} (version {stream.version})\n")
        write(f"{'size':>10}  {'sha256':16}  {'verified':25}  path\n")
    last = None
    for count, entry in enumerate(stream.entries):
        if limit is not None and count >= limit:
            hint = (
                f"{count} files shown, more follow: 'labkeep ls {address} "
                f"--after {shlex.quote(last or '')}' for the next page, --all for every file"
            )
            err.print(f"[dim]{_escape(hint)}[/]")
            break
        if json_out:
            emit_json(entry)
        else:
            verified = entry["verify_status"] or "never"
            if entry["verified_at"]:
                verified += f" {entry['verified_at'][:16]}"
            write(
                f"{human_size(entry['size']):>10}  {entry['sha256'][:16]}  {verified:25}  "
                f"{shown(entry['path'])}\n"
            )
        last = entry["path"]


@handle_errors
def versions(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List a dataset's versions."""
    with open_keep_or_remote(root) as keep:
        rows = keep.versions(address)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("version", "kind", "when", "author", "files", "size", "message")
    for v in rows:
        grid.add_row(
            str(v["version"]),
            v["kind"],
            v["committed_at"],
            v["author"],
            str(v["files"]),
            human_size(v["bytes"]),
            _escape(v["message"]),
        )
    out.print(grid)


@handle_errors
def diff(
    old: Annotated[str, typer.Argument(help="PROJECT/DATASET@N")],
    new: Annotated[
        str | None,
        typer.Argument(help="PROJECT/DATASET@M or @M; none: the newest version."),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What changed between two versions of a dataset: A added, D removed, M modified
    (streamed: the first lines come at once however large the dataset)."""
    counts = {"added": 0, "removed": 0, "modified": 0}
    with open_keep(root) as keep:
        found = keep.diff(old, new)
        for change in found.changes:
            counts[change.status] += 1
            if json_out:
                emit_json(change.to_dict())
            else:
                mark = {"added": "A", "removed": "D", "modified": "M"}[change.status]
                out.print(f"{mark} {shown(change.path)}", markup=False, highlight=False)
    if json_out:
        emit_json({"action": "diff", "dataset": found.dataset, "old": found.old,
                   "new": found.new, "summary": counts})  # fmt: skip
    else:
        err.print(
            f"{found.dataset} @{found.old} -> @{found.new}: {counts['added']} added, "
            f"{counts['removed']} removed, {counts['modified']} modified"
        )
