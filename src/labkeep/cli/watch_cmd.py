"""``labkeep watch`` (watched instrument buffers) and ``labkeep buffer`` (their retention)."""

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
    print_summary,
    shown,
    table,
)

watch_app = typer.Typer(
    help="Watched instrument buffers: finished acquisitions are imported by jobs.",
    no_args_is_help=True,
)
buffer_app = typer.Typer(
    help="What a watched buffer holds, and deleting what is safely kept.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(watch_app, name="watch")
    app.add_typer(buffer_app, name="buffer")


WatchArg = Annotated[str, typer.Argument(help="The watch's name (or its buffer folder).")]


@watch_app.command("add")
@handle_errors
def watch_add(
    path: Annotated[str, typer.Argument(help="The buffer folder the instrument writes to.")],
    name: Annotated[
        str | None, typer.Option(help="The watch's name ({instrument}).", show_default="folder")
    ] = None,
    project_template: Annotated[
        str,
        typer.Option(
            help="Project name; placeholders {folder} {parent} {user} {year} "
            "{month} {day} {instrument}."
        ),
    ] = "{instrument}-{year}",
    dataset_template: Annotated[str, typer.Option(help="Dataset name (same placeholders).")] = (
        "{folder}"
    ),
    owner_from: Annotated[
        str, typer.Option(help="folder-owner, folder-name, map or user:NAME.")
    ] = "folder-owner",
    owner_map: Annotated[
        list[str] | None,
        typer.Option(
            help="ACCOUNT=USER: an instrument account (or user folder) -> a person; "
            "repeatable; a fallback for the other rules."
        ),
    ] = None,
    ready: Annotated[
        str, typer.Option(help="When an acquisition is finished: marker:FILE or quiet:DURATION.")
    ] = "quiet:10m",
    link: Annotated[
        bool, typer.Option("--link/--copy", help="Hard-link into the keep (same filesystem).")
    ] = False,
    seal: Annotated[bool, typer.Option(help="Seal each imported dataset.")] = False,
    mode: Annotated[str, typer.Option(help="inotify, or poll (SMB/NFS mounts).")] = "inotify",
    poll_seconds: Annotated[int, typer.Option(help="Rescan every N seconds.")] = 60,
    depth: Annotated[
        int | None,
        typer.Option(
            help="Levels below the buffer of an acquisition folder.",
            show_default="1; 2 with folder-name",
        ),
    ] = None,
    retention: Annotated[
        str | None, typer.Option(help="Buffer copies may go this long after import (60d).")
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Watch a buffer folder (site admins)."""
    with open_keep(root) as keep:
        info = keep.add_watch(
            path,
            name=name,
            project_template=project_template,
            dataset_template=dataset_template,
            owner_from=owner_from,
            owner_map=list(owner_map or []),
            ready=ready,
            link=link,
            seal=seal,
            mode=mode,
            poll_seconds=poll_seconds,
            depth=depth,
            retention=retention,
        )
    if json_out:
        emit_json({"action": "watch-add", "status": "ok", **info.to_dict()})
        return
    out.print(f"watching {shown(info.path)} as {shown(info.name)} ({info.ready}, {info.mode})")
    err.print("next: labkeep watch run (or labkeep worker --watch), and labkeep worker")


def _print_watch(info: Any) -> None:
    for key in ("name", "path", "project_template", "dataset_template", "owner_from",
                "ready", "mode", "poll_seconds", "depth", "link", "seal", "retention_days",
                "created_by"):  # fmt: skip
        out.print(f"{key:18} {shown(str(getattr(info, key)))}")
    if info.owner_map:
        out.print(f"{'owner_map':18} " + ", ".join(f"{k}={v}" for k, v in info.owner_map.items()))
    if info.projects:
        out.print(f"{'projects':18} " + ", ".join(info.projects))
    out.print(
        f"{'folders':18} " + (", ".join(f"{k} {v}" for k, v in info.folders.items()) or "none")
    )


@watch_app.command("list")
@handle_errors
def watch_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """The watched buffers, with how many folders are in each state."""
    with open_keep(root) as keep:
        infos = keep.list_watches()
    if json_out:
        for info in infos:
            emit_json(info.to_dict())
        return
    grid = table("WATCH", "PATH", "READY", "MODE", "FOLDERS", paths=("WATCH", "PATH"))
    for info in infos:
        folders = ", ".join(f"{k} {v}" for k, v in sorted(info.folders.items()))
        grid.add_row(shown(info.name), shown(info.path), info.ready, info.mode, folders)
    out.print(grid)


@watch_app.command("show")
@handle_errors
def watch_show(name: WatchArg, root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """One watch's settings and its folders' states."""
    with open_keep(root) as keep:
        info = keep.get_watch(name)
    if json_out:
        emit_json(info.to_dict())
        return
    _print_watch(info)


@watch_app.command("remove")
@handle_errors
def watch_remove(name: WatchArg, root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Stop watching a buffer (its datasets and files stay)."""
    with open_keep(root) as keep:
        info = keep.remove_watch(name)
    if json_out:
        emit_json({"action": "watch-remove", "status": "ok", "name": info.name})
        return
    out.print(f"no longer watching {shown(info.path)} ({shown(info.name)})")


@watch_app.command("show-to")
@handle_errors
def watch_show_to(
    name: WatchArg,
    groups: Annotated[list[str], typer.Argument(help="Groups whose members may see it.")],
    hide: Annotated[
        bool, typer.Option("--hide", help="Hide the buffer from these groups instead.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a buffer to groups: their members browse its folders on the web (/buffers)
    and import one into a dataset they may write ("import this folder")."""
    with open_keep(root) as keep:
        info = keep.show_buffer_to(name, groups, show=not hide)
    if json_out:
        emit_json(info.to_dict())
        return
    shown_to = ", ".join(info.groups) or "site admins only"
    out.print(f"buffer {shown(info.name)} is shown to: {shown_to}")


def _print_changes(changes: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        for change in changes:
            emit_json({"action": "watch-scan", "status": "ok", **change})
        return
    for c in changes:
        extra = f" -> job {c['job']} {c.get('dataset')}" if c.get("job") else ""
        msg = f"  [dim]{shown(c['message'])}[/]" if c.get("message") else ""
        out.print(f"{c['state'].upper():9} {shown(c['folder'])}{extra}{msg}")
    if not changes:
        out.print("no changes")


@watch_app.command("scan")
@handle_errors
def watch_scan(name: WatchArg, root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Scan a buffer once now: queue the imports of finished acquisitions."""
    with open_keep(root) as keep:
        changes = keep.scan_watch(name)
    _print_changes(changes, json_out)


@watch_app.command("retry")
@handle_errors
def watch_retry(
    name: WatchArg,
    folders: Annotated[list[str] | None, typer.Argument(help="Folders (default: all).")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Put failed, changed or vanished folders back to waiting."""
    with open_keep(root) as keep:
        done = keep.retry_buffer_folders(name, list(folders or []))
    if json_out:
        for folder in done:
            emit_json({"action": "watch-retry", "status": "ok", "folder": folder})
        return
    out.print(f"{len(done)} folder(s) waiting again")


@watch_app.command("run")
@handle_errors
def watch_run(
    names: Annotated[list[str] | None, typer.Argument(help="Watches (default: all).")] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the watcher until stopped (SIGTERM/Ctrl-C); workers run the imports it queues.
    Logs one JSON line per event on stderr."""
    import json
    import signal
    import sys
    import threading

    from labkeep.clock import isoformat, utcnow
    from labkeep.ops.watch import run_watchers

    stop = threading.Event()

    def log(event: str, **fields: Any) -> None:
        record = {"ts": isoformat(utcnow()), "event": event, **fields}
        sys.stderr.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        sys.stderr.flush()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with open_keep(root) as keep:
        if not keep.principal.site_admin:
            from labkeep.errors import Forbidden

            raise Forbidden("only site admins run the watcher")
        log("watch.start", watches=list(names or []) or "all")
        run_watchers(keep, stop=stop, on_queued=lambda: None, log=log, names=names or None)
        log("watch.stop")
    del json_out


# -- buffer ----------------------------------------------------------------------------
OlderOpt = Annotated[
    str | None,
    typer.Option("--older-than", help="Retention age since import (60d); default: the watch's."),
]


@buffer_app.command("status")
@handle_errors
def buffer_status(
    name: WatchArg, older_than: OlderOpt = None, root: RootOpt = None, json_out: JsonOpt = False
) -> None:
    """Every folder of a buffer, and why its copy may not be deleted yet."""
    with open_keep(root) as keep:
        rows = keep.buffer_status(name, older_than=older_than)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table("FOLDER", "STATE", "FILES", "SIZE", "DATASET", "DELETE?", paths=("FOLDER",))
    for r in rows:
        why = "yes" if r["may_delete"] else "; ".join(r["reasons"] or [r["message"]])
        if r["state"] not in ("imported", "cleaning", "changed"):
            why = r["message"] or "-"
        grid.add_row(shown(r["folder"]), r["state"], str(r["files"]), human_size(r["bytes"]),
                     shown(r["dataset"] or ""), why)  # fmt: skip
    out.print(grid)


@buffer_app.command("clean")
@handle_errors
def buffer_clean(
    name: WatchArg,
    older_than: OlderOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Delete nothing; say what.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete the buffer copies that are safely kept and old enough (site admins)."""
    with open_keep(root) as keep:
        report = keep.clean_buffer(name, older_than=older_than, dry_run=dry_run)
    for r in report.results:
        if json_out:
            emit_json({**r.to_dict(), "folder": r.path})
            continue
        label = {"ok": "DRY-RUN" if dry_run else "DELETED", "notneeded": "KEPT"}.get(
            r.status, r.status.upper()
        )
        out.print(
            f"{label:8} {shown(r.path or '')} ({shown(r.dataset or '')})  {shown(r.message or '')}"
        )
    if not json_out:
        print_summary(
            "buffer clean",
            report.counts(),
            ""
            if dry_run
            else f" ({report.info['files']} files, {human_size(report.info['bytes'])} deleted)",
        )
    if report.failed:
        raise typer.Exit(1)
