"""The job queue: background work kept in the catalog (see docs/jobs.md).

A job is a row of ``jobs``. Workers claim one at a time with a single statement
(``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` on PostgreSQL;
the same select and update inside SQLite's ``BEGIN IMMEDIATE`` write transaction), which
also increments ``attempts``. Every later write of the worker (heartbeats, progress, the
result) is guarded by ``lease_owner = :owner AND attempts = :attempt``: a worker that
outlived its lease (paused, cut off) finds its write refused and rolls back, so a late
worker never records a second result. A job whose lease ran out is queued again by any
worker (:func:`reap`); retries back off exponentially; after ``max_attempts`` it fails
for good, with the last error kept.

Handlers are registered per kind (:func:`handler`) in ``labkeep.ops.job_kinds`` and in
modules named by the ``labkeep.jobs`` entry point group or ``[jobs] plugins``. A handler
gets a :class:`JobContext`; where its effect is a catalog change it commits it and the
job's completion in one transaction (:meth:`JobContext.finish`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from labkeep.catalog import Job, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import (
    Busy,
    EnvironmentFailure,
    Forbidden,
    LabkeepError,
    NotFound,
    UsageError,
)

if TYPE_CHECKING:
    from labkeep.keep import Keep

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
#: how often a running job's progress is written at most (seconds)
PROGRESS_EVERY = 1.0


# -- errors a handler raises ---------------------------------------------------------------
class JobCancelled(LabkeepError):
    """The job was cancelled while it ran (raised at its next progress call)."""

    exit_code = 1


class LeaseLost(Busy):
    """The worker no longer holds the job (its lease ran out and another worker may have
    it): nothing it does now may be recorded."""


class WorkerStopping(LabkeepError):
    """The worker is shutting down: the job is handed back to the queue unharmed."""


class JobDeferred(LabkeepError):
    """The job is waiting for something outside labkeep (a batch system's job): it goes
    back to the queue to be run again after *seconds*, and the attempt does not count."""

    def __init__(self, seconds: float, note: str = "") -> None:
        super().__init__(note or f"waiting {seconds:g} s")
        self.seconds = seconds


class JobProblems(LabkeepError):
    """The job ran to its end but found problems (damaged files, files it could not
    ingest): it fails for good, with its result kept; running it again would not help."""

    exit_code = 1

    def __init__(self, message: str, result: dict[str, Any], *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.result = result


# -- registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    name: str
    run: Callable[[JobContext], dict[str, Any] | None]
    #: checked when the job is queued (the handler's use case checks again when it runs)
    authorize: Callable[[Keep, dict[str, Any]], str | None] | None = None
    #: one line describing the job, for lists
    describe: Callable[[dict[str, Any]], str] | None = None
    #: retries allowed (0: a failure is final)
    max_attempts: int | None = None
    #: only site admins may queue it
    admin_only: bool = False


KINDS: dict[str, Kind] = {}
_BUILTIN = (
    "labkeep.ops.job_kinds",
    "labkeep.ops.watch",
    "labkeep.ops.run_slurm",
    "labkeep.ops.release",
    "labkeep.ops.backup_jobs",
    "labkeep.ops.extract",
    "labkeep.ops.convert",
)
_loaded: set[str] = set()
_load_lock = threading.Lock()


def handler(
    name: str,
    *,
    authorize: Callable[[Keep, dict[str, Any]], str | None] | None = None,
    describe: Callable[[dict[str, Any]], str] | None = None,
    max_attempts: int | None = None,
    admin_only: bool = False,
) -> Callable[[Callable[[JobContext], dict[str, Any] | None]], Callable[..., Any]]:
    """Register the decorated function as the handler of jobs of kind *name*.

    *authorize(keep, args)* returns the job's target ("PROJECT/DATASET", ...) after
    checking that ``keep.principal`` may queue it (raising Forbidden/NotFound otherwise).
    """

    def register(run: Callable[[JobContext], dict[str, Any] | None]) -> Callable[..., Any]:
        KINDS[name] = Kind(name, run, authorize, describe, max_attempts, admin_only)
        return run

    return register


def load_kinds(plugins: tuple[str, ...] | list[str] = ()) -> dict[str, Kind]:
    """Import the modules that register job kinds: the built-in ones, the
    ``labkeep.jobs`` entry points and *plugins* (module names)."""
    with _load_lock:
        names = list(_BUILTIN) + list(plugins)
        if "entry-points" not in _loaded:
            from importlib.metadata import entry_points

            names += [ep.value.split(":")[0] for ep in entry_points(group="labkeep.jobs")]
            _loaded.add("entry-points")
        for module in names:
            if module in _loaded:
                continue
            try:
                importlib.import_module(module)
            except ImportError as exc:
                if module in _BUILTIN and exc.name == module:
                    continue  # a built-in module not written yet
                raise UsageError(
                    f"job plugin {module!r} could not be imported: {exc}",
                    hint="check [jobs] plugins in labkeep.toml and the installed packages",
                ) from None
            _loaded.add(module)
    return KINDS


def kind_of(keep: Keep, name: str) -> Kind:
    kinds = load_kinds(keep.config.jobs.plugins)
    try:
        return kinds[name]
    except KeyError:
        raise UsageError(
            f"no job kind {name!r}", hint="known kinds: " + ", ".join(sorted(kinds))
        ) from None


# -- what callers see -------------------------------------------------------------------
@dataclass
class JobInfo:
    id: int
    kind: str
    args: dict[str, Any]
    state: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    target: str | None
    created_at: datetime
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    cancel_requested: bool
    last_error: str
    result: dict[str, Any] | None
    progress: dict[str, Any] = field(default_factory=dict)
    unique_key: str | None = None

    @classmethod
    def of(cls, row: Job) -> JobInfo:
        return cls(
            id=row.id,
            kind=row.kind,
            args=_loads(row.args) or {},
            state=row.state,
            priority=row.priority,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            run_after=row.run_after,
            target=row.target,
            created_at=row.created_at,
            created_by=row.created_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
            cancel_requested=row.cancel_requested,
            last_error=row.last_error,
            result=_loads(row.result),
            progress=_loads(row.progress) or {},
            unique_key=row.unique_key,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "args": self.args,
            "state": self.state,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_after": isoformat(self.run_after),
            "target": self.target,
            "created_at": isoformat(self.created_at),
            "created_by": self.created_by,
            "started_at": isoformat(self.started_at) if self.started_at else None,
            "finished_at": isoformat(self.finished_at) if self.finished_at else None,
            "worker": self.lease_owner,
            "lease_until": isoformat(self.lease_until) if self.lease_until else None,
            "cancel_requested": self.cancel_requested,
            "last_error": self.last_error,
            "result": self.result,
            "progress": self.progress,
            "percent": None if self.percent is None else round(self.percent, 1),
            "age_seconds": max(0, int((utcnow() - self.created_at).total_seconds())),
            "unique_key": self.unique_key,
        }

    @property
    def percent(self) -> float | None:
        p = self.progress
        for done, total in (("bytes", "total_bytes"), ("files", "total_files")):
            if p.get(total):
                return min(100.0, 100.0 * float(p.get(done, 0)) / float(p[total]))
        return None


def _loads(value: str) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


# -- queueing ------------------------------------------------------------------------------
#: job arguments that are yes/no, and those that are whole numbers (of any kind of job):
#: checked and made so when the job is queued ("seal=False" from a command line is no)
FLAG_ARGS = frozenset({"link", "seal", "quick", "repair", "sandbox", "delete_source", "rotate"})
NUMBER_ARGS = frozenset({"jobs", "seconds", "max_age_days", "max_hours", "max_datasets", "run"})
_YES, _NO = ("true", "yes", "1", "on"), ("false", "no", "0", "off", "")


def typed_args(args: dict[str, Any]) -> dict[str, Any]:
    """*args* with yes/no and number arguments as bool and int; a value that is neither
    is a usage error now, not a job that fails (or does the opposite) later."""
    out = dict(args)
    for name, value in args.items():
        if name in FLAG_ARGS and not isinstance(value, bool):
            text = str(value).strip().lower() if isinstance(value, str | int) else None
            if text in _YES or text in _NO:
                out[name] = text in _YES
            else:
                raise UsageError(f"job argument {name}={value!r} is not yes or no",
                                 hint=f"write {name}=true or {name}=false")  # fmt: skip
        elif name in NUMBER_ARGS and value is not None and not isinstance(value, bool):
            text = str(value).strip() if isinstance(value, str | int) else ""
            if not (text.isascii() and text.isdigit()) or len(text) > 12:
                raise UsageError(f"job argument {name}={value!r} is not a whole number",
                                 hint=f"write {name}=N with N from 0")  # fmt: skip
            out[name] = int(text)
    return out


def enqueue(
    keep: Keep,
    kind: str,
    args: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    unique_key: str | None = None,
    unique_scope: str = "active",
    priority: int = 0,
    run_after: datetime | None = None,
    max_attempts: int | None = None,
    session: Session | None = None,
    system: bool = False,
) -> JobInfo:
    """Queue a job of *kind* acting as ``keep.principal`` (*system*: as the keep itself,
    for periodic work). With *unique_key*, a job with that key already queued or running
    (``unique_scope="active"``) or ever queued (``"forever"``: one job per period) is
    returned instead of a new one; keys are the caller's own (two users' equal keys are
    two keys). With *session*, the job is queued in that transaction (it exists exactly
    when the caller's change commits)."""
    spec = kind_of(keep, kind)
    args = typed_args(args or {})
    if unique_scope not in ("active", "forever"):
        raise UsageError("unique_scope is 'active' or 'forever'")
    if not system:
        principal = keep.principal
        if not principal.authenticated:
            raise Forbidden(
                "queueing jobs needs a labkeep account", hint="sign in, or 'labkeep login'"
            )
        if principal.read_only:
            raise Forbidden("a read-only token cannot queue jobs")
        if spec.admin_only and not principal.site_admin:
            raise Forbidden(f"only site admins may queue {kind} jobs")
        if priority > 0 and not principal.site_admin:
            raise Forbidden("only site admins raise a job's priority")
        if unique_key is not None:  # one user's key never finds another user's job
            unique_key = f"{principal.name}|{unique_key}"
    if spec.authorize is not None and not system:
        target = spec.authorize(keep, args) or target
    if unique_key is not None and len(unique_key) > 255:
        import hashlib

        unique_key = "sha256:" + hashlib.sha256(unique_key.encode()).hexdigest()
    text_args = _dumps(args)
    if len(text_args) > 64 << 10:
        raise UsageError("job arguments are limited to 64 KiB")
    now = utcnow()
    row = Job(
        kind=kind,
        args=text_args,
        state="queued",
        priority=priority,
        attempts=0,
        max_attempts=max_attempts or spec.max_attempts or keep.config.jobs.max_attempts,
        run_after=run_after or now,
        unique_key=unique_key,
        unique_scope=unique_scope,
        target=target,
        created_at=now,
        created_by="" if system else keep.principal.name,
        cancel_requested=False,
        last_error="",
        result="",
        progress="",
    )
    with _session(keep, session) as s:
        if unique_key is None:
            s.add(row)
            s.flush()
            return JobInfo.of(row)
        if add_unique(s, row):
            s.flush()
            return JobInfo.of(row)
        existing = s.execute(select(Job).where(Job.unique_key == unique_key)).scalar_one()
        return JobInfo.of(existing)


@contextlib.contextmanager
def _session(keep: Keep, session: Session | None) -> Iterator[Session]:
    if session is not None:
        yield session
    else:
        with keep.catalog.write() as s:
            yield s


# -- claiming and finishing (workers) -------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """What a worker holds: the job, and the fencing token (owner, attempt)."""

    id: int
    kind: str
    attempt: int
    owner: str
    #: the job as claimed (read by the claim statement itself)
    job: JobInfo | None = field(default=None, compare=False)


def claim(
    keep: Keep, owner: str, *, kinds: tuple[str, ...] | None = None, lease_seconds: float
) -> Claim | None:
    """Take the next runnable job (highest priority, then oldest) for *owner*, or None."""
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    pick = (
        select(Job.id)
        .where(Job.state == "queued", Job.run_after <= now)
        .order_by(Job.priority.desc(), Job.run_after, Job.id)
        .limit(1)
    )
    if kinds:
        pick = pick.where(Job.kind.in_(kinds))
    values = {
        "state": "running",
        "lease_owner": owner,
        "lease_until": until,
        "attempts": Job.attempts + 1,
        "started_at": func.coalesce(Job.started_at, now),
        "cancel_requested": False,
    }
    # a look first, without a write lock: idle workers polling must not queue up behind
    # (or hold up) the writers of an ingest on SQLite's single write lock
    with keep.catalog.read() as session:
        if session.execute(pick).first() is None:
            return None
    with keep.catalog.write() as session:
        if session.get_bind().dialect.name == "postgresql":
            row = session.execute(
                update(Job)
                .where(Job.id == pick.with_for_update(skip_locked=True).scalar_subquery())
                .values(**values)
                .returning(*Job.__table__.columns)
            ).one_or_none()
        else:  # SQLite: this transaction began IMMEDIATE and holds the write lock
            job_id = session.execute(pick).scalar_one_or_none()
            row = None
            if job_id is not None:
                row = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "queued")
                    .values(**values)
                    .returning(*Job.__table__.columns)
                ).one_or_none()
        if row is None:
            return None
        info = JobInfo.of(Job(**row._asdict()))
        return Claim(info.id, info.kind, info.attempts, owner, info)


def _fenced(claim: Claim) -> Any:
    return (
        (Job.id == claim.id)
        & (Job.lease_owner == claim.owner)
        & (Job.attempts == claim.attempt)
        & (Job.state == "running")
    )


def _freed_key() -> Any:
    return case((Job.unique_scope == "active", None), else_=Job.unique_key)


def complete(
    session: Session,
    claim: Claim,
    result: dict[str, Any] | None,
    progress: dict[str, Any] | None = None,
) -> None:
    """Record the job as done in *session* (the transaction of its effect), or raise
    LeaseLost (and the caller's transaction rolls back) if the worker no longer holds it."""
    extra = {"progress": _dumps(progress)} if progress else {}
    done = session.execute(
        update(Job)
        .where(_fenced(claim))
        .values(
            **extra,
            state="done",
            finished_at=utcnow(),
            result=_dumps(result or {}),
            lease_owner=None,
            lease_until=None,
            last_error="",
            unique_key=_freed_key(),
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"job {claim.id}: this worker's lease ran out; its result is not recorded",
            hint="another worker runs the job again",
        )


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry *attempt* + 1: exponential with full jitter above half."""
    delay = float(min(cap, base * (2 ** max(0, attempt - 1))))
    return delay / 2 + random.random() * delay / 2  # noqa: S311 (jitter, not security)


def fail(
    keep: Keep,
    claim: Claim,
    error: str,
    *,
    final: bool,
    result: dict[str, Any] | None = None,
    cancelled: bool = False,
    progress: dict[str, Any] | None = None,
) -> str:
    """Record a failed attempt: queued again after a backoff, or failed for good (when
    *final* or out of attempts), or cancelled. Returns the new state ('' if the worker no
    longer held the job)."""
    cfg = keep.config.jobs
    now = utcnow()
    with keep.catalog.write() as session:
        row = session.execute(
            select(Job.attempts, Job.max_attempts).where(_fenced(claim))
        ).one_or_none()
        if row is None:
            return ""
        attempts, max_attempts = row
        end = cancelled or final or attempts >= max_attempts
        state = "cancelled" if cancelled else ("failed" if end else "queued")
        values: dict[str, Any] = {
            "state": state,
            "lease_owner": None,
            "lease_until": None,
            "last_error": error[:10_000],
        }
        if result is not None:
            values["result"] = _dumps(result)
        if progress:
            values["progress"] = _dumps(progress)
        if end:
            values["finished_at"] = now
            values["unique_key"] = _freed_key()
        else:
            delay = backoff(attempts, cfg.retry_base_seconds, cfg.retry_max_seconds)
            values["run_after"] = now + timedelta(seconds=delay)
        session.execute(
            update(Job)
            .where(_fenced(claim))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return state


def release(keep: Keep, claim: Claim) -> bool:
    """Hand a job back to the queue (a worker stopping): the attempt does not count."""
    with keep.catalog.write() as session:
        done = session.execute(
            update(Job)
            .where(_fenced(claim))
            .values(
                state="queued",
                attempts=Job.attempts - 1,
                lease_owner=None,
                lease_until=None,
                run_after=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


def defer(keep: Keep, claim: Claim, seconds: float, progress: dict[str, Any] | None = None) -> bool:
    """Queue a job again to run after *seconds* (it waits on something outside): the
    attempt does not count."""
    values: dict[str, Any] = {
        "state": "queued",
        "attempts": Job.attempts - 1,
        "lease_owner": None,
        "lease_until": None,
        "run_after": utcnow() + timedelta(seconds=max(0.0, seconds)),
    }
    if progress:
        values["progress"] = _dumps(progress)
    with keep.catalog.write() as session:
        done = session.execute(
            update(Job)
            .where(_fenced(claim))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


def renew(keep: Keep, claims: list[Claim], lease_seconds: float) -> tuple[set[int], set[int]]:
    """Extend the leases of *claims*: (ids no longer held, ids whose cancel was asked)."""
    if not claims:
        return set(), set()
    until = utcnow() + timedelta(seconds=lease_seconds)
    lost: set[int] = set()
    with keep.catalog.write() as session:
        for c in claims:
            done = session.execute(
                update(Job)
                .where(_fenced(c))
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                lost.add(c.id)
        ids = [c.id for c in claims if c.id not in lost]
        cancel = set(
            session.execute(
                select(Job.id).where(Job.id.in_(ids), Job.cancel_requested.is_(True))
            ).scalars()
        )
    return lost, cancel


def reap(keep: Keep) -> int:
    """Queue again (or fail, when out of attempts) the running jobs whose worker stopped
    renewing: their lease ran out, or their worker's process on this host is gone."""
    from labkeep.ops.leases import dead_here

    now = utcnow()
    n = 0
    with keep.catalog.read() as session:  # usually nothing to do: no write lock for that
        rows = session.execute(
            select(Job.id, Job.lease_owner, Job.lease_until, Job.attempts, Job.max_attempts)
            .where(Job.state == "running")
            .order_by(Job.id)
            .limit(1000)
        ).all()
    due = [r for r in rows if r[2] is None or r[2] < now or (r[1] and dead_here(r[1]))]
    if not due:
        return 0
    with keep.catalog.write() as session:
        for job_id, owner, _until, attempts, max_attempts in due:
            why = (
                f"worker {owner} stopped renewing its lease (killed, or cut off) "
                f"in attempt {attempts}"
            )
            values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "last_error": why}
            if attempts >= max_attempts:
                values.update(state="failed", finished_at=now, unique_key=_freed_key())
            else:  # the job did not fail, its worker did: run it again at once
                values.update(state="queued", run_after=now)
            still = [Job.id == job_id, Job.state == "running", Job.attempts == attempts]
            still.append(Job.lease_owner == owner)
            if not (owner and dead_here(owner)):  # a live worker may have renewed meanwhile
                still.append(or_(Job.lease_until.is_(None), Job.lease_until < now))
            done = session.execute(
                update(Job)
                .where(*still)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            n += done.rowcount  # type: ignore[attr-defined]
    return n


def write_progress(keep: Keep, claim: Claim, progress: dict[str, Any]) -> bool:
    """Store the job's progress; returns whether cancelling was asked. Raises LeaseLost."""
    with keep.catalog.write() as session:
        done = session.execute(
            update(Job)
            .where(_fenced(claim))
            .values(progress=_dumps(progress))
            .execution_options(synchronize_session=False)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(f"job {claim.id}: this worker no longer holds it")
        return bool(
            session.execute(select(Job.cancel_requested).where(Job.id == claim.id)).scalar()
        )


# -- the handler's side --------------------------------------------------------------------
class JobContext:
    """What a handler gets: the job, a keep acting as the job's creator, progress
    reporting, and the fenced completion."""

    def __init__(self, keep: Keep, claim: Claim, job: JobInfo, stop: threading.Event) -> None:
        self.keep = keep
        self.claim = claim
        self.job = job
        self.args = job.args
        self._stop = stop
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.finished = False
        self._state: dict[str, Any] = dict(job.progress) if job.progress else {}
        self._last = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise if the job should stop now: cancelled, lease lost, worker stopping."""
        if self.lost.is_set():
            raise LeaseLost(f"job {self.claim.id}: this worker no longer holds it")
        if self.cancel.is_set():
            raise JobCancelled(f"job {self.claim.id} was cancelled")
        if self._stop.is_set():
            raise WorkerStopping("the worker is stopping")

    def progress(self, *, force: bool = False, **values: Any) -> None:
        """Update the progress shown in ``labkeep jobs`` and the web (written at most once
        a second), and stop here if the job was cancelled or the worker is stopping."""
        with self._lock:
            self._state.update(values)
            now = time.monotonic()
            due = force or now - self._last >= PROGRESS_EVERY
            if due:
                self._last = now
                snapshot = dict(self._state)
        if due:
            try:
                if write_progress(self.keep, self.claim, snapshot):
                    self.cancel.set()
            except EnvironmentFailure:
                pass  # progress is best effort; the lease heartbeat decides
        self.check()

    def as_progress(self, *, rate_limit: float | None = None) -> _ProgressAdapter:
        """A Progress (start/advance) for ingest, verify and copy that reports here; with
        *rate_limit* (bytes/s) it also slows the work down to that average rate."""
        return _ProgressAdapter(self, rate_limit)

    def finish(self, session: Session, result: dict[str, Any] | None = None) -> None:
        """Mark the job done in *session*, the transaction that commits its effect."""
        complete(session, self.claim, result, self.snapshot())
        self.finished = True

    def defer(self, seconds: float, note: str = "") -> JobDeferred:
        """The exception to raise to come back after *seconds* (the attempt is not
        counted): ``raise ctx.defer(30, "SLURM job 123 pending")``."""
        if note:
            with self._lock:
                self._state["note"] = note
        return JobDeferred(seconds, note)

    def snapshot(self) -> dict[str, Any]:
        """The progress as last reported (written with the job's outcome)."""
        with self._lock:
            return dict(self._state)


class _ProgressAdapter:
    def __init__(self, ctx: JobContext, rate_limit: float | None) -> None:
        self.ctx = ctx
        self.files = 0
        self.nbytes = 0
        self.rate = rate_limit
        self.t0 = time.monotonic()

    def start(self, total_files: int, total_bytes: int) -> None:
        self.ctx.progress(total_files=total_files, total_bytes=total_bytes, force=True)

    def advance(self, files: int, nbytes: int) -> None:
        self.files += files
        self.nbytes += nbytes
        if self.rate:
            ahead = self.nbytes / self.rate - (time.monotonic() - self.t0)
            while ahead > 0:
                self.ctx.check()
                time.sleep(min(ahead, 0.5))
                ahead = self.nbytes / self.rate - (time.monotonic() - self.t0)
        self.ctx.progress(files=self.files, bytes=self.nbytes)


# -- people's side: list, show, cancel, retry ----------------------------------------------
def _visible(keep: Keep) -> Any:
    principal = keep.principal
    if principal.site_admin:
        return None
    if not principal.authenticated:
        raise Forbidden("jobs are shown to signed-in users", hint="sign in first")
    return Job.created_by == principal.name


def list_jobs(
    keep: Keep,
    *,
    state: str | None = None,
    kind: str | None = None,
    target: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[JobInfo]:
    """Jobs newest first: a site admin sees all, everyone else their own."""
    query = select(Job).order_by(Job.id.desc()).limit(max(1, min(limit, 1000)))
    own = _visible(keep)
    if own is not None:
        query = query.where(own)
    if state:
        if state == "active":
            query = query.where(Job.state.in_(ACTIVE))
        elif state not in STATES:
            raise UsageError(f"no job state {state!r}", hint="one of " + ", ".join(STATES))
        else:
            query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    if target:
        query = query.where(or_(Job.target == target, Job.target.startswith(target + "/")))
    if before:
        query = query.where(Job.id < before)
    with keep.catalog.read() as session:
        return [JobInfo.of(row) for row in session.execute(query).scalars()]


def job_counts(keep: Keep) -> dict[str, int]:
    """How many jobs are in each state (of those the caller may see)."""
    query = select(Job.state, func.count()).group_by(Job.state)
    own = _visible(keep)
    if own is not None:
        query = query.where(own)
    with keep.catalog.read() as session:
        counts = {str(s): int(n) for s, n in session.execute(query).all()}
    return {s: counts.get(s, 0) for s in STATES}


def get_job(keep: Keep, job_id: int) -> JobInfo:
    """One job, if the caller may see it (others' jobs are 'not found', like foreign ids)."""
    with keep.catalog.read() as session:
        row = session.get(Job, job_id)
        own = keep.principal.site_admin or (
            row is not None
            and keep.principal.authenticated
            and row.created_by == keep.principal.name
        )
        if row is None or not own:
            raise NotFound(f"no job {job_id}", hint="'labkeep jobs' lists yours")
        return JobInfo.of(row)


def dataset_jobs(keep: Keep, project: str, dataset: str) -> list[JobInfo]:
    """Queued and running jobs on a dataset, for whoever may read the dataset (its page
    shows their progress)."""
    keep.get_dataset(f"{project}/{dataset}")  # access check (NotFound / Forbidden)
    with keep.catalog.read() as session:
        rows = session.execute(
            select(Job)
            .where(Job.target == f"{project}/{dataset}", Job.state.in_(ACTIVE))
            .order_by(Job.id)
            .limit(20)
        ).scalars()
        return [JobInfo.of(row) for row in rows]


def _may_change(keep: Keep) -> None:
    if keep.principal.read_only:
        raise Forbidden("a read-only token cannot change jobs")


def cancel_job(keep: Keep, job_id: int, *, checked: bool = False) -> JobInfo:
    """Cancel a queued job at once, or ask a running one to stop at its next step.

    *checked*: the caller already decided that this principal may cancel it although
    someone else queued it (``cancel_run``: whoever may save to the run's output)."""
    if checked:
        with keep.catalog.read() as session:
            info = JobInfo.of(session.get_one(Job, job_id))
    else:
        info = get_job(keep, job_id)
    _may_change(keep)
    with keep.catalog.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="cancelled", finished_at=utcnow(), unique_key=_freed_key())
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    if info.state not in ACTIVE:
        raise UsageError(f"job {job_id} already ended ({info.state})", hint="nothing to cancel")
    _audit(keep, "job.cancel", job_id, info)
    if checked:
        with keep.catalog.read() as session:
            return JobInfo.of(session.get_one(Job, job_id))
    return get_job(keep, job_id)


def retry_job(keep: Keep, job_id: int) -> JobInfo:
    """Queue a failed or cancelled job again, with a fresh count of attempts."""
    info = get_job(keep, job_id)
    _may_change(keep)
    with keep.catalog.write() as session:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(("failed", "cancelled")))
            .values(
                state="queued",
                attempts=0,
                run_after=utcnow(),
                finished_at=None,
                cancel_requested=False,
            )
            .execution_options(synchronize_session=False)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            raise UsageError(
                f"job {job_id} is {info.state}: only failed or cancelled jobs are retried",
                hint="'labkeep jobs show ID' says where it is",
            )
    _audit(keep, "job.retry", job_id, info)
    return get_job(keep, job_id)


def _audit(keep: Keep, action: str, job_id: int, info: JobInfo) -> None:
    from labkeep.ops.audit import append_event

    with keep.catalog.write() as session:
        append_event(
            session, keep.actor, action, f"job:{job_id}", {"kind": info.kind, "target": info.target}
        )


def queue_summary(keep: Keep) -> dict[str, Any]:
    """For status pages: active jobs, failures of the last day, live workers."""
    from labkeep.catalog import Worker

    now = utcnow()
    with keep.catalog.read() as session:
        counts = dict(
            session.execute(
                select(Job.state, func.count()).where(Job.state.in_(ACTIVE)).group_by(Job.state)
            ).all()
        )
        failed = session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.state == "failed", Job.finished_at >= now - timedelta(days=1))
        ).scalar_one()
        live = session.execute(
            select(func.count())
            .select_from(Worker)
            .where(Worker.state != "stopped", Worker.seen_at >= now - timedelta(minutes=2))
        ).scalar_one()
    return {
        "queued": int(counts.get("queued", 0)),
        "running": int(counts.get("running", 0)),
        "failed_last_day": int(failed),
        "workers": int(live),
    }
