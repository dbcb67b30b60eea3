"""Runs on SLURM, and runs in the background: submitted here, followed by workers.

``labkeep run --slurm "ARGS" ...`` records the run (state ``queued``), stages its inputs
in the configured scratch (``[runs] scratch``, a folder the compute nodes see), writes an
``sbatch`` script that runs the command and records its exit code and node, submits it,
and queues a ``run-slurm`` job. No process waits in a terminal: a worker asks SLURM about
the job every ``[runs] poll_seconds`` (the job is deferred in between, holding no worker
slot), and when it has ended copies the outputs back into the keep verified by SHA-256,
saves them as a version, records node, exit code and stderr tail, and cleans the
scratch. A job that fails, hits its time limit or is cancelled (``scancel`` or
``labkeep runs cancel``) ends the run in that state with the job's stderr tail.

``labkeep run --background`` queues a ``run`` job: a worker runs the command locally.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from labkeep.catalog import Run
from labkeep.clock import isoformat, utcnow
from labkeep.errors import LabkeepError, NotFound, UsageError
from labkeep.integrity.hashing import copy_hash, hash_file
from labkeep.ops.jobs import JobContext, handler
from labkeep.ops.runs import (
    RunRequest,
    _environment,
    _loads,
    _pinned_of,
    attach_comparison,
    create_run,
    expand,
    finish,
    get_run,
    remove_tree,
    stage_inputs,
)

if TYPE_CHECKING:
    from labkeep.keep import Keep


def scratch_of(keep: Keep, run_id: int) -> Path:
    return keep.config.scratch_path / f"run-{run_id}"


def _slurm() -> Any:
    from labkeep.ops.slurm import Slurm

    return Slurm(env=dict(os.environ))


def submit(
    keep: Keep,
    request: RunRequest,
    *,
    rerun_of: int | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record, stage and submit a SLURM run; a worker follows it. Returns the record."""
    from labkeep.ops import jobs
    from labkeep.ops.slurm import parse_sbatch_args, render_script

    assert request.slurm is not None
    sbatch_args = parse_sbatch_args(request.slurm)
    run_id = create_run(
        keep, request, executor="slurm", state="queued", rerun_of=rerun_of, settings=settings
    )
    scratch = scratch_of(keep, run_id)
    try:
        remove_tree(scratch)
        scratch.mkdir(parents=True)
        staged = stage_inputs(keep, _pinned_of(keep, run_id), scratch / "inputs")
        staged.outputs.mkdir()
        (scratch / "slurm").mkdir()
        argv = expand(request.command, staged.inputs, staged.outputs)
        env_info = _environment({"image": request.container} if request.container else None)
        if request.container:
            from labkeep.ops.runs import _in_container

            argv = _in_container(keep, env_info, argv, staged)
        workdir = Path(request.cwd) if request.cwd and os.path.isdir(request.cwd) else scratch
        script = scratch / "slurm" / "job.sh"
        script.write_text(render_script(argv, workdir, scratch / "slurm"), encoding="utf-8")
        slurm_job = _slurm().submit(script, sbatch_args, scratch / "slurm", f"labkeep-run-{run_id}")
    except BaseException as exc:
        message = exc.message if isinstance(exc, LabkeepError) else f"{type(exc).__name__}: {exc}"
        with keep.catalog.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(state="failed", finished_at=utcnow(), error=f"not submitted: {message}")
            )
        remove_tree(scratch)
        raise
    with keep.catalog.write() as session:
        row = session.get_one(Run, run_id)
        row.argv = json.dumps(argv)
        row.environment = json.dumps(env_info.get("environment", {}))
        if env_info.get("container"):
            row.container = json.dumps(env_info["container"])
        row.slurm_job_id = str(slurm_job)
        row.slurm = json.dumps({"resources": request.slurm, "scratch": str(scratch)})
        job = jobs.enqueue(
            keep,
            "run-slurm",
            {"run": run_id},
            target=get_target(session, row),
            unique_key=f"run-slurm:{run_id}",
            session=session,
        )
        row.job_id = job.id
    return get_run(keep, run_id)


def get_target(session: Any, row: Run) -> str:
    from labkeep.catalog import Dataset, Project

    dataset, project = session.execute(
        select(Dataset, Project)
        .join(Project, Project.id == Dataset.project_id)
        .where(Dataset.id == row.output_dataset_id)
    ).one()
    return f"{project.name}/{dataset.name}"


def queue_local(keep: Keep, request: RunRequest) -> dict[str, Any]:
    """Record a local run and queue it for a worker (``run --background``)."""
    from labkeep.ops import jobs

    run_id = create_run(keep, request, state="queued")
    with keep.catalog.write() as session:
        row = session.get_one(Run, run_id)
        job = jobs.enqueue(
            keep,
            "run",
            {"run": run_id},
            target=get_target(session, row),
            unique_key=f"run:{run_id}",
            session=session,
        )
        row.job_id = job.id
    return get_run(keep, run_id)


def _authorize(keep: Keep, args: dict[str, Any]) -> str:
    from labkeep.ops._access import find_dataset

    try:
        run_id = int(args["run"])
    except (KeyError, TypeError, ValueError):
        raise UsageError("a run job needs {'run': RUN_ID}") from None
    with keep.catalog.read() as session:
        row = session.get(Run, run_id) if 0 < run_id < 2**63 else None
        if row is None:
            raise NotFound(f"no run {run_id}")
        target = get_target(session, row)
        project, name = target.split("/", 1)
        find_dataset(keep, session, project, name, "dataset.save")
    return target


@handler("run", authorize=_authorize, describe=lambda a: f"run {a.get('run')}", max_attempts=1)
def run_job(ctx: JobContext) -> dict[str, Any]:
    """A queued local run, executed by a worker (its output goes to the run's folder)."""
    from labkeep.ops.runs import execute, execute_rerun

    run_id = int(ctx.args["run"])
    with ctx.keep.catalog.read() as session:
        row = session.get_one(Run, run_id)
        state, rerun_of = row.state, row.rerun_of
    if state != "queued":
        return {"run": run_id, "state": state}
    if rerun_of is not None:
        record = execute_rerun(ctx.keep, run_id, echo=False)
    else:
        record = execute(ctx.keep, run_id, echo=False, cancel=ctx.cancel)
    return {"run": run_id, "state": record["state"], "version": record["version"]}


@handler("run-slurm", authorize=_authorize, describe=lambda a: f"follow SLURM run {a.get('run')}")
def follow_slurm(ctx: JobContext) -> dict[str, Any]:
    """Ask SLURM about a run's job; when it has ended, bring the outputs home."""
    keep = ctx.keep
    run_id = int(ctx.args["run"])
    with keep.catalog.read() as session:
        row = session.get_one(Run, run_id)
        state, job_id = row.state, row.slurm_job_id
        slurm_info = _loads(row.slurm, {})
        settings = _loads(row.settings, {})
    if state not in ("queued", "running") or not job_id:
        return {"run": run_id, "state": state}
    slurm = _slurm()
    status = slurm.status(job_id)
    if not status.finished:
        values: dict[str, Any] = {}
        if status.state == "running" and state != "running":
            values.update(state="running", started_at=status.start or utcnow())
        nodes = ",".join(status.nodes)
        if nodes and slurm_info.get("nodes") != nodes:
            slurm_info["nodes"] = nodes
            values["slurm"] = json.dumps(slurm_info)
        if values:
            with keep.catalog.write() as session:
                session.execute(update(Run).where(Run.id == run_id).values(**values))
        raise ctx.defer(
            keep.config.runs_poll_seconds,
            f"SLURM job {job_id}: {status.state}"
            + (f" ({status.reason})" if status.reason else ""),
        )
    return _bring_home(keep, run_id, job_id, status, slurm_info, settings)


def _bring_home(
    keep: Keep,
    run_id: int,
    job_id: str,
    status: Any,
    slurm_info: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    from labkeep.ops.slurm import stderr_tail

    scratch = scratch_of(keep, run_id)
    home = keep.config.runs_path / str(run_id)
    remove_tree(home)
    (home / "outputs").mkdir(parents=True)
    extra_error = ""
    try:
        _copy_back(scratch / "outputs", home / "outputs")
    except (OSError, LabkeepError) as exc:
        extra_error = f"outputs could not be copied back from the scratch: {exc}"
    try:
        tail = str(stderr_tail(scratch / "slurm", job_id, 20))
    except OSError:
        tail = ""
    slurm_info.update(
        state=status.slurm_state,
        nodes=",".join(status.nodes) or slurm_info.get("nodes"),
        tasks=[_task(t) for t in status.tasks],
    )
    code = status.exit_code
    if code is None:  # ended by a signal (scancel, time limit, OOM killer)
        signals = [t.signal for t in status.tasks if t.signal]
        code = -signals[0] if signals else -1
    if status.state == "timeout":
        extra_error = extra_error or "the SLURM job hit its time limit (TIMEOUT)"
    elif status.state == "failed" and code == 0:
        extra_error = extra_error or f"the SLURM job ended as {status.slurm_state}"
    elif status.state == "unknown":
        extra_error = extra_error or "SLURM no longer knows the job; its outcome is unknown"
    with keep.catalog.write() as session:
        values: dict[str, Any] = {"slurm": json.dumps(slurm_info)}
        row = session.get_one(Run, run_id)
        if row.started_at is None:
            values["started_at"] = status.start or row.created_at
        session.execute(update(Run).where(Run.id == run_id).values(**values))
    record = finish(
        keep,
        run_id,
        home / "outputs",
        code,
        tail,
        cleanup=home,
        cancelled=status.state == "cancelled",
        save_failed=bool(settings.get("save_failed")),
        extra_error=extra_error,
        save=bool(settings.get("save", True)),
    )
    if status.end is not None:
        with keep.catalog.write() as session:
            session.execute(update(Run).where(Run.id == run_id).values(finished_at=status.end))
        record = get_run(keep, run_id)
    if record.get("rerun_of") is not None:
        record = attach_comparison(keep, record)
    if record["state"] == "done" or not (scratch / "outputs").exists():
        remove_tree(scratch)
    else:  # a failed job's scratch stays for a look (its outputs and logs); inputs go
        remove_tree(scratch / "inputs")
    remove_tree(home)
    return {"run": run_id, "state": record["state"], "version": record["version"]}


def _task(task: Any) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "state": task.state,
        "slurm_state": task.slurm_state,
        "exit_code": task.exit_code,
        "signal": task.signal,
        "node": task.node,
        "start": isoformat(task.start),
        "end": isoformat(task.end),
    }


def _copy_back(src: Path, dst: Path) -> None:
    """Copy the outputs from the scratch, each file hashed on both sides."""
    for current, dirs, names in os.walk(src):
        dirs.sort()
        rel_dir = os.path.relpath(current, src)
        target_dir = dst if rel_dir == "." else dst / rel_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            source = os.path.join(current, name)
            if os.path.islink(source) or not os.path.isfile(source):
                continue
            before = hash_file(source)
            copied = copy_hash(source, str(target_dir / name), fsync=False)
            if copied.sha256 != before.sha256:
                raise LabkeepError(
                    f"{os.path.relpath(source, src)} changed while it was copied back "
                    "from the scratch (SHA-256 differs)"
                )


def cancel_run(keep: Keep, run_id: int) -> dict[str, Any]:
    """Cancel a queued or running run: its SLURM job (scancel) or its queued job."""
    from labkeep.ops import jobs
    from labkeep.ops.runs import _visible_run

    with keep.catalog.read() as session:
        row = _visible_run(keep, session, run_id)
        state, executor, slurm_job, job_id = row.state, row.executor, row.slurm_job_id, row.job_id
        target = get_target(session, row)
        from labkeep.ops._access import find_dataset

        project, name = target.split("/", 1)
        find_dataset(keep, session, project, name, "dataset.save")
    if state not in ("queued", "running"):
        raise UsageError(f"run {run_id} is {state}: nothing to cancel")
    if executor == "slurm" and slurm_job:
        _slurm().cancel(slurm_job)  # the worker that follows it records the end
    elif job_id is not None:
        jobs.cancel_job(keep, job_id, checked=True)  # may save here: may stop its job
        if state == "queued":
            with keep.catalog.write() as session:
                session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.state == "queued")
                    .values(
                        state="cancelled", finished_at=utcnow(), error="cancelled before it ran"
                    )
                )
    else:
        raise UsageError(
            f"run {run_id} runs in a terminal: stop it there (Ctrl-C)",
        )
    return get_run(keep, run_id, outputs=False)
