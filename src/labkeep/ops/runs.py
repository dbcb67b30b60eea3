"""Runs: a command recorded with its pinned inputs, environment and hashed outputs.

``run`` answers "which version of which script made these outputs from which version of
what data, with which software?". Write order, so that no run record is ever lost and
no version is half made (DataLad #7925 lost records under concurrency):

1. the run record is committed first (state ``running``, or ``queued`` for SLURM and
   background runs) with each input pinned to a version and that version's manifest
   SHA-256;
2. inputs are staged read-only in the run's own folder (``[runs] staging``): a symbolic
   link to a sealed, immutable tree file (nothing can write through it), else a copy
   read from the tree or a store and checked against its SHA-256 (mode 0444). Outputs
   go to the run's own ``outputs/`` folder, so concurrent runs never mix;
3. the command runs with ``{inputs}`` / ``{outputs}`` replaced (locally here, or as a
   SLURM job followed by workers; see :mod:`labkeep.ops.run_slurm`);
4. the outputs are hashed, recorded on the run, written with a ``provenance/run-N.json``
   into the output dataset's working tree under the dataset's lease (saves from any
   host take turns in the catalog), and saved as one version pointing to the run;
5. the record is finished (done / failed / cancelled, exit code, stderr tail).

A failed command saves no version unless asked (``save_failed``). A ``labkeep run``
process that dies leaves a record in ``running``: it is marked failed when it is next
looked at from its host (the process is gone), or by any worker's reaper.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from labkeep.catalog import Dataset, Project, Run, RunInput, RunOutput, Version
from labkeep.clock import isoformat, utcnow
from labkeep.errors import LabkeepError, NotFound, UsageError, from_os_error
from labkeep.integrity.hashing import hash_file
from labkeep.names import MAX_MESSAGE, check_text, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.audit import append_event
from labkeep.results import Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

#: states of a run record
ACTIVE = ("queued", "running", "saving")
FINISHED = ("done", "failed", "cancelled")
#: where a run's record travels with its outputs, in the output dataset
PROVENANCE_DIR = "provenance"
STDERR_TAIL_LINES = 20


class RunFailed(LabkeepError):
    """The command ran and failed (its exit code, or a signal): the record says why."""

    code = "run-failed"
    exit_code = 1


@dataclass
class Pinned:
    dataset_id: int
    address: str  # P/D
    version: int
    manifest_sha256: str | None
    path: str = ""

    @property
    def label(self) -> str:
        where = f"{self.address}/{self.path}" if self.path else self.address
        return f"{where}@{self.version}"


@dataclass
class Staged:
    inputs: list[Path]
    outputs: Path
    linked: int = 0
    copied: int = 0
    bytes: int = 0


@dataclass
class RunRequest:
    command: list[str]
    inputs: list[str] = field(default_factory=list)
    output: str = ""
    message: str = ""
    container: str | None = None
    slurm: str | None = None
    save_failed: bool = False
    cwd: str = ""


# -- creating the record -------------------------------------------------------------------
def pin_inputs(keep: Keep, session: Session, inputs: list[str]) -> list[Pinned]:
    """Each ``P/D[/PATH][@N]`` pinned to a committed version (the head if none)."""
    pinned = []
    for text in inputs:
        addr = parse_address(text, need_dataset=True)
        assert addr.dataset is not None
        _, dataset = find_dataset(
            keep, session, addr.project, addr.dataset, "dataset.download", version=addr.version
        )
        number = addr.version if addr.version is not None else dataset.head_version
        row = session.execute(
            select(Version).where(
                Version.dataset_id == dataset.id,
                Version.number == number,
                Version.state == "committed",
            )
        ).scalar_one_or_none()
        if row is None:
            raise UsageError(
                f"{addr.dataset_address} has no version {number}"
                if number
                else f"{addr.dataset_address} has no version yet: nothing to read",
                hint=f"'labkeep log {addr.dataset_address}' lists its versions",
            )
        pinned.append(
            Pinned(dataset.id, addr.dataset_address, number, row.manifest_sha256, addr.path or "")
        )
    return pinned


def create_run(
    keep: Keep,
    request: RunRequest,
    *,
    executor: str = "local",
    state: str = "running",
    rerun_of: int | None = None,
    settings: dict[str, Any] | None = None,
) -> int:
    """Check and record a run before anything runs: its id."""
    if not request.command:
        raise UsageError("no command to run", hint="labkeep run -o P/D -- COMMAND ARGS...")
    check_text(request.message, "the message", MAX_MESSAGE)
    out = parse_address(request.output, need_dataset=True)
    assert out.dataset is not None
    if out.path or out.version is not None:
        raise UsageError(
            f"the output is a dataset, not {request.output!r}",
            hint="-o PROJECT/DATASET (outputs land at the paths the command writes)",
        )
    if not keep.principal.authenticated or keep.principal.read_only:
        from labkeep.errors import Forbidden

        raise Forbidden("recording a run needs a labkeep account that may write")
    now = utcnow()
    with keep.catalog.write() as session:
        pinned = pin_inputs(keep, session, request.inputs)
        _, dataset = find_dataset(keep, session, out.project, out.dataset, "dataset.save")
        if dataset.kind == "release":
            from labkeep.errors import SealedError

            raise SealedError(f"{out.dataset_address} is a release: it takes no new outputs")
        row = Run(
            state=state,
            message=request.message,
            command=json.dumps(request.command),
            argv="[]",
            cwd=request.cwd or os.getcwd(),
            output_dataset_id=dataset.id,
            executor=executor,
            created_by=keep.actor,
            created_at=now,
            environment="{}",
            container=json.dumps({"image": request.container}) if request.container else "",
            slurm=json.dumps({"resources": request.slurm}) if request.slurm is not None else "",
            owner="",
            error="",
            stderr_tail="",
            rerun_of=rerun_of,
            settings=json.dumps({"save_failed": request.save_failed, **(settings or {})}),
        )
        session.add(row)
        session.flush()
        for p in pinned:
            session.add(
                RunInput(
                    run_id=row.id,
                    dataset_id=p.dataset_id,
                    version=p.version,
                    manifest_sha256=p.manifest_sha256,
                    path=p.path,
                )
            )
        append_event(
            session,
            keep.actor,
            "run.create",
            out.dataset_address,
            {"run": row.id, "executor": executor, "inputs": [p.label for p in pinned]},
        )
        return row.id


# -- reading records -----------------------------------------------------------------------
def _loads(text: str, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _record(keep: Keep, session: Session, run: Run, *, outputs: bool = True) -> dict[str, Any]:
    dataset, project = session.execute(
        select(Dataset, Project)
        .join(Project, Project.id == Dataset.project_id)
        .where(Dataset.id == run.output_dataset_id)
    ).one()
    inputs: list[dict[str, Any]] = []
    seen: dict[int, bool] = {}
    for ri, d, p in session.execute(
        select(RunInput, Dataset, Project)
        .join(Dataset, Dataset.id == RunInput.dataset_id)
        .join(Project, Project.id == Dataset.project_id)
        .where(RunInput.run_id == run.id)
        .order_by(RunInput.id)
    ):
        if not _may_see(keep, session, p, d, seen):
            # what a viewer may not read is not named to them (nor its digest)
            inputs.append(
                {"address": "(a dataset you may not see)", "dataset": None, "path": None,
                 "version": None, "manifest_sha256": None, "url": None, "hidden": True}
            )  # fmt: skip
            continue
        address = f"{p.name}/{d.name}"
        where = f"{address}/{ri.path}" if ri.path else address
        inputs.append(
            {
                "address": f"{where}@{ri.version}",
                "dataset": address,
                "path": ri.path or None,
                "version": ri.version,
                "manifest_sha256": ri.manifest_sha256,
                "url": _landing(keep, address, ri.version),
            }
        )
    record: dict[str, Any] = {
        "id": run.id,
        "state": run.state,
        "message": run.message,
        "command": _loads(run.command, []),
        "argv": _loads(run.argv, []),
        "cwd": run.cwd,
        "output_dataset": f"{project.name}/{dataset.name}",
        "version": run.version,
        "inputs": inputs,
        "environment": _loads(run.environment, {}),
        "container": _loads(run.container, None) or None,
        "exit_code": run.exit_code,
        "created_at": isoformat(run.created_at),
        "started_at": isoformat(run.started_at) if run.started_at else None,
        "finished_at": isoformat(run.finished_at) if run.finished_at else None,
        "duration_seconds": (
            round((run.finished_at - run.started_at).total_seconds(), 3)
            if run.started_at and run.finished_at
            else None
        ),
        "user": run.created_by,
        "executor": run.executor,
        "job_id": run.job_id,
        "slurm": (
            {"job_id": run.slurm_job_id, **_loads(run.slurm, {})}
            if run.executor == "slurm"
            else None
        ),
        "error": run.error,
        "stderr_tail": run.stderr_tail,
        "rerun_of": run.rerun_of,
        "settings": _loads(run.settings, {}),
    }
    if outputs:
        record["outputs"] = [
            {"path": path, "size": size, "sha256": bytes(sha).hex()}
            for path, size, sha in session.execute(
                select(RunOutput.path, RunOutput.size, RunOutput.sha256)
                .where(RunOutput.run_id == run.id)
                .order_by(RunOutput.path)
            )
        ]
    return record


def _may_see(
    keep: Keep, session: Session, project: Project, dataset: Dataset, seen: dict[int, bool]
) -> bool:
    from labkeep.access.policy import can_see_dataset
    from labkeep.ops._access import project_resource

    if dataset.id not in seen:
        seen[dataset.id] = keep.principal.site_admin or can_see_dataset(
            keep.principal, project_resource(session, project, dataset)
        )
    return seen[dataset.id]


def _landing(keep: Keep, address: str, version: int) -> str | None:
    base = keep.config.web.base_url
    if not base:
        return None
    from urllib.parse import quote

    project, name = address.split("/", 1)
    return f"{base}/p/{quote(project, safe='')}/{quote(name, safe='')}/@{version}"


def _visible_run(keep: Keep, session: Session, run_id: int) -> Run:
    # (an id no catalog integer can hold is simply not a run)
    run = session.get(Run, run_id) if 0 < run_id < 2**63 else None
    if run is None:
        raise NotFound(f"no run {run_id}", hint="'labkeep runs' lists the runs you may see")
    dataset, project = session.execute(
        select(Dataset, Project)
        .join(Project, Project.id == Dataset.project_id)
        .where(Dataset.id == run.output_dataset_id)
    ).one()
    try:
        find_dataset(keep, session, project.name, dataset.name, "dataset.read")
    except NotFound:
        raise NotFound(
            f"no run {run_id}", hint="'labkeep runs' lists the runs you may see"
        ) from None
    return run


def get_run(keep: Keep, run_id: int, *, outputs: bool = True) -> dict[str, Any]:
    """A run's record (the shape of ``labkeep runs --json`` and of provenance.json)."""
    reap_dead_runs(keep)
    with keep.catalog.read() as session:
        run = _visible_run(keep, session, run_id)
        return _record(keep, session, run, outputs=outputs)


def list_runs(
    keep: Keep,
    address: str | None = None,
    *,
    limit: int = 100,
    state: str | None = None,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first: of one output dataset, or every run the principal may see; with
    *before*, only runs older than that id (the next page: the last id shown)."""
    if state and state not in ACTIVE + FINISHED:
        raise UsageError(f"no run state {state!r}", hint=f"one of {', '.join(ACTIVE + FINISHED)}")
    reap_dead_runs(keep)
    with keep.catalog.read() as session:
        query = select(Run).order_by(Run.id.desc())
        if before is not None:
            query = query.where(Run.id < before)
        if address:
            addr = parse_address(address, need_dataset=True)
            assert addr.dataset is not None
            _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
            query = query.where(Run.output_dataset_id == dataset.id)
        if state:
            query = query.where(Run.state == state)
        found: list[dict[str, Any]] = []
        seen: dict[int, bool] = {}
        for run in session.execute(query.execution_options(yield_per=200)).scalars():
            if run.output_dataset_id not in seen:
                try:
                    _visible_run(keep, session, run.id)
                    seen[run.output_dataset_id] = True
                except NotFound:
                    seen[run.output_dataset_id] = False
            if seen[run.output_dataset_id]:
                found.append(_record(keep, session, run, outputs=False))
                if len(found) >= limit:
                    break
        return found


def runs_from(
    keep: Keep, address: str, version: int | None = None, *, limit: int = 200
) -> list[dict[str, Any]]:
    """The runs that read ``P/D`` (at *version*, or any): "what was made from it"; the
    newest *limit* of them, less those the principal may not see."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        query = (
            select(Run)
            .join(RunInput, RunInput.run_id == Run.id)
            .where(RunInput.dataset_id == dataset.id)
            .order_by(Run.id.desc())
            .limit(limit)
        )
        if version is not None:
            query = query.where(RunInput.version == version)
        found = []
        for run in session.execute(query).scalars().unique():
            try:
                _visible_run(keep, session, run.id)
            except NotFound:
                continue
            found.append(_record(keep, session, run, outputs=False))
        return found


def reap_dead_runs(keep: Keep) -> int:
    """Mark failed the local runs whose ``labkeep run`` process on this host is gone."""
    from labkeep.ops.leases import dead_here

    host = socket.gethostname()
    with keep.catalog.read() as session:
        rows = session.execute(
            select(Run.id, Run.owner).where(
                Run.state.in_(("running", "saving")), Run.owner.like(f"{host}:%")
            )
        ).all()
    dead = [run_id for run_id, owner in rows if owner and dead_here(owner)]
    for run_id in dead:
        with keep.catalog.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.state.in_(("running", "saving")))
                .values(
                    state="failed",
                    finished_at=utcnow(),
                    error="the labkeep process running it died (killed?) before it finished; "
                    "no version was saved by it",
                )
            )
    return len(dead)


# -- staging -------------------------------------------------------------------------------
def stage_inputs(keep: Keep, pinned: list[Pinned], folder: Path, *, links: bool = True) -> Staged:
    """Each pinned input below *folder*/PROJECT/DATASET, read-only: links to immutable
    (sealed) tree files where *links*, else copies checked against their SHA-256."""
    from labkeep.integrity.immutable import get_immutable
    from labkeep.ops.content import open_content

    staged = Staged([], folder.parent / "outputs")
    #: the version each dataset is staged at under its own name; another version of
    #: the same dataset goes beside it as NAME@N
    first: dict[str, int] = {}
    for p in pinned:
        project, name = p.address.split("/", 1)
        at = first.setdefault(p.address, p.version)
        base = folder / project / (name if at == p.version else f"{name}@{p.version}")
        base.mkdir(parents=True, exist_ok=True)
        address = f"{p.address}/{p.path}@{p.version}" if p.path else f"{p.address}@{p.version}"
        stream = keep.stream_entries(address)
        for entry in stream.entries:
            rel = entry["path"]
            dest = base / rel
            if os.path.lexists(dest):  # staged already, for an input given twice
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tree = keep.tree.file_path(project, name, rel)
            try:
                st = os.lstat(tree)
                quick = (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == entry["size"]
                    and st.st_mtime_ns == entry["mtime_ns"]
                )
            except OSError:
                quick = False
            if links and quick and get_immutable(str(tree)):
                os.symlink(tree, dest)
                staged.linked += 1
                continue
            import hashlib

            digest = hashlib.sha256()
            with (
                open_content(
                    keep, tree, entry["size"], bytes.fromhex(entry["sha256"]), entry["mtime_ns"]
                ) as src,
                open(dest, "xb") as out,
            ):
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise LabkeepError(
                    f"{p.address}/{rel}@{p.version} does not match its SHA-256 in the catalog: "
                    "the run was not started",
                    hint=f"run 'labkeep verify {p.address} --repair', then run it again",
                )
            os.chmod(dest, 0o444)
            os.utime(dest, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            staged.copied += 1
            staged.bytes += entry["size"]
        staged.inputs.append(base / p.path if p.path else base)
    _read_only_dirs(folder)
    return staged


def _read_only_dirs(folder: Path) -> None:
    for current, dirs, _files in os.walk(folder, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(current, d), 0o555)  # noqa: S103 (read-only)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o555)  # noqa: S103 (read-only)


def remove_tree(folder: Path) -> None:
    """Remove a staging folder (made read-only on purpose)."""
    if not folder.exists():
        return
    for current, dirs, _files in os.walk(folder):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(current, d), 0o755)  # noqa: S103 (to remove it)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o755)  # noqa: S103 (to remove it)
    shutil.rmtree(folder, ignore_errors=True)


def expand(command: list[str], inputs: list[Path], outputs: Path) -> list[str]:
    """``{inputs}`` (one argument per input), ``{inputs[i]}``, ``{input}`` (the first),
    ``{outputs}``/``{output}`` replaced; ``{{`` and ``}}`` stand for braces."""
    argv: list[str] = []
    names = {"outputs": str(outputs), "output": str(outputs)}
    if inputs:
        names["input"] = str(inputs[0])
    for arg in command:
        if arg == "{inputs}":
            argv.extend(str(i) for i in inputs)
            continue
        text = arg.replace("{{", "\0").replace("}}", "\1")
        for i, one in enumerate(inputs):
            text = text.replace(f"{{inputs[{i}]}}", str(one))
        text = text.replace("{inputs}", " ".join(shlex.quote(str(i)) for i in inputs))
        for key, value in names.items():
            text = text.replace(f"{{{key}}}", value)
        if "{inputs[" in text or "{input}" in text:
            raise UsageError(f"{arg!r} names an input the run does not have")
        argv.append(text.replace("\0", "{").replace("\1", "}"))
    return argv


# -- running locally -----------------------------------------------------------------------
def run(
    keep: Keep,
    request: RunRequest,
    *,
    echo: bool = True,
    on_result: Callable[[Result], None] | None = None,
) -> dict[str, Any]:
    """Record and run a command locally (in the foreground), saving its outputs as a
    version of the output dataset; or, with ``request.slurm``, submit it to SLURM and
    return at once (a worker follows it). Returns the run's record."""
    if request.slurm is not None:
        from labkeep.ops.run_slurm import submit

        return submit(keep, request)
    run_id = create_run(keep, request)
    return execute(keep, run_id, echo=echo, on_result=on_result)


def execute(
    keep: Keep,
    run_id: int,
    *,
    echo: bool = True,
    on_result: Callable[[Result], None] | None = None,
    cancel: threading.Event | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Run a recorded (local) run now: stage, execute, save (unless not *save*: a rerun
    that is only compared), finish the record."""
    from labkeep.ops.leases import owner_id

    folder = keep.config.runs_path / str(run_id)
    with keep.catalog.write() as session:
        row = session.get_one(Run, run_id)
        if row.state in FINISHED:
            raise UsageError(f"run {run_id} already ran ({row.state})")
        row.state, row.owner, row.started_at = "running", owner_id(), utcnow()
        command = _loads(row.command, [])
        cwd = row.cwd
        container = _loads(row.container, None)
        settings = _loads(row.settings, {})
    pinned = _pinned_of(keep, run_id)
    try:
        remove_tree(folder)
        folder.mkdir(parents=True)
        staged = stage_inputs(keep, pinned, folder / "inputs")
        staged.outputs.mkdir()
        argv = expand(command, staged.inputs, staged.outputs)
        env_info = _environment(container)
        if container:
            argv = _in_container(keep, env_info, argv, staged)
        with keep.catalog.write() as session:
            row = session.get_one(Run, run_id)
            row.argv = json.dumps(argv)
            row.environment = json.dumps(env_info.get("environment", {}))
            if env_info.get("container"):
                row.container = json.dumps(env_info["container"])
            row.settings = json.dumps(
                {**settings, "staged": {"linked": staged.linked, "copied": staged.copied}}
            )
        code, tail = _execute(
            argv, cwd if os.path.isdir(cwd) else str(folder), folder, echo, cancel
        )
    except LabkeepError as exc:
        _end(keep, run_id, "failed", error=exc.message)
        remove_tree(folder)
        raise
    except KeyboardInterrupt:
        _end(keep, run_id, "cancelled", error="interrupted (Ctrl-C); no version was saved")
        remove_tree(folder)
        raise
    except OSError as exc:
        what = exc.filename or command[0]
        message = f"the command could not be started: {exc.strerror or exc} ({what})"
        _end(keep, run_id, "failed", error=message, exit_code=127)
        remove_tree(folder)
        raise RunFailed(message, hint="check the command's name and path") from None
    except Exception as exc:
        # anything unforeseen still ends the record (never a run "running" forever)
        _end(keep, run_id, "failed", error=f"labkeep failed: {type(exc).__name__}: {exc}")
        remove_tree(folder)
        raise
    cancelled = cancel is not None and cancel.is_set()
    record = finish(
        keep,
        run_id,
        staged.outputs,
        code,
        tail,
        cleanup=folder,
        cancelled=cancelled,
        save_failed=bool(settings.get("save_failed")),
        on_result=on_result,
        save=save,
    )
    if not save:  # compared, never saved: nothing to look at later
        remove_tree(folder)
    return record


def _pinned_of(keep: Keep, run_id: int) -> list[Pinned]:
    with keep.catalog.read() as session:
        rows = session.execute(
            select(RunInput, Dataset, Project)
            .join(Dataset, Dataset.id == RunInput.dataset_id)
            .join(Project, Project.id == Dataset.project_id)
            .where(RunInput.run_id == run_id)
            .order_by(RunInput.id)
        ).all()
        return [
            Pinned(d.id, f"{p.name}/{d.name}", ri.version, ri.manifest_sha256, ri.path)
            for ri, d, p in rows
        ]


def _environment(container: dict[str, Any] | None) -> dict[str, Any]:
    from labkeep.ops import environment

    info: dict[str, Any] = {}
    if container and container.get("image"):
        info["container"] = environment.container_info(str(container["image"]))
    info["environment"] = environment.capture(container=info.get("container"))
    return info


def _in_container(keep: Keep, info: dict[str, Any], argv: list[str], staged: Staged) -> list[str]:
    from labkeep.ops import environment

    binds: list[tuple[str, str, bool]] = [(str(p), str(p), True) for p in staged.inputs]
    # links to sealed tree files resolve inside the tree: bind it read-only too
    tree = str(keep.tree.base)
    binds.append((tree, tree, True))
    binds.append((str(staged.outputs), str(staged.outputs), False))
    return environment.container_argv(info["container"], argv, binds)


def _execute(
    argv: list[str],
    cwd: str,
    folder: Path,
    echo: bool,
    cancel: threading.Event | None,
) -> tuple[int, str]:
    """Run *argv*: its exit code (negative: killed by that signal) and its stderr tail.

    Its stdout and stderr go to the terminal when *echo* (stderr also through a tail
    kept here), else to files in the run's folder."""
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    log_out = open(folder / "stdout.log", "wb")  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL if not echo else None,
            stdout=None if echo else log_out,
            stderr=subprocess.PIPE,
            start_new_session=not echo,
        )
        assert proc.stderr is not None

        def pump() -> None:
            assert proc.stderr is not None
            with open(folder / "stderr.log", "wb") as log_err:
                for line in iter(proc.stderr.readline, b""):
                    log_err.write(line)
                    tail.append(line.decode("utf-8", "replace").rstrip("\n"))
                    if echo:
                        sys.stderr.buffer.write(line)
                        sys.stderr.flush()

        pumper = threading.Thread(target=pump, name="labkeep-run-stderr", daemon=True)
        pumper.start()
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    _stop(proc)
            except KeyboardInterrupt:
                _stop(proc)
                raise
        pumper.join(timeout=10)
        proc.stderr.close()  # else a ResourceWarning when the Popen is collected
    finally:
        log_out.close()
    return code, "\n".join(tail)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


# -- finishing -----------------------------------------------------------------------------
def hash_outputs(outputs: Path) -> tuple[list[tuple[str, int, bytes]], list[str]]:
    """(path, size, sha256) of every regular file below *outputs*, in byte-wise order,
    and the problems (symbolic links and other non-files are not outputs)."""
    files: list[tuple[str, int, bytes]] = []
    problems: list[str] = []
    for current, dirs, names in os.walk(outputs):
        dirs.sort()
        for name in names:
            path = os.path.join(current, name)
            rel = os.path.relpath(path, outputs)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel}: not a regular file (not saved)")
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"{rel!r}: the name is not UTF-8 (not saved)")
                continue
            hashed = hash_file(path)
            files.append((rel, hashed.size, hashed.sha256))
    files.sort(key=lambda f: f[0].encode("utf-8"))
    return files, problems


def finish(
    keep: Keep,
    run_id: int,
    outputs: Path,
    code: int,
    tail: str,
    *,
    cleanup: Path | None = None,
    cancelled: bool = False,
    save_failed: bool = False,
    extra_error: str = "",
    on_result: Callable[[Result], None] | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Record a run's outcome: hash its outputs, save them (when it succeeded, or with
    *save_failed*) as a version of the output dataset, and finish the record."""
    ok = code == 0 and not cancelled and not extra_error
    state = "done" if ok else ("cancelled" if cancelled else "failed")
    error = extra_error or ("" if ok else _why(code, cancelled))
    files, problems = hash_outputs(outputs) if outputs.is_dir() else ([], [])
    left_out = bool(problems)  # outputs no version can hold: they stay where they are
    with keep.catalog.write() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                state="saving" if (ok or save_failed) and save else state,
                exit_code=code,
                finished_at=utcnow(),
                stderr_tail=tail[-8000:],
                error=error,
            )
        )
        for start in range(0, len(files), 1000):
            session.execute(
                insert(RunOutput),
                [
                    {"run_id": run_id, "path": p, "size": s, "sha256": h}
                    for p, s, h in files[start : start + 1000]
                ],
            )
    if (ok or save_failed) and save:
        try:
            version = _save_outputs(keep, run_id, outputs, files, problems, on_result)
        except LabkeepError as exc:
            _end(
                keep,
                run_id,
                "failed",
                error=f"{error + '; ' if error else ''}outputs not saved: {exc.message}",
            )
            raise
        with keep.catalog.write() as session:
            session.execute(
                update(Run).where(Run.id == run_id).values(state=state, version=version)
            )
        if cleanup is not None and left_out:
            # what could not be saved stays where the command wrote it, never deleted
            remove_tree(cleanup / "inputs")
            problems.append(f"the files not saved are kept in {outputs}")
        elif cleanup is not None:
            remove_tree(cleanup)
    elif cleanup is not None:
        # a failed run's outputs stay for inspection; its staged inputs go
        remove_tree(cleanup / "inputs")
    record = get_run(keep, run_id)
    if problems:
        record["problems"] = problems
    with keep.catalog.write() as session:
        append_event(
            session,
            keep.actor,
            "run.finish",
            record["output_dataset"],
            {"run": run_id, "state": state, "exit_code": code, "version": record["version"]},
        )
    return record


def _why(code: int, cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"the command exited with code {code}"


def _end(keep: Keep, run_id: int, state: str, *, error: str, exit_code: int | None = None) -> None:
    with keep.catalog.write() as session:
        values: dict[str, Any] = {"state": state, "error": error, "finished_at": utcnow()}
        if exit_code is not None:
            values["exit_code"] = exit_code
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def _save_outputs(
    keep: Keep,
    run_id: int,
    outputs: Path,
    files: list[tuple[str, int, bytes]],
    problems: list[str],
    on_result: Callable[[Result], None] | None,
) -> int | None:
    """Move the outputs into the output dataset's working tree with the run's
    provenance file, and save exactly those files as one version, under the lease."""
    from labkeep.ops.save import dataset_lock, history_store, save

    record = get_run(keep, run_id)
    project, name = str(record["output_dataset"]).split("/", 1)
    record["problems"] = problems
    prov_rel = f"{PROVENANCE_DIR}/run-{run_id}.json"
    paths = [p for p, _, _ in files] + [prov_rel]
    root = keep.tree.dataset_dir(project, name)
    from labkeep.integrity.manifest import MANIFEST_NAME
    from labkeep.storage._tree import PRIVATE_DIR

    for rel, _, _ in files:  # the dataset's own files and raw/ are not a run's to write
        top = rel.split("/", 1)[0]
        if top in (PRIVATE_DIR, "raw") or rel == MANIFEST_NAME:
            raise UsageError(
                f"output {rel!r} would replace labkeep's own files or raw/ (write-once)",
                hint="write outputs into folders of their own (e.g. masks/, tables/)",
            )
    with dataset_lock(keep, project, name, f"run {run_id}", 3600.0):
        clashes = _clashes(root, [p for p, _, _ in files])
        if clashes:  # checked for all before any output moves: all or nothing
            raise UsageError(
                f"{len(clashes)} outputs clash with {project}/{name}'s working tree "
                f"({'; '.join(clashes[:3])}): nothing was saved; the outputs are kept in "
                f"{outputs}",
                hint="rename or move what is in the way, or write the outputs elsewhere",
            )
        protected = _keep_unsaved(keep, root, [p for p, _, _ in files], history_store)
        if protected:
            record["replaced_unsaved"] = protected
            problems.extend(
                f"{one['path']}: its unsaved changes were replaced by the output; their bytes "
                f"are kept in the versions store (SHA-256 {one['sha256']})"
                for one in protected
            )
        for rel, _, _ in files:
            dest = root / rel
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(outputs / rel, dest)
                except OSError as exc:
                    if exc.errno != 18:  # EXDEV: the staging is on another filesystem
                        raise
                    shutil.copy2(outputs / rel, dest)
            except OSError as exc:
                raise from_os_error(exc, f"moving output {rel} into {project}/{name}") from None
        prov = root / prov_rel
        prov.parent.mkdir(parents=True, exist_ok=True)
        prov.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        message = record["message"] or f"run {run_id}: {shlex.join(record['command'])[:200]}"
        report = save(
            keep,
            f"{project}/{name}",
            message=message,
            files=paths,
            kind="run",
            run_id=run_id,
            on_result=on_result,
            _locked=True,
        )
    if report.failed:
        raise LabkeepError(
            "; ".join(f"{r.path}: {r.message}" for r in report.results if r.status == "error")[:500]
        )
    # the saved bytes must be the ones hashed in the staging folder
    saved = {r.path: r.sha256 for r in report.results if r.status == "ok"}
    for rel, _, sha in files:
        if rel in saved and saved[rel] != sha.hex():
            raise LabkeepError(f"output {rel} changed between the run and its save")
    version = report.info.get("version")
    if version is None:  # every output equal to the head: nothing new to save
        with keep.catalog.read() as session:
            version = session.execute(
                select(Dataset.head_version).where(
                    Dataset.id
                    == select(Run.output_dataset_id).where(Run.id == run_id).scalar_subquery()
                )
            ).scalar_one()
    return int(version) if version else None


def _clashes(root: Path, paths: list[str]) -> list[str]:
    """Outputs that cannot take their place in the working tree: a folder where a file
    goes, or a file where one of its folders goes."""
    found: list[str] = []
    checked: set[str] = set()
    for rel in paths:
        dest = root / rel
        if dest.is_dir() and not dest.is_symlink():
            found.append(f"{rel} is a folder there")
            continue
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder in checked:
                continue
            checked.add(folder)
            where = root / folder
            if os.path.lexists(where) and (where.is_symlink() or not where.is_dir()):
                found.append(f"{folder} is a file there, not a folder")
                break
    return found


def _keep_unsaved(keep: Keep, root: Path, paths: list[str], store_of: Any) -> list[dict[str, Any]]:
    """Before outputs replace files in the working tree that hold changes nobody saved,
    keep those bytes in the versions store (so nothing is lost); what was kept (path,
    size, SHA-256: 'labkeep whereis' finds a content by its hash)."""
    from labkeep.catalog import Entry

    candidates = [p for p in paths if (root / p).is_file()]
    if not candidates:
        return []
    project, name = root.parent.name, root.name
    with keep.catalog.read() as session:
        dataset_id = session.execute(
            select(Dataset.id)
            .join(Project, Project.id == Dataset.project_id)
            .where(Project.name == project, Dataset.name == name)
        ).scalar_one()
        known = {}
        for start in range(0, len(candidates), 500):
            for path, size, mtime in session.execute(
                select(Entry.path, Entry.size, Entry.mtime_ns).where(
                    Entry.dataset_id == dataset_id,
                    Entry.valid_to.is_(None),
                    Entry.path.in_(candidates[start : start + 500]),
                )
            ):
                known[path] = (size, mtime)
    unsaved = []
    for p in candidates:
        st = os.lstat(root / p)
        if known.get(p) != (st.st_size, st.st_mtime_ns):
            unsaved.append(p)
    kept: list[dict[str, Any]] = []
    if unsaved:
        from labkeep.ops._copying import record

        store_id, store = store_of(keep)
        try:
            rows = []
            for p in unsaved:
                hashed, stored = store.put_new_file(str(root / p))
                kept.append({"path": p, "size": hashed.size, "sha256": hashed.sha256.hex()})
                rows.append(
                    {
                        "sha256": hashed.sha256,
                        "size": hashed.size,
                        "key": stored.key,
                        "checked_by": "hash",
                        "retain_until": None,
                    }
                )
            record(keep, store_id, rows)
        finally:
            store.close()
    return kept


# -- rerun ---------------------------------------------------------------------------------
def _pinned_image(container: dict[str, Any] | None) -> str | None:
    """The original run's image, pinned to the digest it had then: Docker/Podman run
    ``repo@sha256:...``; an Apptainer image must still have that digest (else refused)."""
    if not container or not container.get("image"):
        return None
    image, digest = str(container["image"]), str(container.get("digest") or "")
    if not digest:
        return image
    if container.get("engine") in ("docker", "podman"):
        if "@" in image:
            return image
        repo = image.split("@", 1)[0]
        last = repo.rsplit("/", 1)[-1]
        if ":" in last:
            repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
        return f"{repo}@{digest.split('@')[-1]}"
    from labkeep.ops import environment

    now = environment.container_info(image)
    if now.get("digest") != digest:
        raise UsageError(
            f"the container {image} has changed since the run (digest {now.get('digest')}, "
            f"the run used {digest}): a rerun would not use the same software",
            hint="restore that image (e.g. from your registry or archive), then rerun",
        )
    return image


def compare_outputs(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """identical / differing / missing (only before) / new (only after), by path."""
    old = {o["path"]: o for o in before}
    new = {o["path"]: o for o in after}
    result: dict[str, list[dict[str, Any]]] = {
        "identical": [],
        "differing": [],
        "missing": [],
        "new": [],
    }
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a is None:
            assert b is not None
            result["new"].append({"path": path, "sha256": b["sha256"], "size": b["size"]})
        elif b is None:
            result["missing"].append({"path": path, "sha256": a["sha256"], "size": a["size"]})
        elif a["sha256"] == b["sha256"]:
            result["identical"].append({"path": path, "sha256": a["sha256"]})
        else:
            result["differing"].append(
                {
                    "path": path,
                    "old_sha256": a["sha256"],
                    "new_sha256": b["sha256"],
                    "old_size": a["size"],
                    "new_size": b["size"],
                }
            )
    return result


def rerun(
    keep: Keep,
    run_id: int,
    *,
    save: bool = False,
    echo: bool = True,
    local: bool = False,
) -> dict[str, Any]:
    """Run a recorded run again on the same pinned inputs (and container digest), and
    compare its outputs with the original's. With *save*, the outputs are saved as a new
    version; without, they are only compared (and the rerun is recorded)."""
    original = get_run(keep, run_id)
    if original["state"] in ACTIVE:
        raise UsageError(f"run {run_id} has not finished yet", hint="wait for it, then rerun")
    image = _pinned_image(original.get("container") or None)
    request = RunRequest(
        command=list(original["command"]),
        inputs=[i["address"] for i in original["inputs"]],
        output=original["output_dataset"],
        message=f"rerun of run {run_id}"
        + (f": {original['message']}" if original["message"] else ""),
        container=image,
        slurm=(original.get("slurm") or {}).get("resources") if not local else None,
        save_failed=False,
        cwd=original["cwd"],
    )
    settings = {"save": save, "compare_with": run_id}
    if request.slurm is not None:
        from labkeep.ops.run_slurm import submit

        return submit(keep, request, rerun_of=run_id, settings=settings)
    new_id = create_run(keep, request, rerun_of=run_id, settings=settings)
    return execute_rerun(keep, new_id, echo=echo)


def execute_rerun(keep: Keep, run_id: int, *, echo: bool = True) -> dict[str, Any]:
    record = get_run(keep, run_id)
    settings = record["settings"]
    done = execute(keep, run_id, echo=echo, save=bool(settings.get("save")))
    return attach_comparison(keep, done)


def attach_comparison(keep: Keep, record: dict[str, Any]) -> dict[str, Any]:
    """Compare a rerun's outputs with its original's and store that on the rerun."""
    original_id = record.get("rerun_of")
    if original_id is None:
        return record
    before = get_run(keep, int(original_id))["outputs"]
    after = list(record["outputs"])
    ignore = {
        f"{PROVENANCE_DIR}/run-{original_id}.json",
        f"{PROVENANCE_DIR}/run-{record['id']}.json",
    }
    comparison: dict[str, Any] = compare_outputs(
        [o for o in before if o["path"] not in ignore],
        [o for o in after if o["path"] not in ignore],
    )
    comparison["exit_code"] = {
        "before": get_run(keep, int(original_id), outputs=False)["exit_code"],
        "after": record["exit_code"],
    }
    with keep.catalog.write() as session:
        row = session.get_one(Run, record["id"])
        settings = _loads(row.settings, {})
        settings["comparison"] = {
            k: len(v) if isinstance(v, list) else v for k, v in comparison.items()
        }
        row.settings = json.dumps(settings)
    record["comparison"] = comparison
    return record


# -- the version that a run made -----------------------------------------------------------
def runs_of_version(keep: Keep, address: str) -> list[dict[str, Any]]:
    """The run that made ``P/D@N`` and the runs that made its earlier versions (the
    provenance of everything in that version), oldest first."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        number = addr.version if addr.version is not None else dataset.head_version
        if not session.execute(
            select(func.count())
            .select_from(Version)
            .where(
                Version.dataset_id == dataset.id,
                Version.number == number,
                Version.state == "committed",
            )
        ).scalar_one():
            raise UsageError(f"{addr.dataset_address} has no version {number}")
        ids = (
            session.execute(
                select(Version.run_id)
                .where(
                    Version.dataset_id == dataset.id,
                    Version.number <= number,
                    Version.run_id.is_not(None),
                )
                .order_by(Version.number)
            )
            .scalars()
            .all()
        )
        return [_record(keep, session, session.get_one(Run, i)) for i in ids if i is not None]


def environment_summary(env: dict[str, Any]) -> str:
    """One line: Python, OS, host, GPU."""
    parts = []
    py = env.get("python") or {}
    if py.get("version"):
        parts.append(f"Python {py['version']}")
    osi = env.get("os") or {}
    if osi.get("distribution") or osi.get("platform"):
        parts.append(str(osi.get("distribution") or osi.get("platform")))
    host = env.get("host")
    if isinstance(host, dict):
        host = host.get("hostname")
    if host:
        parts.append(f"on {host}")
    gpus = env.get("gpu") or []
    if gpus:
        parts.append(", ".join(str(g.get("name")) for g in gpus))
    return "; ".join(parts)


def iter_outputs(keep: Keep, run_id: int) -> Iterator[dict[str, Any]]:
    with keep.catalog.read() as session:
        _visible_run(keep, session, run_id)
        for path, size, sha in session.execute(
            select(RunOutput.path, RunOutput.size, RunOutput.sha256)
            .where(RunOutput.run_id == run_id)
            .order_by(RunOutput.path)
        ):
            yield {"path": path, "size": size, "sha256": bytes(sha).hex()}


def export_provenance(keep: Keep, address: str, to: str | os.PathLike[str] | None = None) -> Path:
    """Write ``ro-crate-metadata.json`` (a Process Run Crate) for the runs that made
    ``P/D@N`` into the folder *to* (a new temporary folder if None); its path."""
    import tempfile

    from labkeep.ops.provenance_export import write_ro_crate

    records = runs_of_version(keep, address)
    addr = parse_address(address, need_dataset=True)
    if not records:
        raise NotFound(
            f"no recorded run made {address}",
            hint="versions made by 'labkeep run' have provenance; 'labkeep log' shows them",
        )
    dest = Path(to) if to is not None else Path(tempfile.mkdtemp(prefix="labkeep-crate-"))
    if os.path.lexists(dest) and not dest.is_dir():
        raise UsageError(
            f"{dest} is a file: --to takes the folder for ro-crate-metadata.json",
            hint="give a folder (new or existing)",
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, f"making {dest}") from None
    version = addr.version if addr.version is not None else records[-1]["version"]
    return write_ro_crate(
        records,
        dest,
        name=f"{addr.dataset_address}@{version}",
        description=f"How {addr.dataset_address}@{version} was made: {len(records)} run(s)",
        base_url=keep.config.web.base_url or None,
    )


# -- bounded reads (the web pages and the API) ---------------------------------------------
def run_outputs(
    keep: Keep, run_id: int, *, after: str | None = None, limit: int = 1000
) -> dict[str, Any]:
    """One page of a run's outputs in path order (``after`` the last path of the previous
    page), how many it has in all, and the ``next_after`` of the next page (None: last)."""
    with keep.catalog.read() as session:
        _visible_run(keep, session, run_id)
        query = select(RunOutput.path, RunOutput.size, RunOutput.sha256).where(
            RunOutput.run_id == run_id
        )
        if after is not None:
            query = query.where(RunOutput.path > after)
        rows = session.execute(query.order_by(RunOutput.path).limit(limit)).all()
        total = session.execute(
            select(func.count()).select_from(RunOutput).where(RunOutput.run_id == run_id)
        ).scalar_one()
    items = [{"path": p, "size": size, "sha256": bytes(sha).hex()} for p, size, sha in rows]
    return {
        "items": items,
        "total": int(total),
        "next_after": items[-1]["path"] if items and len(items) == limit else None,
    }


def run_of_version(keep: Keep, address: str) -> dict[str, Any] | None:
    """The record (without its outputs) of the run that made ``P/D@N`` (the head if no
    version is given), or None when no run made that version."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        number = addr.version if addr.version is not None else dataset.head_version
        run_id = session.execute(
            select(Version.run_id).where(
                Version.dataset_id == dataset.id,
                Version.number == number,
                Version.state == "committed",
            )
        ).scalar_one_or_none()
        if run_id is None:
            return None
        run = session.get(Run, run_id)
        return None if run is None else _record(keep, session, run, outputs=False)


def differing_outputs(keep: Keep, run_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    """For a rerun: the first *limit* outputs (by path) whose SHA-256 differs from the
    original run's, with both hashes and sizes (the counts are in its settings)."""
    from sqlalchemy.orm import aliased

    with keep.catalog.read() as session:
        rerun = _visible_run(keep, session, run_id)
        if rerun.rerun_of is None:
            return []
        original = _visible_run(keep, session, rerun.rerun_of)
        before, after = aliased(RunOutput), aliased(RunOutput)
        ignore = [
            f"{PROVENANCE_DIR}/run-{original.id}.json",
            f"{PROVENANCE_DIR}/run-{rerun.id}.json",
        ]
        rows = session.execute(
            select(before.path, before.sha256, after.sha256, before.size, after.size)
            .join(after, (after.path == before.path) & (after.run_id == rerun.id))
            .where(
                before.run_id == original.id,
                before.sha256 != after.sha256,
                before.path.not_in(ignore),
            )
            .order_by(before.path)
            .limit(limit)
        ).all()
    return [
        {
            "path": path,
            "old_sha256": bytes(old).hex(),
            "new_sha256": bytes(new).hex(),
            "old_size": old_size,
            "new_size": new_size,
        }
        for path, old, new, old_size, new_size in rows
    ]
