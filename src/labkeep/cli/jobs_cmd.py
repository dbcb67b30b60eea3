"""``labkeep worker`` and ``labkeep jobs``: background work."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from labkeep.cli._common import (
    JsonOpt,
    RootOpt,
    emit_json,
    err,
    handle_errors,
    open_keep,
    out,
    shown,
    table,
)

jobs_app = typer.Typer(
    help="Background jobs: list them, show one, retry, cancel, queue.",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(jobs_app, name="jobs")


@handle_errors
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Jobs run at once.")
    ] = 1,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="Run only jobs of this kind (repeatable)."),
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="Also run the watchers of the configured buffers.")
    ] = False,
    drain: Annotated[
        bool, typer.Option(help="Stop when no job is left to run (for scripts and cron).")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM: seconds running jobs get to finish before they are handed "
            "back to the queue.",
        ),
    ] = 30.0,
    schedule: Annotated[
        bool, typer.Option(help="Queue the periodic jobs of [jobs] schedule.")
    ] = True,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run queued jobs until stopped (SIGTERM/Ctrl-C: running jobs finish or are handed
    back). Any number of workers may run, on any host that reaches the catalog; each logs
    one JSON line per event on stderr."""
    from labkeep.ops.worker import JobWorker

    with open_keep(root) as keep:
        runner = JobWorker(
            keep,
            concurrency=concurrency,
            kinds=tuple(kind) if kind else None,
            drain=drain,
            grace=grace,
            schedule=schedule,
            watch=watch,
        )
        runner.install_signals()
        stats = runner.run()
    if json_out:
        emit_json({"worker": runner.owner, **stats.to_dict()})
    else:
        err.print(
            f"worker stopped: {stats.done} done, {stats.failed} failed, "
            f"{stats.retried} to retry, {stats.released} handed back"
        )


def _age(when: datetime | None) -> str:
    from labkeep.clock import utcnow

    if when is None:
        return ""
    seconds = max(0, int((utcnow() - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _progress(job: Any) -> str:
    p = job.progress or {}
    parts = []
    if p.get("total_files"):
        parts.append(f"{p.get('files', 0):,}/{p['total_files']:,} files")
    elif p.get("total_datasets"):
        parts.append(f"{p.get('datasets', 0)}/{p['total_datasets']} datasets")
    pct = job.percent
    if pct is not None and job.state == "running":
        parts.append(f"{pct:.0f}%")
    return " ".join(parts)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


@jobs_app.callback()
@handle_errors
def jobs(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(help="queued, running, done, failed, cancelled, or active."),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    target: Annotated[str | None, typer.Option(help="Only jobs on this PROJECT[/DATASET].")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    workers: Annotated[bool, typer.Option("--workers", help="List the live workers.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Jobs, newest first, with age and progress (yours; all of them for site admins)."""
    if ctx.invoked_subcommand is not None:
        return
    with open_keep(root) as keep:
        if workers:
            rows = keep.workers()
            if json_out:
                for w in rows:
                    emit_json(w)
                return
            grid = table("worker", "host", "pid", "running", "kinds", "seen", paths=("worker",))
            for w in rows:
                grid.add_row(
                    w["id"],
                    w["host"],
                    str(w["pid"]),
                    f"{w['running']}/{w['concurrency']}",
                    ",".join(w["kinds"]) or "all",
                    w["seen_at"],
                )
            out.print(grid)
            if not rows:
                err.print("no worker is running: start one with 'labkeep worker'")
            return
        found = keep.list_jobs(state=state, kind=kind, target=target, limit=limit)
        counts = keep.job_counts()
        summary = keep.queue_summary()
    if json_out:
        for job in found:
            emit_json(job.to_dict())
        return
    grid = table(
        "id", "kind", "target", "state", "try", "age", "progress", "error", paths=("target",)
    )
    for job in found:
        grid.add_row(
            str(job.id),
            job.kind,
            shown(job.target or ""),
            job.state + (" (cancel asked)" if job.cancel_requested else ""),
            f"{job.attempts}/{job.max_attempts}",
            _age(job.created_at),
            _progress(job),
            shown(_first_line(job.last_error))[:80],
        )
    out.print(grid)
    err.print(
        "  ".join(f"{s}: {n}" for s, n in counts.items() if n)
        or "no jobs yet: 'labkeep jobs add KIND key=value ...' queues one"
    )
    if (summary["queued"] or summary["running"]) and not summary["workers"]:
        err.print("[yellow]no worker is running[/]: start one with 'labkeep worker'")


@jobs_app.command("show")
@handle_errors
def show(
    job_id: Annotated[int, typer.Argument(help="The job's number.", min=1)],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One job in full: arguments, state, attempts, progress, result, last error."""
    with open_keep(root) as keep:
        job = keep.get_job(job_id)
    record = job.to_dict()
    if json_out:
        emit_json(record)
        return
    for key in (
        "id",
        "kind",
        "target",
        "state",
        "attempts",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "run_after",
        "worker",
        "lease_until",
    ):
        value = record[key]
        if key == "attempts":
            value = f"{job.attempts} of {job.max_attempts}"
        if value not in (None, ""):
            out.print(f"{key + ':':<13}{shown(str(value))}")
    out.print(f"{'args:':<13}{shown(json.dumps(job.args, ensure_ascii=False))}")
    if job.progress:
        out.print(f"{'progress:':<13}{shown(json.dumps(job.progress, ensure_ascii=False))}")
    if job.result:
        out.print(f"{'result:':<13}{shown(json.dumps(job.result, ensure_ascii=False))}")
    if job.last_error:
        out.print("last error:")
        for line in job.last_error.splitlines():
            out.print("  " + shown(line))
    if job.state == "failed":
        err.print(f"retry it with 'labkeep jobs retry {job.id}'")


@jobs_app.command("retry")
@handle_errors
def retry(
    job_id: Annotated[int, typer.Argument(help="A failed or cancelled job.", min=1)],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Queue a failed or cancelled job again (its attempts start from zero)."""
    with open_keep(root) as keep:
        job = keep.retry_job(job_id)
    if json_out:
        emit_json(job.to_dict())
    else:
        out.print(f"job {job.id} queued again")


@jobs_app.command("cancel")
@handle_errors
def cancel(
    job_id: Annotated[int, typer.Argument(help="A queued or running job.", min=1)],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a queued job, or ask a running one to stop at its next step."""
    with open_keep(root) as keep:
        job = keep.cancel_job(job_id)
    if json_out:
        emit_json(job.to_dict())
    elif job.state == "cancelled":
        out.print(f"job {job.id} cancelled")
    else:
        out.print(f"job {job.id} is running: it stops at its next step")


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    from labkeep.errors import UsageError

    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r} is not KEY=VALUE", hint="e.g. dataset=imaging/s017")
        try:
            args[key] = json.loads(value)  # numbers, true/false, null, quoted strings
        except ValueError:
            args[key] = value
    return args


@jobs_app.command("add")
@handle_errors
def add(
    kind: Annotated[str, typer.Argument(help="ingest, verify, scrub, replicate, noop, ...")],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE arguments, e.g. target=imaging/s017 repair=true"),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    unique_key: Annotated[
        str | None,
        typer.Option("--unique", help="Do not queue it if a job with this key is active."),
    ] = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Queue a job (a worker runs it: 'labkeep worker')."""
    with open_keep(root) as keep:
        job = keep.enqueue(kind, _parse_args(args or []), priority=priority, unique_key=unique_key)
        summary = keep.queue_summary()
    if json_out:
        emit_json(job.to_dict())
        return
    out.print(f"job {job.id} ({job.kind}) {job.state}")
    if not summary["workers"]:
        err.print("no worker is running: start one with 'labkeep worker'")


BackgroundOpt = Annotated[
    bool,
    typer.Option(
        "--background",
        help="Queue it as a job for a worker instead of running it here ('labkeep jobs').",
    ),
]


def queue_instead(root: str | None, kind: str, args: dict[str, Any], json_out: bool) -> None:
    """Queue *kind* with *args* and say how to follow it (the commands' --background)."""
    with open_keep(root) as keep:
        job = keep.enqueue(kind, args)
        summary = keep.queue_summary()
    if json_out:
        emit_json(job.to_dict())
        return
    out.print(f"job {job.id} queued ({kind} {job.target or ''}".rstrip() + ")")
    err.print(f"follow it with 'labkeep jobs show {job.id}'")
    if not summary["workers"]:
        err.print("no worker is running: start one with 'labkeep worker'")
