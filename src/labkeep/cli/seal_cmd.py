"""``labkeep seal`` and ``labkeep unseal --force``."""

from __future__ import annotations

from typing import Annotated

import typer

from labkeep.cli._common import JsonOpt, RootOpt, emit_json, err, handle_errors, open_keep, out


def register(app: typer.Typer) -> None:
    app.command("seal")(seal)
    app.command("unseal")(unseal)


@handle_errors
def seal(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    message: Annotated[str, typer.Option("--message", "-m", help="Version message.")] = "",
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the dataset's raw/ write-once (read-only, chattr +i where possible)."""
    with open_keep(root) as keep:
        result = keep.seal(address, message=message)
    if json_out:
        emit_json(result.to_dict())
        return
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    if result.status == "notneeded":
        out.print(f"{result.dataset} was already sealed")
    elif result.message:
        out.print(result.message)
    else:
        how = "immutable" if result.immutable else "read-only"
        out.print(
            f"sealed {result.dataset} as version {result.version} ({how}); "
            f"manifest sha256 {result.manifest_sha256}"
        )


@handle_errors
def unseal(
    address: Annotated[str, typer.Argument(help="PROJECT/DATASET")],
    force: Annotated[
        bool, typer.Option("--force", help="Required: unsealing is exceptional.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "",
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a sealed dataset's raw/ writable again (site admins; audited)."""
    with open_keep(root) as keep:
        result = keep.unseal(address, force=force, reason=reason)
    if json_out:
        emit_json(result.to_dict())
        return
    if result.status == "notneeded":
        out.print(f"{result.dataset} is not sealed")
        return
    if result.message:
        out.print(result.message)
        return
    err.print(
        f"[bold red]WARNING:[/] {result.dataset} is UNSEALED: its raw data is writable again. "
        "This is recorded in the audit log. Seal it again with 'labkeep seal' when done."
    )
    out.print(f"unsealed {result.dataset} as version {result.version}")
