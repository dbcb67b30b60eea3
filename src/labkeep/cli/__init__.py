"""The ``labkeep`` command line (Typer + Rich). Handlers are thin: parse, call, render."""

from __future__ import annotations

import typer

from labkeep.cli import (
    acl_cmd,
    backup_cmd,
    check_cmd,
    convert_cmd,
    events_cmd,
    export_cmd,
    extract_cmd,
    grant_cmd,
    group_cmd,
    ingest_cmd,
    jobs_cmd,
    keep_cmd,
    kv_cmd,
    ls_cmd,
    meta_cmd,
    project_cmd,
    publish_cmd,
    publish_meta_cmd,
    remote_cmd,
    run_cmd,
    sample_cmd,
    save_cmd,
    seal_cmd,
    search_cmd,
    serve_cmd,
    share_cmd,
    store_cmd,
    token_cmd,
    user_cmd,
    verify_cmd,
    watch_cmd,
)

app = typer.Typer(
    name="labkeep",
    help="Research data management: ingest, seal, verify and share instrument data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for module in (
    keep_cmd,
    project_cmd,
    ingest_cmd,
    ls_cmd,
    save_cmd,
    run_cmd,
    seal_cmd,
    serve_cmd,
    verify_cmd,
    events_cmd,
    user_cmd,
    group_cmd,
    grant_cmd,
    share_cmd,
    token_cmd,
    store_cmd,
    jobs_cmd,
    remote_cmd,
    watch_cmd,
    meta_cmd,
    publish_meta_cmd,
    backup_cmd,
    check_cmd,
    extract_cmd,
    convert_cmd,
    kv_cmd,
    sample_cmd,
    search_cmd,
    export_cmd,
    acl_cmd,
    publish_cmd,
):
    module.register(app)


def _run_for_scripts() -> int:
    """The app with ``--json``: a bad argument (Click's own check) ends with a usage error
    record on stdout too, like every other failure; returns the exit code."""
    from typing import cast

    from labkeep.cli._common import report_error
    from labkeep.errors import UsageError

    # (Typer carries its own copy of Click: its exceptions are matched by their base)
    click_error = cast("type[Exception]", typer.BadParameter.__mro__[2])
    assert click_error.__name__ == "ClickException"
    try:
        code = app(standalone_mode=False)
    except click_error as exc:
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "labkeep"
        message = exc.format_message()  # type: ignore[attr-defined]
        try:
            report_error(UsageError(message, hint=f"see '{command} --help'"), json_out=True)
        except typer.Exit as stop:
            return stop.exit_code
    except typer.Abort:
        return 1
    return code if isinstance(code, int) else 0


def main() -> None:
    import sys

    from labkeep.cli._common import report_error

    try:
        if "--json" in sys.argv:
            sys.exit(_run_for_scripts())
        app()
    except Exception as exc:  # noqa: BLE001 (the last edge: commands catch their own)
        try:
            report_error(exc, json_out="--json" in sys.argv)
        except typer.Exit as stop:
            sys.exit(stop.exit_code)
