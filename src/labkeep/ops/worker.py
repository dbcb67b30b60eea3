"""``labkeep worker``: run queued jobs with bounded concurrency.

One process runs *concurrency* runner threads. Each claims a job (see
:mod:`labkeep.ops.jobs`), runs its handler acting as the job's creator, and records the
outcome under the fencing token of its claim. A heartbeat thread renews the leases of the
jobs held, tells handlers about cancel requests and lost leases, queues again the jobs of
dead workers (:func:`labkeep.ops.jobs.reap`), queues the periodic jobs of ``[jobs]
schedule`` (once per period, however many workers run) and reports the worker in the
``workers`` table. SIGTERM (or SIGINT) stops claiming; running jobs get *grace* seconds
to finish, then are handed back to the queue at their next progress step.

Log lines are JSON objects on stderr, one per event.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import update

from labkeep.catalog import Job, Worker, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import EnvironmentFailure, LabkeepError
from labkeep.ops import jobs as q
from labkeep.ops.leases import owner_id

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: errors that running the job again will not cure
FINAL = (
    "UsageError",
    "NotFound",
    "Forbidden",
    "SealedError",
    "SourceError",
    "AlreadyExists",
    "NameUnavailable",
    "BelowPolicy",
    "RetentionLocked",
    "JobProblems",
)


#: seconds a worker reuses the rights it loaded for a job's creator (a disabled account
#: or a revoked grant takes effect for new jobs after at most this long)
PRINCIPAL_TTL = 10.0


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "retried": self.retried,
            "released": self.released,
            "lost": self.lost,
            "by_kind": self.by_kind,
        }


class JobWorker:
    """A worker process's job runners, heartbeat and scheduler."""

    def __init__(
        self,
        keep: Keep,
        *,
        concurrency: int = 1,
        kinds: tuple[str, ...] | None = None,
        drain: bool = False,
        grace: float = 30.0,
        log: TextIO | None = None,
        lease_seconds: float | None = None,
        poll_seconds: float | None = None,
        schedule: bool = True,
        max_jobs: int | None = None,
        watch: bool = False,
    ) -> None:
        cfg = keep.config.jobs
        #: also run the watchers of the configured buffers (they wake the runners)
        self.watch = watch
        self.keep = keep
        self.concurrency = max(1, concurrency)
        self.kinds = tuple(kinds) if kinds else None
        self.drain = drain
        self.grace = grace
        self.log_to = log if log is not None else sys.stderr
        self.lease_seconds = lease_seconds or cfg.lease_seconds
        self.poll = poll_seconds or cfg.poll_seconds
        self.schedule = schedule
        self.max_jobs = max_jobs
        self.owner = owner_id()
        self.stats = WorkerStats()
        #: set to stop claiming; handlers are asked to stop once the grace ran out
        self.stopping = threading.Event()
        self.handlers_stop = threading.Event()
        #: set by whoever queued work in this process (the watcher) to wake idle runners
        self.wake = threading.Event()
        self._held: dict[int, tuple[q.Claim, q.JobContext | None]] = {}
        self._lock = threading.Lock()
        self._claimed = 0
        self._principals: dict[str, tuple[float, Any]] = {}
        kinds_known = q.load_kinds(cfg.plugins)
        if self.kinds:
            unknown = [k for k in self.kinds if k not in kinds_known]
            if unknown:
                from labkeep.errors import UsageError

                raise UsageError(
                    f"no job kind {', '.join(unknown)}",
                    hint="known kinds: " + ", ".join(sorted(kinds_known)),
                )
        #: claims are limited to kinds this worker can run: a job of a plugin's kind waits
        #: for a worker that loaded the plugin instead of failing here
        self.claim_kinds = self.kinds or tuple(sorted(kinds_known))

    # -- logging -------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        record = {"ts": isoformat(utcnow()), "event": event, "worker": self.owner, **fields}
        with contextlib.suppress(OSError, ValueError):
            self.log_to.write(json.dumps(record, default=str) + "\n")
            self.log_to.flush()

    # -- lifecycle -----------------------------------------------------------------------
    def install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            if self.stopping.is_set():  # a second signal: stop handlers at once
                self.handlers_stop.set()
            self.log("worker.stopping", signal=signal.Signals(signum).name)
            self.stopping.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> WorkerStats:
        """Run until stopped (or, with *drain*, until no runnable job is left)."""
        self._register()
        self.log(
            "worker.start",
            concurrency=self.concurrency,
            kinds=list(self.kinds or ()),
            pid=os.getpid(),
        )
        beat = threading.Thread(target=self._heartbeat, name="labkeep-heartbeat", daemon=True)
        beat.start()
        watcher = None
        if self.watch:
            watcher = threading.Thread(target=self._watchers, name="labkeep-watch", daemon=True)
            watcher.start()
        runners = [
            threading.Thread(target=self._runner, name=f"labkeep-runner-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in runners:
            t.start()
        try:
            while any(t.is_alive() for t in runners):
                if self.stopping.wait(0.2):
                    break
            # stopping: runners finish the job they hold within the grace period
            deadline = time.monotonic() + self.grace
            for t in runners:
                t.join(max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in runners):
                self.handlers_stop.set()  # hand the rest back at their next step
                for t in runners:
                    t.join(10.0)
        finally:
            self.stopping.set()
            beat.join(5.0)
            if watcher is not None:
                watcher.join(10.0)
            self._release_all()
            self._unregister()
            self.log("worker.stop", **self.stats.to_dict())
        return self.stats

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    # -- runners -------------------------------------------------------------------------
    def _runner(self) -> None:
        while not self.stopping.is_set():
            if self.max_jobs is not None:
                with self._lock:
                    if self._claimed >= self.max_jobs:
                        return
                    self._claimed += 1
            t0 = time.monotonic()
            try:
                claim = q.claim(
                    self.keep,
                    self.owner,
                    kinds=self.claim_kinds,
                    lease_seconds=self.lease_seconds,
                )
            except EnvironmentFailure as exc:
                self.log("worker.catalog_unreachable", error=str(exc))
                claim = None
            if claim is None:
                if self.max_jobs is not None:
                    with self._lock:
                        self._claimed -= 1
                if self.drain and not self._held and not self._runnable_soon():
                    self.stopping.set()
                    self.wake.set()
                    return
                self.wake.wait(self.poll)
                self.wake.clear()
                continue
            try:
                self._run(claim, claim_ms=round((time.monotonic() - t0) * 1000, 2))
            except Exception as exc:  # noqa: BLE001 (recording the outcome failed: the
                # lease runs out and another worker takes the job; this runner goes on)
                self.log("job.orphaned", job=claim.id, error=_message(exc))

    def _runnable_soon(self) -> bool:
        """With *drain*: whether a job is queued or running that this worker may still
        have to run (a retry due within a minute, a job another worker may hand back)."""
        from sqlalchemy import func, or_, select

        soon = utcnow() + timedelta(minutes=1)
        with self.keep.catalog.read() as session:
            query = (
                select(func.count())
                .select_from(Job)
                .where(
                    or_(
                        Job.state == "running",
                        (Job.state == "queued") & (Job.run_after <= soon),
                    )
                )
            )
            query = query.where(Job.kind.in_(self.claim_kinds))
            return bool(session.execute(query).scalar_one())

    def _run(self, claim: q.Claim, claim_ms: float = 0.0) -> None:
        with self._lock:
            self._held[claim.id] = (claim, None)
        started = time.monotonic()
        try:
            info = claim.job or self._load(claim)
            spec = q.KINDS.get(claim.kind)
            if spec is None:
                self._failed(claim, f"no handler for job kind {claim.kind!r} on this worker", True)
                return
            try:
                keep = self._acting_keep(info)
            except LabkeepError as exc:  # the creator was removed or disabled meanwhile
                self._failed(claim, f"{info.created_by} can no longer act: {_message(exc)}", True)
                return
            ctx = q.JobContext(keep, claim, info, self.handlers_stop)
            with self._lock:
                self._held[claim.id] = (claim, ctx)
            self.log(
                "job.start",
                job=claim.id,
                kind=claim.kind,
                attempt=claim.attempt,
                claim_ms=claim_ms,
            )
            try:
                result = spec.run(ctx)
                if not ctx.finished:
                    with self.keep.catalog.write() as session:
                        q.complete(session, claim, result, ctx.snapshot())
                self.stats.done += 1
                self.stats.by_kind[claim.kind] = self.stats.by_kind.get(claim.kind, 0) + 1
                self.log(
                    "job.done",
                    job=claim.id,
                    kind=claim.kind,
                    seconds=round(time.monotonic() - started, 3),
                )
            except q.JobDeferred as exc:
                q.defer(self.keep, claim, exc.seconds, ctx.snapshot())
                self.log("job.deferred", job=claim.id, kind=claim.kind, seconds=exc.seconds)
            except q.WorkerStopping:
                if q.release(self.keep, claim):
                    self.stats.released += 1
                    self.log("job.released", job=claim.id, kind=claim.kind)
            except q.LeaseLost as exc:
                self.stats.lost += 1
                self.log("job.lease_lost", job=claim.id, kind=claim.kind, error=str(exc))
            except q.JobCancelled:
                q.fail(
                    self.keep,
                    claim,
                    "cancelled while running",
                    final=True,
                    cancelled=True,
                    progress=ctx.snapshot(),
                )
                self.log("job.cancelled", job=claim.id, kind=claim.kind)
            except q.JobProblems as exc:
                self._failed(claim, _message(exc), True, result=exc.result, ctx=ctx)
            except Exception as exc:  # noqa: BLE001 (a job's failure must not kill the worker)
                final = type(exc).__name__ in FINAL or isinstance(exc, _final_types())
                detail = _message(exc)
                if not isinstance(exc, LabkeepError):
                    detail += "\n" + "".join(traceback.format_exception(exc)[-6:])
                self._failed(claim, detail, final, ctx=ctx)
        except EnvironmentFailure as exc:
            # the catalog went away around the job: its lease runs out, another takes it
            self.log("job.orphaned", job=claim.id, error=str(exc))
        finally:
            with self._lock:
                self._held.pop(claim.id, None)

    def _failed(
        self,
        claim: q.Claim,
        error: str,
        final: bool,
        result: dict[str, Any] | None = None,
        ctx: q.JobContext | None = None,
    ) -> None:
        progress = ctx.snapshot() if ctx is not None else None
        state = q.fail(self.keep, claim, error, final=final, result=result, progress=progress)
        if state == "queued":
            self.stats.retried += 1
        elif state:
            self.stats.failed += 1
        self.log("job.failed", job=claim.id, kind=claim.kind, state=state, error=error[:500])

    def _load(self, claim: q.Claim) -> q.JobInfo:
        with self.keep.catalog.read() as session:
            return q.JobInfo.of(session.get_one(Job, claim.id))

    def _acting_keep(self, info: q.JobInfo) -> Keep:
        """The keep acting as the job's creator (their rights, checked again now), or as
        the keep itself (a site admin's rights) for periodic work."""
        from labkeep.access import Principal

        if not info.created_by:
            return self.keep.acting_as(Principal("user", name="labkeep", site_admin=True))
        now = time.monotonic()
        with self._lock:
            cached = self._principals.get(info.created_by)
        if cached is None or now - cached[0] > PRINCIPAL_TTL:
            cached = (now, self.keep.principal_for(info.created_by))
            with self._lock:
                self._principals[info.created_by] = cached
        return self.keep.acting_as(cached[1])

    # -- watchers ------------------------------------------------------------------------
    def _watchers(self) -> None:
        """The buffer watchers until the worker stops; a failure (the catalog away when
        they start, an unreadable buffer) is logged and they start again shortly."""
        from labkeep.ops.watch import run_watchers

        while not self.stopping.is_set():
            try:
                run_watchers(self.keep, stop=self.stopping, on_queued=self.wake.set, log=self.log)
            except Exception as exc:  # noqa: BLE001 (a log line, never a dead thread's traceback)
                self.log("watch.stopped", error=_message(exc), retry_seconds=10)
                self.stopping.wait(10.0)

    # -- heartbeat -----------------------------------------------------------------------
    def _heartbeat(self) -> None:
        every = max(0.2, self.lease_seconds / 3)
        next_reap = 0.0
        next_schedule = 0.0
        while True:
            with self._lock:
                held = list(self._held.values())
            try:
                lost, cancel = q.renew(self.keep, [c for c, _ in held], self.lease_seconds)
                for claim, ctx in held:
                    if ctx is None:
                        continue
                    if claim.id in lost:
                        ctx.lost.set()
                    if claim.id in cancel:
                        ctx.cancel.set()
                now = time.monotonic()
                if now >= next_reap:
                    n = q.reap(self.keep)
                    if n:
                        self.log("jobs.requeued", count=n)
                        self.wake.set()
                    next_reap = now + min(every, 5.0)
                if self.schedule and now >= next_schedule and not self.stopping.is_set():
                    queue_periodic(self.keep, self.log)
                    next_schedule = now + 30.0
                self._report()
            except EnvironmentFailure as exc:
                self.log("worker.catalog_unreachable", error=str(exc))
            if self.stopping.is_set() and not held:
                return
            self.stopping.wait(every) if not self.stopping.is_set() else time.sleep(every)

    # -- the workers table ---------------------------------------------------------------
    def _register(self) -> None:
        now = utcnow()
        with self.keep.catalog.write() as session:
            add_unique(
                session,
                Worker(
                    id=self.owner,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    kinds=",".join(self.kinds or ()),
                    concurrency=self.concurrency,
                    started_at=now,
                    seen_at=now,
                    state="running",
                    running=0,
                ),
            )

    def _report(self) -> None:
        with self._lock:
            running = len(self._held)
        with self.keep.catalog.write() as session:
            session.execute(
                update(Worker)
                .where(Worker.id == self.owner)
                .values(
                    seen_at=utcnow(),
                    running=running,
                    state="stopping" if self.stopping.is_set() else "running",
                )
            )

    def _unregister(self) -> None:
        with contextlib.suppress(EnvironmentFailure), self.keep.catalog.write() as session:
            session.execute(
                update(Worker)
                .where(Worker.id == self.owner)
                .values(seen_at=utcnow(), running=0, state="stopped")
            )

    def _release_all(self) -> None:
        with self._lock:
            held = [c for c, _ in self._held.values()]
        for claim in held:
            with contextlib.suppress(EnvironmentFailure):
                if q.release(self.keep, claim):
                    self.stats.released += 1


def _final_types() -> tuple[type[BaseException], ...]:
    from labkeep.errors import Forbidden, NotFound, SealedError, UsageError

    return (UsageError, NotFound, Forbidden, SealedError)


def _message(exc: BaseException) -> str:
    """The error as one line for ``last_error``: its type, message and hint."""
    if isinstance(exc, LabkeepError):
        text = f"{type(exc).__name__}: {exc.message}"
        return f"{text} (hint: {exc.hint})" if exc.hint else text
    return f"{type(exc).__name__}: {exc}"


def queue_periodic(keep: Keep, log: Callable[..., None] | None = None) -> list[int]:
    """Queue this period's job of every ``[[jobs.schedule]]`` entry that has none yet.

    The unique key names the entry and the period (``schedule:KIND:ARGS:N`` with N the
    number of whole periods since the epoch), so any number of workers queue it once; a
    period during which no worker ran is made up by the first worker to start.
    """
    ids: list[int] = []
    now = time.time()
    for entry in keep.config.jobs.schedule:
        slot = int(now // entry.every)
        job = q.enqueue(
            keep,
            entry.kind,
            entry.args,
            unique_key=f"schedule:{entry.name}:{slot}"[:255],
            unique_scope="forever",
            priority=entry.priority,
            system=True,
        )
        ids.append(job.id)
        fresh = job.created_at >= utcnow() - timedelta(seconds=2)
        if log is not None and fresh and job.state == "queued":
            log("job.scheduled", job=job.id, kind=entry.kind)
    return ids


def workers(keep: Keep, *, include_stopped: bool = False) -> list[dict[str, Any]]:
    """The workers that reported in the last two minutes (or all, with stopped ones):
    for site admins (their hosts and processes are the deployment's business)."""
    from sqlalchemy import select

    from labkeep.access import check

    check(keep.principal, "keep.admin")
    query = select(Worker).order_by(Worker.started_at)
    if not include_stopped:
        query = query.where(
            Worker.state != "stopped", Worker.seen_at >= utcnow() - timedelta(minutes=2)
        )
    with keep.catalog.read() as session:
        return [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "kinds": [k for k in w.kinds.split(",") if k],
                "concurrency": w.concurrency,
                "running": w.running,
                "state": w.state,
                "started_at": isoformat(w.started_at),
                "seen_at": isoformat(w.seen_at),
            }
            for w in session.execute(query).scalars()
        ]
