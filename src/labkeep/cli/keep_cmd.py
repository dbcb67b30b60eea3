"""``labkeep init``, ``status``, ``upgrade``, ``demo``."""

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
)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)
    app.command("upgrade")(upgrade)
    app.command("demo")(demo)


@handle_errors
def init(
    path: Annotated[str, typer.Argument(help="Folder for the new keep (created if missing).")],
    catalog: Annotated[
        str | None,
        typer.Option(
            help="Catalog URL (default: SQLite catalog.db in the keep).", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Folder of the primary tree (default: data/ in the keep).", show_default=False
        ),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            help="Name of the first site admin, the account you act as here "
            "(default: your OS user name).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a keep: labkeep.toml, the catalog and the data/ tree; you become its site admin."""
    from labkeep.catalog import safe_url
    from labkeep.keep import Keep

    with Keep.init(path, catalog_url=catalog, data_path=data, admin=admin) as keep:
        record = {
            "action": "init",
            "status": "ok",
            "root": str(keep.root),
            "catalog": safe_url(keep.config.catalog_url),
            "tree": str(keep.tree.base),
            "admin": keep.actor,
        }
    if json_out:
        emit_json(record)
        return
    out.print(f"created keep at {record['root']}")
    out.print(f"  catalog: {record['catalog']}\n  tree:    {record['tree']}")
    out.print(f"  admin:   {record['admin']} (site admin, the account you act as here)")
    err.print(
        f"next: cd {record['root']} && labkeep project create NAME && "
        "labkeep ingest SOURCE NAME/DATASET; add people with 'labkeep user add NAME'"
    )


@handle_errors
def status(
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also re-hash every dataset's MANIFEST.sha256 against its version and look "
            "for interrupted seals (reads the tree: slower on large keeps).",
        ),
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What the keep holds and what needs attention."""
    with open_keep(root) as keep:
        info = keep.status(deep=deep)
    if json_out:
        emit_json(info)
        return
    out.print(f"keep      {info['root']}")
    out.print(f"catalog   {info['catalog']} (schema {info['schema']})")
    out.print(f"tree      {info['tree']}")
    out.print(
        f"content   {info['projects']} projects, {info['datasets']} datasets "
        f"({info['sealed_datasets']} sealed), {info['files']} files, {human_size(info['bytes'])}"
    )
    out.print(f"verified  last run {info['last_verify'] or 'never'}")
    out.print(f"audit log {info['events']} events")
    jobs = info["jobs"]
    out.print(
        f"jobs      {jobs['queued']} queued, {jobs['running']} running, "
        f"{jobs['failed_last_day']} failed in the last day; {jobs['workers']} workers"
    )
    for line in info["attention"]:
        out.print(f"[yellow]attention[/] {line}")
    if not info["attention"]:
        out.print("[green]all well[/]")


@handle_errors
def upgrade(
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Do not copy the catalog first.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upgrade the catalog schema to this labkeep's version (after a backup of it)."""
    from labkeep.config import Config, find_root
    from labkeep.ops.upgrade import upgrade_catalog

    record = upgrade_catalog(Config.load(find_root(root)), backup=not no_backup)
    if json_out:
        emit_json(record)
    else:
        if "backup" in record:
            out.print(f"catalog backed up to {record['backup']}")
        out.print(f"catalog schema: {record['from']} -> {record['to']}")


@handle_errors
def demo(
    path: Annotated[str, typer.Argument(help="Where to create the demo keep.")] = "var/demo-keep",
    json_out: JsonOpt = False,
) -> None:
    """Create a keep with generated sample data: ingest, seal and verify it."""
    from labkeep.demo import run_demo

    summary = run_demo(path, log=None if json_out else err.print)
    if json_out:
        emit_json(summary)
    if summary["status"] != "ok":
        raise typer.Exit(1)
