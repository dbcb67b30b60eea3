"""``labkeep run``, ``labkeep runs``, ``labkeep rerun``, ``labkeep export-provenance``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    _escape,
    emit_json,
    err,
    handle_errors,
    open_keep,
    out,
    shown,
    table,
)

runs_app = typer.Typer(
    help="Recorded runs: list (optionally of one output dataset), show, cancel.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.command(
        "run",
        context_settings={"allow_interspersed_args": False},
    )(run)
    app.add_typer(runs_app, name="runs")
    app.command("rerun")(rerun)
    app.command("export-provenance")(export_provenance)


@handle_errors
def run(
    command: Annotated[
        list[str],
        typer.Argument(
            help="The command, after '--'; {inputs}, {inputs[0]}, {input}, {outputs} are "
            "replaced by the staged inputs and the outputs folder.",
            show_default=False,
        ),
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="P/D[/PATH][@N] read by the command (repeatable)."),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="P/D whose new version the outputs become.")
    ] = "",
    message: Annotated[str, typer.Option("--message", "-m", help="What this run is for.")] = "",
    slurm: Annotated[
        str | None,
        typer.Option(
            "--slurm",
            help='Submit to SLURM with these sbatch options (e.g. "--partition=gpu '
            '--gres=gpu:1 --time=02:00:00"); a worker follows the job.',
        ),
    ] = None,
    container: Annotated[
        str | None,
        typer.Option(help="Run inside this image (Apptainer .sif/docker://, Docker, Podman)."),
    ] = None,
    background: Annotated[
        bool, typer.Option(help="Queue it for a worker instead of running it here.")
    ] = False,
    save_failed: Annotated[
        bool, typer.Option(help="Save the outputs as a version even when the command fails.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a command on pinned inputs and save its outputs as a recorded version."""
    from labkeep.errors import UsageError
    from labkeep.ops.runs import RunRequest

    if not output:
        raise UsageError(
            "say where the outputs go: -o PROJECT/DATASET",
            hint="labkeep run -i P/IN@3 -o P/OUT -m 'why' -- COMMAND {inputs} {outputs}",
        )
    request = RunRequest(
        command=list(command),
        inputs=list(inputs or []),
        output=output,
        message=message,
        container=container,
        slurm=slurm,
        save_failed=save_failed,
        cwd=os.getcwd(),
    )
    with open_keep(root) as keep:
        if background and slurm is None:
            from labkeep.ops.run_slurm import queue_local

            record = queue_local(keep, request)
        else:
            if not json_out and slurm is None:
                err.print(f"[dim]running: {_escape(shlex.join(command))}[/]")
            record = keep.run(request, echo=not json_out)
    _show_outcome(record, json_out)


def _show_outcome(record: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(record)
    else:
        state = record["state"]
        where = record["output_dataset"]
        if state in ("queued", "running"):
            how = (
                f"SLURM job {record['slurm']['job_id']}"
                if record.get("slurm")
                else f"job {record.get('job_id')}"
            )
            out.print(
                f"run {record['id']} {state} ({how}); follow it with 'labkeep runs show "
                f"{record['id']}' (a worker saves its outputs when it ends)"
            )
        elif state == "done":
            version = record["version"]
            out.print(
                f"run {record['id']} done in {record['duration_seconds']} s: "
                f"{len(record.get('outputs', []))} output files"
                + (f" saved as {where}@{version}" if version else "")
            )
        else:
            err.print(f"[red]run {record['id']} {state}[/]: {_escape(record['error'])}")
            if record.get("version"):
                err.print(f"its outputs were saved anyway as {where}@{record['version']}")
            else:
                err.print(
                    "no version was saved; its outputs (if any) stay in the run's folder "
                    "for a look. Fix the cause, then 'labkeep rerun "
                    f"{record['id']}' or run it again"
                )
        for problem in record.get("problems", []):
            err.print(f"[yellow]warning:[/] {_escape(problem)}")
        comparison = record.get("comparison")
        if comparison:
            _show_comparison(comparison)
    if record["state"] not in ("done", "queued", "running"):
        raise typer.Exit(1)


def _show_comparison(comparison: dict[str, Any]) -> None:
    for item in comparison.get("differing", []):
        out.print(
            f"DIFFERS   {shown(item['path'])}  {item['old_sha256'][:12]}… -> "
            f"{item['new_sha256'][:12]}…",
            markup=False,
            highlight=False,
        )
    for item in comparison.get("missing", []):
        out.print(f"MISSING   {shown(item['path'])}", markup=False, highlight=False)
    for item in comparison.get("new", []):
        out.print(f"NEW       {shown(item['path'])}", markup=False, highlight=False)
    n = {k: len(v) for k, v in comparison.items() if isinstance(v, list)}
    out.print(
        f"{n.get('identical', 0)} identical, {n.get('differing', 0)} differing, "
        f"{n.get('missing', 0)} missing, {n.get('new', 0)} new outputs"
    )


@runs_app.callback()
@handle_errors
def runs(
    ctx: typer.Context,
    address: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Only runs into this P/D.")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="queued, running, done, failed, cancelled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many, newest first.")] = 50,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recorded runs, newest first: state, duration, executor and job id."""
    if ctx.invoked_subcommand is not None:
        return
    with open_keep(root) as keep:
        rows = keep.list_runs(address, limit=limit, state=state)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    grid = table(
        "run", "state", "output", "inputs", "executor", "took", "exit", "command", paths=("output",)
    )
    for r in rows:
        executor = r["executor"]
        if r.get("slurm") and r["slurm"].get("job_id"):
            executor += f" {r['slurm']['job_id']}"
        grid.add_row(
            str(r["id"]),
            r["state"],
            shown(r["output_dataset"] + (f"@{r['version']}" if r["version"] else "")),
            shown(", ".join(i["address"] for i in r["inputs"])),
            executor,
            f"{r['duration_seconds']} s" if r["duration_seconds"] is not None else "",
            "" if r["exit_code"] is None else str(r["exit_code"]),
            shown(shlex.join(r["command"]))[:60],
        )
    out.print(grid)
    if not rows:
        err.print("no runs yet: 'labkeep run -i P/D -o P/OUT -- COMMAND {inputs} {outputs}'")


@runs_app.command("show")
@handle_errors
def show(
    run_id: Annotated[int, typer.Argument(help="The run's id.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Everything recorded about a run."""
    from labkeep.ops.runs import environment_summary

    with open_keep(root) as keep:
        r = keep.get_run(run_id)
    if json_out:
        emit_json(r)
        return
    lines = [
        f"run {r['id']}: {r['state']}" + (f" — {r['message']}" if r["message"] else ""),
        f"command:   {shlex.join(r['command'])}",
        f"ran:       {shlex.join(r['argv'])}" if r["argv"] else "",
        f"in:        {r['cwd']}",
        "inputs:    "
        + (
            ", ".join(
                f"{i['address']} (manifest {str(i['manifest_sha256'])[:12]}…)" for i in r["inputs"]
            )
            or "none"
        ),
        f"output:    {r['output_dataset']}" + (f"@{r['version']}" if r["version"] else ""),
        f"by:        {r['user']}, {r['executor']}"
        + (
            f" (SLURM job {r['slurm']['job_id']}, {r['slurm'].get('nodes') or ''})"
            if r.get("slurm")
            else ""
        )
        + (f", job {r['job_id']}" if r["job_id"] else ""),
        f"started:   {r['started_at'] or ''}   finished: {r['finished_at'] or ''}"
        + (f"   ({r['duration_seconds']} s)" if r["duration_seconds"] is not None else ""),
        f"exit code: {r['exit_code']}" if r["exit_code"] is not None else "",
        f"where:     {environment_summary(r['environment'])}" if r["environment"] else "",
        f"container: {r['container'].get('image')} {r['container'].get('digest') or ''}"
        if r.get("container")
        else "",
        f"error:     {r['error']}" if r["error"] else "",
        f"rerun of:  {r['rerun_of']}" if r["rerun_of"] else "",
        f"outputs:   {len(r['outputs'])} files",
    ]
    for line in lines:
        if line:
            out.print(line, markup=False, highlight=False)
    for o in r["outputs"][:20]:
        out.print(f"  {o['sha256'][:12]}…  {shown(o['path'])}", markup=False, highlight=False)
    if len(r["outputs"]) > 20:
        out.print(f"  … and {len(r['outputs']) - 20} more (--json lists them all)")
    if r["stderr_tail"] and r["state"] != "done":
        out.print("stderr (last lines):", markup=False)
        out.print(r["stderr_tail"], markup=False, highlight=False)


@runs_app.command("cancel")
@handle_errors
def cancel(
    run_id: Annotated[int, typer.Argument(help="The run's id.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a queued or running run (its SLURM job, or its queued job)."""
    with open_keep(root) as keep:
        r = keep.cancel_run(run_id)
    if json_out:
        emit_json(r)
    else:
        out.print(f"run {run_id}: cancel asked ({r['state']}); a worker records its end")


@handle_errors
def rerun(
    run_id: Annotated[int, typer.Argument(help="The run to run again.")],
    save: Annotated[
        bool, typer.Option(help="Also save the new outputs as a version of the output dataset.")
    ] = False,
    local: Annotated[
        bool, typer.Option(help="Run here even if the original ran on SLURM.")
    ] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a recorded run again on its pinned inputs; report identical and differing outputs."""
    with open_keep(root) as keep:
        record = keep.rerun(run_id, save=save, echo=not json_out, local=local)
    _show_outcome(record, json_out)
    comparison = record.get("comparison") or {}
    if comparison.get("differing") or comparison.get("missing") or comparison.get("new"):
        raise typer.Exit(1)


@handle_errors
def export_provenance(
    address: Annotated[
        str, typer.Argument(help="P/D[@N]: the version whose provenance to export.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="ro-crate or json.")] = "ro-crate",
    to: Annotated[
        str | None,
        typer.Option("--to", help="Folder for ro-crate-metadata.json (default: print it)."),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The runs that made a version: an RO-Crate (Process Run Crate) or their records."""
    from labkeep.errors import UsageError

    if fmt not in ("ro-crate", "json"):
        raise UsageError(f"unknown format {fmt!r}", hint="--format ro-crate or --format json")
    with open_keep(root) as keep:
        records = keep.runs_of_version(address)
        if fmt == "json":
            for record in records:
                emit_json(record)
            return
        path = keep.export_provenance(address, to)
    if to is None:
        text = Path(path).read_text(encoding="utf-8")
        Path(path).unlink()
        with contextlib.suppress(OSError):
            Path(path).parent.rmdir()
        if json_out:  # one record per line, like every --json output
            emit_json(json.loads(text))
        else:
            out.print(text, markup=False, highlight=False, soft_wrap=True)
    elif json_out:
        emit_json({"action": "export-provenance", "path": str(path), "runs": len(records)})
    else:
        out.print(f"wrote {path} ({len(records)} runs)")
