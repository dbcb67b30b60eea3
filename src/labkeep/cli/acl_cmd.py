"""``labkeep acl sync [PROJECT]``: the tree's POSIX ACLs follow the grants."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, err, handle_errors, open_keep, out

acl_app = typer.Typer(
    help="File-system ACLs on the tree, so that SMB/NFS exports honour the grants.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(acl_app, name="acl")


@acl_app.command("sync")
@handle_errors
def sync(
    project: Annotated[
        str | None, typer.Argument(help="Only this project (default: every project).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change; change nothing.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set POSIX ACLs on the tree from the grants (site admins; see docs/network-drives.md)."""
    with open_keep(root) as keep:
        report = keep.acl_sync(project, dry_run=dry_run)
    if json_out:
        emit_json(
            {
                **report.summary(),
                "datasets": [r.to_dict() for r in report.results],
            }
        )
        return
    info = report.info
    verb = "would change" if dry_run else "changed"
    out.print(
        f"{len(report.results)} datasets, {info['paths']} paths checked; "
        f"{verb} the ACLs of {info['changed']}"
    )
    for path in info["changed_paths"][:20] if dry_run else []:
        out.print(f"  {path}")
    if info["unmapped"]:
        err.print(
            "[yellow]no OS account for:[/] "
            + ", ".join(info["unmapped"])
            + " (they get no access; map them in [acl] users of labkeep.toml)"
        )
