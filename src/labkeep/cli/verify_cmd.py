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
from labkeep.cli.jobs_cmd import BackgroundOpt, queue_instead


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
    store: Annotated[
        str | None,
        typer.Option("--store", help="Verify the copies in this store instead of the tree."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help="With --store: trust the store's size and its own SHA-256 instead of "
            "re-reading every copy (said so in each record)."
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            help="Replace every damaged or missing copy found from a good one (the tree "
            "through its seal, which is restored)."
        ),
    ] = False,
    background: BackgroundOpt = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-hash the tree (or a store's copies) and compare with the catalog. Exit 1 when
    anything is wrong."""
    if show_status:
        _status(target, root, json_out)
        return
    if background:
        args = {"target": target, "store": store, "quick": quick, "repair": repair}
        queue_instead(root, "verify", {k: v for k, v in args.items() if v}, json_out)
        return
    with open_keep_or_remote(root) as keep, progress_for("verify", json_out) as bar:
        from labkeep.client import RemoteKeep

        if isinstance(keep, RemoteKeep) and (store or repair or quick):
            from labkeep.errors import UsageError

            raise UsageError(
                "--store, --quick and --repair run on the keep's host",
                hint="run them there (or as a job once workers exist)",
            )
        report = keep.verify(
            target,
            jobs=jobs,
            log_dir=log_dir,
            progress=bar,
            on_result=lambda r: print_result(r, json_out=json_out, show_ok=verbose),
            keep_results=False,
            **({"store": store, "quick": quick} if store else {}),
            **({"repair": True} if repair else {}),
        )
    states = report.info["states"]
    # (with --repair on the tree: only what could not be repaired is a failure)
    failed = bool(report.info.get("unrepaired", report.problems))
    if json_out:
        emit_json(report.summary())
    else:
        where = f" {store}" if store else ""
        log = f"  log: {report.info['log']}" if "log" in report.info else ""
        repaired = report.info.get("repaired")
        log += f"  ({repaired} repaired)" if repaired else ""
        print_summary(f"verify{where}", {k.upper(): v for k, v in states.items() if v}, log)
        if failed:
            err.print(
                "problems found: see the lines above"
                + (
                    ""
                    if repair
                    else f"; 'labkeep verify {target or ''}{where and ' --store' + where} "
                    "--repair' fixes them"
                )
            )
    if failed:  # (with --repair: when something could not be repaired)
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
