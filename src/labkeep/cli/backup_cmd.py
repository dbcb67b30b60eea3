"""``labkeep backup`` (and ``backup list``, ``backup drill``) and ``restore-catalog``."""

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
    table,
)

backup_app = typer.Typer(
    help="Back up the catalog to a store (rotated daily/weekly/monthly); list and drill backups.",
    invoke_without_command=True,
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        "--store",
        help="A store name (or an objects folder path); default: [backup] store.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("restore-catalog")(restore_catalog)


@backup_app.callback()
@handle_errors
def backup(
    ctx: typer.Context,
    to: StoreOpt = None,
    no_rotate: Annotated[
        bool, typer.Option("--no-rotate", help="Keep every older backup this time.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Back up the catalog now (SQLite: online backup; PostgreSQL: pg_dump -Fc), checksummed,
    to the backup store; then remove backups the rotation no longer keeps."""
    if ctx.invoked_subcommand is not None:
        return
    with open_keep(root) as keep:
        result = keep.backup(to=to, rotate=not no_rotate)
    if json_out:
        emit_json(result)
        return
    out.print(
        f"backup {result['id']}: {human_size(result['size'])} to store {result['store']!r} "
        f"(sha256 {result['sha256']})"
    )
    if result["rotated_out"]:
        out.print(f"rotated out: {', '.join(result['rotated_out'])}")
    if result["retention_locked"]:
        out.print(f"kept (under retention): {', '.join(result['retention_locked'])}")


@backup_app.command("list")
@handle_errors
def backup_list(
    store: StoreOpt = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The keep's backups in the backup store, newest first."""
    with open_keep(root) as keep:
        backups = keep.list_backups(store=store)
    if json_out:
        for info in backups:
            emit_json(info.to_dict())
        return
    grid = table("ID", "Taken", "Engine", "Schema", "Size", "SHA-256", paths=("ID",))
    for info in backups:
        grid.add_row(
            info.id, info.created_at, info.engine, info.schema or "", human_size(info.size),
            info.sha256[:16],
        )  # fmt: skip
    out.print(grid)
    if not backups:
        err.print("no backups yet: take one with 'labkeep backup'")


@backup_app.command("drill")
@handle_errors
def backup_drill(
    store: StoreOpt = None,
    sample: Annotated[
        int | None, typer.Option(help="Files to re-hash (default: [backup] drill_sample).")
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore the newest backup into a scratch catalog and check it (schema, event
    chain, entries against the tree's manifests, a sample of files re-hashed); the result
    is recorded as an event. Exit 1 when a check fails."""
    with open_keep(root) as keep:
        report = keep.drill_backup(store=store, sample=sample)
    if json_out:
        emit_json(report.to_dict())
    else:
        for item in report.checks:
            style = "green" if item["status"] == "ok" else "red"
            out.print(
                f"[{style}]{item['status'].upper():6}[/] {item['check']:10} {item['message']}"
            )
        for item in report.changed_since:
            out.print(
                f"changed since the backup: {item['dataset']} (version "
                f"{item['backup_version']} then, {item['live_version']} now)"
            )
        verdict = "passed" if report.ok else "FAILED"
        out.print(f"drill of backup {report.backup}: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


@handle_errors
def restore_catalog(
    backup_id: Annotated[str, typer.Argument(help="A backup id, or 'latest'.")],
    into: Annotated[
        str,
        typer.Option(
            "--into",
            help="An empty catalog: sqlite:///PATH (a new file) or a PostgreSQL URL of an "
            "empty database.",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="The backup store's name or an objects folder (default: [backup])."
        ),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Disaster recovery: restore a catalog backup into an empty database. Works when the
    keep's catalog is gone (the backups are found through --from, [backup] or the note
    the last backup left in the tree)."""
    from labkeep.config import Config, find_root
    from labkeep.ops.backup import restore_catalog as restore

    config = Config.load(find_root(root))
    result = restore(config, backup_id, into, source=source)
    if json_out:
        emit_json(result)
        return
    out.print(f"restored backup {result['backup']} ({result['created_at']}) into {result['into']}")
    out.print("next:")
    for step in result["next"]:
        out.print(f"  {step}", markup=False)
