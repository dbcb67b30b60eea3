"""``labkeep store``, ``policy``, ``copy``, ``get``, ``drop``, ``whereis``: copies that keep
data safe."""

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
    table,
)
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead

store_app = typer.Typer(help="Stores that hold copies: add, list, remove.", no_args_is_help=True)
policy_app = typer.Typer(
    help="How many verified copies each project's data needs, and where.", no_args_is_help=True
)

JobsOpt = Annotated[
    int | None, typer.Option("--jobs", "-j", help="Files moved in parallel.", show_default="auto")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="List every file.")]


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
    app.add_typer(policy_app, name="policy")
    app.command("copy")(copy)
    app.command("get")(get)
    app.command("drop")(drop)
    app.command("move")(move)
    app.command("whereis")(whereis)


# -- stores ------------------------------------------------------------------------------


@store_app.command("add")
@handle_errors
def store_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. backup or archive.")],
    kind: Annotated[str, typer.Option(help="objects (a folder) or s3.")] = "objects",
    path: Annotated[
        str | None, typer.Option(help="objects: the folder (e.g. on a backup disk).")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="s3: the endpoint URL.")] = None,
    bucket: Annotated[str | None, typer.Option(help="s3: the bucket.")] = None,
    prefix: Annotated[str, typer.Option(help="s3: a key prefix inside the bucket.")] = "",
    region: Annotated[str | None, typer.Option(help="s3: the region.")] = None,
    credentials: Annotated[
        str | None,
        typer.Option(
            help="s3: the AWS profile (a section of the credentials file) with its keys; "
            "none: the environment (AWS_ACCESS_KEY_ID...). Secrets are never stored."
        ),
    ] = None,
    credentials_file: Annotated[
        str | None, typer.Option(help="s3: a credentials file other than ~/.aws/credentials.")
    ] = None,
    tier: Annotated[str, typer.Option(help="hot, warm or cold.")] = "warm",
    medium: Annotated[
        str | None, typer.Option(help="disk, object, tape, optical, cloud (3-2-1: two kinds).")
    ] = None,
    offsite: Annotated[bool, typer.Option(help="Counts as the off-site copy.")] = False,
    object_lock: Annotated[
        str | None, typer.Option(help="s3: WORM retention mode, compliance or governance.")
    ] = None,
    retention: Annotated[
        str | None, typer.Option(help="With --object-lock: how long, e.g. 10y, 18m, 90d.")
    ] = None,
    storage_class: Annotated[
        str | None, typer.Option(help="s3: storage class for this tier (e.g. GLACIER_IR).")
    ] = None,
    create_bucket: Annotated[
        bool, typer.Option(help="s3: create the bucket (versioned; Object Lock if asked).")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a store after checking it can be reached and written to (site admins)."""
    with open_keep(root) as keep:
        info = keep.add_store(
            name,
            kind=kind,
            path=path,
            endpoint=endpoint,
            bucket=bucket,
            prefix=prefix,
            region=region,
            credentials=credentials,
            credentials_file=credentials_file,
            tier=tier,
            medium=medium,
            offsite=offsite,
            object_lock=object_lock,
            retention=retention,
            storage_class=storage_class,
            create_bucket=create_bucket,
        )
    if json_out:
        emit_json({"action": "store-add", "status": "ok", **info.to_dict()})
        return
    lock = f", WORM {info.settings['lock_mode']}" if info.settings.get("lock_mode") else ""
    out.print(
        f"added {info.kind} store {shown(info.name)} ({info.tier}{lock}) at {shown(info.location)}"
    )
    err.print(f"next: labkeep copy PROJECT/DATASET --to {info.name}")


@store_app.command("list")
@handle_errors
def store_list(
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Do not contact the stores.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stores with their usage (as recorded), reachability and lock mode."""
    with open_keep(root) as keep:
        infos = keep.list_stores(check_health=not no_check)
    if json_out:
        for info in infos:
            emit_json(info.to_dict())
        return
    grid = table(
        "STORE",
        "KIND",
        "TIER",
        "MEDIUM",
        "OFFSITE",
        "OBJECTS",
        "SIZE",
        "LOCK",
        "STATE",
        "LOCATION",
        paths=("STORE",),
    )
    for info in infos:
        lock = info.lock_mode or info.settings.get("lock_mode") or ""
        days = info.settings.get("retention_days")
        state = (
            ""
            if info.reachable is None
            else ("ok" if info.reachable else f"UNREACHABLE: {info.message}")
        )
        grid.add_row(
            shown(info.name),
            info.kind,
            info.tier,
            info.medium,
            "yes" if info.offsite else "",
            "" if info.kind == "tree" else f"{info.objects:,}",
            "" if info.kind == "tree" else human_size(info.bytes),
            f"{lock.lower()} {days}d" if lock and days else lock.lower(),
            state,
            shown(info.location),
        )
    out.print(grid)


@store_app.command("remove")
@handle_errors
def store_remove(
    name: Annotated[str, typer.Argument(help="The store.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Forget a store that holds no recorded copy (site admins)."""
    with open_keep(root) as keep:
        keep.remove_store(name)
    if json_out:
        emit_json({"action": "store-remove", "status": "ok", "store": name})
    else:
        out.print(f"removed store {shown(name)} (its content was not touched)")


# -- policies ---------------------------------------------------------------------------


def _policy_line(record: dict[str, Any]) -> str:
    who = record["project"] or "keep default"
    seal = ",".join(record["on_seal"]) or "-"
    return (
        f"{who}: min {record['min_copies']} copies, {record['min_media']} kinds of media, "
        f"{record['min_offsite']} off site; on seal copy to {seal}; tree copy of sealed "
        f"data {'may' if record['tree_droppable'] else 'may not'} be dropped"
        + (" (inherited)" if record.get("inherited") else "")
    )


@policy_app.command("set")
@handle_errors
def policy_set(
    project: Annotated[str | None, typer.Argument(help="PROJECT; none with --default.")] = None,
    default: Annotated[bool, typer.Option("--default", help="The keep's default.")] = False,
    min_copies: Annotated[int | None, typer.Option(help="Verified copies each file needs.")] = None,
    min_media: Annotated[int | None, typer.Option(help="Kinds of media among them.")] = None,
    min_offsite: Annotated[int | None, typer.Option(help="Off-site copies among them.")] = None,
    on_seal: Annotated[
        str | None, typer.Option(help="copy:STORE[,STORE] when a dataset is sealed; '' for none.")
    ] = None,
    tree_droppable: Annotated[
        bool | None,
        typer.Option(
            "--tree-droppable/--keep-tree",
            help="Whether a sealed dataset's tree copy may be dropped (cold data).",
        ),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set a project's copy policy (or the keep's default)."""
    from labkeep.errors import UsageError
    from labkeep.ops.stores import parse_on_seal

    if (project is None) != default:
        raise UsageError("name a PROJECT, or give --default for the keep's default")
    with open_keep(root) as keep:
        info = keep.set_policy(
            project,
            min_copies=min_copies,
            min_media=min_media,
            min_offsite=min_offsite,
            on_seal=None if on_seal is None else parse_on_seal(on_seal),
            tree_droppable=tree_droppable,
        )
    record = info.to_dict()
    if json_out:
        emit_json({"action": "policy-set", "status": "ok", **record})
        return
    out.print(_policy_line(record))
    err.print(f"next: labkeep policy check {project or ''}".rstrip())


@policy_app.command("show")
@handle_errors
def policy_show(
    project: Annotated[
        str | None, typer.Argument(help="PROJECT; none: the keep's default.")
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a project's copy policy (or the keep's default)."""
    with open_keep(root) as keep:
        record = keep.get_policy(project).to_dict()
    if json_out:
        emit_json(record)
    else:
        out.print(_policy_line(record))


@policy_app.command("check")
@handle_errors
def policy_check(
    project: Annotated[str | None, typer.Argument(help="PROJECT; none: every project.")] = None,
    all_datasets: Annotated[
        bool, typer.Option("--all", help="List datasets that meet their policy too.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The 3-2-1 picture: datasets below their policy and what to do. Exit 1 if any."""
    with open_keep(root) as keep:
        records = keep.policy_check(project)
    below = [r for r in records if r["below_policy"]]
    if json_out:
        for record in records if all_datasets else below:
            emit_json(record)
    else:
        grid = table("DATASET", "FILES", "COPIES", "POLICY", "STATE", "FIX", paths=("DATASET",))
        for r in records if all_datasets else below:
            copies = ", ".join(
                c["store"] + ("" if c["complete"] and c["ok"] else "*") for c in r["copies"]
            )
            policy = r["policy"]
            grid.add_row(
                shown(r["dataset"]),
                f"{r['files']:,}",
                copies or "none",
                f"{policy['min_copies']}-{policy['min_media']}-{policy['min_offsite']}",
                "below: " + "; ".join(r["below_policy"]) if r["below_policy"] else "ok",
                r["fix"] or "",
            )
        out.print(grid)
        out.print(
            f"{len(below)} of {len(records)} datasets below their policy"
            + (" (* = partial or damaged copy)" if below else "")
        )
    if below:
        raise typer.Exit(1)


@policy_app.command("apply")
@handle_errors
def policy_apply(
    project: Annotated[str | None, typer.Argument(help="PROJECT; none: every project.")] = None,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the copy-on-seal rules now: copy sealed datasets to their policy's stores."""
    with open_keep(root) as keep, progress_for("copy", json_out) as bar:
        report = keep.policy_apply(
            project,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    _finish(report, "policy apply", json_out)


# -- copy, get, drop, whereis -------------------------------------------------------------


def _finish(report: Any, what: str, json_out: bool, hint: str = "") -> None:
    if json_out:
        emit_json(report.summary())
    else:
        print_summary(what, report.counts())
        if report.failed:
            err.print(
                hint or "some files failed (see above); fix that and run the same command again"
            )
    if report.failed:
        raise typer.Exit(1)


@handle_errors
def copy(
    address: Annotated[str, typer.Argument(help="PROJECT[/DATASET[/PATH]][@VERSION]")],
    to: Annotated[str, typer.Option("--to", help="The store to copy to.")],
    jobs: JobsOpt = None,
    verbose: VerboseOpt = False,
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy files to a store, verified (parallel, resumable: run it again to finish)."""
    if background:
        queue_instead(root, "replicate", {"dataset": address, "store": to}, json_out)
        return
    with open_keep(root) as keep, progress_for(f"copy to {to}", json_out) as bar:
        report = keep.copy(
            address,
            to=to,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    _finish(report, f"copy {address} to {to}", json_out)


@handle_errors
def get(
    address: Annotated[str, typer.Argument(help="PROJECT[/DATASET[/PATH]][@N]")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Copy the files (any version: P/D@N) into this folder instead, each "
            "checked against its SHA-256.",
        ),
    ] = None,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Bring content back into the tree from other stores, verified; with --to, copy a
    dataset, folder or file at any version out of the keep."""
    if to is not None:
        with open_keep(root) as keep:
            report = keep.export(
                address,
                to,
                jobs=jobs,
                on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            )
        if json_out:
            emit_json(report.summary())
        else:
            print_summary(
                f"get {address}",
                report.counts(),
                f" (into {report.info.get('saved_to')}, {human_size(report.info.get('bytes', 0))})",
            )
        if report.failed:
            raise typer.Exit(1)
        return
    with open_keep(root) as keep, progress_for("get", json_out) as bar:
        report = keep.get(
            address,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    _finish(report, f"get {address}", json_out)


@handle_errors
def drop(
    address: Annotated[str, typer.Argument(help="PROJECT[/DATASET[/PATH]]")],
    from_store: Annotated[str, typer.Option("--from", help="The store to drop from (or tree).")],
    quick: Annotated[
        bool,
        typer.Option(
            help="Count other copies by their size and the store's own SHA-256 instead of "
            "re-reading them."
        ),
    ] = False,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove copies from a store, only where enough verified copies remain elsewhere."""
    with open_keep(root) as keep, progress_for(f"drop from {from_store}", json_out) as bar:
        report = keep.drop(
            address,
            from_store=from_store,
            quick=quick,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    _finish(
        report,
        f"drop {address} from {from_store}",
        json_out,
        "some copies were kept (see above): copy or repair the others first",
    )


@handle_errors
def move(
    address: Annotated[str, typer.Argument(help="PROJECT[/DATASET[/PATH]]")],
    from_store: Annotated[str, typer.Option("--from", help="The store to move from.")],
    to: Annotated[str, typer.Option("--to", help="The store to move to.")],
    quick: Annotated[
        bool, typer.Option(help="As for drop: count other copies without re-reading them.")
    ] = False,
    jobs: JobsOpt = None,
    verbose: VerboseOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy to one store, then drop from another (only once every file was copied, and
    only where enough verified copies remain)."""
    with open_keep(root) as keep, progress_for(f"move to {to}", json_out) as bar:
        report = keep.move(
            address,
            from_store=from_store,
            to=to,
            quick=quick,
            jobs=jobs,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    _finish(
        report,
        f"move {address} from {from_store} to {to}",
        json_out,
        report.info.get("message", "") or "some copies were kept (see above)",
    )


@handle_errors
def whereis(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET[/PATH][@VERSION]")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every store holding a file (or a dataset's files), and when each copy was checked."""
    with open_keep(root) as keep:
        record = keep.whereis(address)
    if json_out:
        emit_json(record)
        return
    if "file" in record:
        out.print(
            f"{shown(record['file'])}: {record['good_copies']} good copies "
            f"(policy: {record['min_copies']})"
        )
        for c in record["copies"]:
            until = f", WORM until {c['retain_until']}" if c.get("retain_until") else ""
            out.print(
                f"  {shown(c['store']):12} {c['status']:10} checked {c['verified_at'] or 'never'}"
                f"{until}"
            )
        return
    out.print(
        f"{shown(record['dataset'])}: {record['files']:,} files, {human_size(record['bytes'])}, "
        f"{record['good_copies']} full good copies (policy: {record['policy']['min_copies']})"
    )
    for c in record["copies"]:
        until = f", WORM until {c['retain_until']}" if c.get("retain_until") else ""
        held = "all files" if c["complete"] else f"{c['files']:,} files"
        bad = f", {c['damaged']} damaged" if c["damaged"] else ""
        out.print(
            f"  {shown(c['store']):12} {held}{bad}, checked {c['verified_at'] or 'never'}{until}"
        )
    if record["below_policy"]:
        out.print(f"[yellow]below policy[/]: {'; '.join(record['below_policy'])}: {record['fix']}")
