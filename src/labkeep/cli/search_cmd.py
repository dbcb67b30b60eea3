"""``labkeep search 'mouse-42 objective:63x date:2026-03'`` and ``--reindex``."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, handle_errors, open_keep, out, table


def register(app: typer.Typer) -> None:
    app.command("search")(search)


@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="Words and key:value filters.")] = "",
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="project, dataset, file, sample, session, analysis, release")
    ] = None,
    instrument: Annotated[str | None, typer.Option(help="instrument:VALUE")] = None,
    date: Annotated[str | None, typer.Option(help="2026, 2026-03, 2026-03-01..2026-03-15")] = None,
    sealed: Annotated[
        bool | None, typer.Option("--sealed/--unsealed", help="Only (un)sealed datasets.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Results per page (at most 100).")] = 20,
    offset: Annotated[int, typer.Option(help="Skip this many (at most 1000).")] = 0,
    reindex: Annotated[
        bool, typer.Option("--reindex", help="Rebuild the index (site admins).")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find projects, datasets, files and samples you may see, best first."""
    with open_keep(root) as keep:
        if reindex:
            counts = keep.reindex_search()
            if json_out:
                emit_json(counts)
            else:
                out.print(
                    "search index rebuilt: "
                    + ", ".join(f"{v} {k}" for k, v in counts.items() if k != "documents")
                )
            return
        result = keep.search(
            query,
            project=project,
            kind=kind,
            instrument=instrument,
            date=date,
            sealed=sealed,
            limit=limit,
            offset=offset,
        ).to_dict()
    if json_out:
        emit_json(result)
        return
    t = table("kind", "address", "date", paths=("address",))
    for hit in result["items"]:
        t.add_row(hit["kind"], hit["address"], hit["date"] or "")
    out.print(t)
    total = f"{result['total']}{'+' if result['more'] else ''}"
    shown = len(result["items"])
    out.print(f"{shown} of {total} result{'s' if result['total'] != 1 else ''}")
    if result["next_offset"] is not None:
        out.print(f"next page: --offset {result['next_offset']}")
