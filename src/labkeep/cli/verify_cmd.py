"""``labkeep verify`` and ``labkeep manifest``."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    open_keep,
    open_keep_or_remote,
    out,
    print_result,
    print_summary,
    progress_for,
)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.command("manifest")(manifest)


@handle_errors
def verify(
    target: Annotated[
        str | None, typer.Argument(help="PROJECT or PROJECT/DATASET; none: all.")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Parallel hashing threads.")
    ] = None,
    log_dir: Annotated[str | None, typer.Option(help="Folder for verify_YYYY-MM-DD.log.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List OK files too.")] = False,
    show_status: Annotated[
        bool,
        typer.Option(
            "--status",
            help="Show the last verification instead of running one "
            "(also works against a server after 'labkeep login').",
        ),
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-hash the tree and compare with the catalog. Exit 1 when anything is wrong."""
    if show_status:
        _status(target, root, json_out)
        return
    with open_keep_or_remote(root) as keep, progress_for("verify", json_out) as bar:
        report = keep.verify(
            target,
            jobs=jobs,
            log_dir=log_dir,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
        )
    states = report.info["states"]
    if json_out:
        emit_json(report.summary())
    else:
        print_summary(
            "verify", {k.upper(): v for k, v in states.items() if v}, f"  log: {report.info['log']}"
        )
        if report.failed:
            err.print("problems found: see the lines above and the log")
    if report.failed:
        raise typer.Exit(1)


@handle_errors
def manifest(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rewrite the dataset's MANIFEST.sha256 from the catalog."""
    with open_keep(root) as keep:
        digest = keep.write_manifest(address)
    if json_out:
        emit_json({"action": "manifest", "status": "ok", "dataset": address, "sha256": digest})
    else:
        out.print(f"wrote {address}/MANIFEST.sha256 (sha256 {digest})")


def _status(target: str | None, root: str | None, json_out: bool) -> None:
    from labkeep.errors import UsageError

    if not target:
        raise UsageError("--status needs PROJECT/DATASET")
    with open_keep_or_remote(root) as keep:
        info = keep.verification(target)
    if json_out:
        emit_json(info)
    else:
        files = ", ".join(f"{k.upper()} {v}" for k, v in sorted(info["files"].items()))
        out.print(f"{info['dataset']}: last verified {info['last_verify'] or 'never'}; {files}")
    if not info["ok"]:
        raise typer.Exit(1)
