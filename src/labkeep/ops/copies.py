"""Copies: copy, get, drop, whereis, and verify/repair of the replicas in a store.

Where content lives:
- the **tree** holds the current files of every dataset whose ``tree_state`` is
  ``present`` (its fixity is what ``verify`` last found for each entry);
- a **content store** (objects folder, S3) holds a content once, by SHA-256, for every
  dataset that has it: a row of the replica log (``replicas``) says so, with when its
  bytes were last checked and what was found.

Write order (docs/formats.md):
1. content is durable in the target store and verified (hashed while written, or by the
   server against the SHA-256 sent with it) before its replica row is committed; a copy
   cut short never has a row and never counts;
2. a replica row is removed (committed) before its content is deleted; a dataset's
   ``tree_state`` says ``dropped`` before its tree files are deleted;
3. nothing is deleted while fewer than the policy's ``min_copies`` copies would remain
   elsewhere, counted fresh (each copy re-read and re-hashed now, or with ``quick`` its
   size and the store's own SHA-256 confirmed) under the dataset's lease, so two drops
   cannot both pass on the same copies; an unreachable store counts as zero.

Every operation is per file, in parallel, resumable (what was recorded stays recorded;
a content already in a store is not sent again) and reports a result record per file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from labkeep.access import allowed, check
from labkeep.catalog import Dataset, Entry, Event, Project, Replica, Store
from labkeep.clock import isoformat, utcnow
from labkeep.errors import (
    BelowPolicy,
    LabkeepError,
    NotFound,
    RetentionLocked,
    StorageError,
    StoreUnavailable,
    TransferCorrupted,
    UsageError,
)
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project, project_resource
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.leases import Held, lease
from labkeep.ops.stores import PolicyInfo, backend, policy_for, retain_until
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress
    from labkeep.storage.base import ContentStore

#: catalog rows read per page; files in flight per worker thread
PAGE = 2000
AHEAD = 8
#: commit replica rows at least this often
COMMIT_ROWS = 200
COMMIT_SECONDS = 1.0
TIER_ORDER = {"hot": 0, "warm": 1, "cold": 2}
CHUNK = 1 << 20


@dataclass
class _File:
    dataset_id: int
    dataset: str  # PROJECT/DATASET
    project: str
    name: str
    path: str
    size: int
    sha256: bytes
    mtime_ns: int


@dataclass(frozen=True)
class _Ref:
    """What a scope needs of a project or dataset row (plain values: no session)."""

    id: int
    name: str
    tree_state: str = "present"
    sealed: bool = False


@dataclass
class _Scope:
    project: _Ref
    dataset: _Ref
    prefix: str | None
    version: int | None

    @property
    def address(self) -> str:
        return f"{self.project.name}/{self.dataset.name}"


def _scope(proj: Project, d: Dataset, prefix: str | None, version: int | None) -> _Scope:
    return _Scope(
        _Ref(proj.id, proj.name), _Ref(d.id, d.name, d.tree_state, d.sealed), prefix, version
    )


def _scopes(keep: Keep, address: str, action: str) -> list[_Scope]:
    """The datasets *address* covers that the principal may do *action* on."""
    addr = parse_address(address)
    with keep.catalog.read() as session:
        if addr.dataset:
            proj, dataset = find_dataset(
                keep, session, addr.project, addr.dataset, action, version=addr.version
            )
            if addr.version is not None:
                from labkeep.ops.listing import _check_version

                _check_version(session, dataset.id, addr.dataset_address, addr.version)
            return [_scope(proj, dataset, addr.path, addr.version)]
        proj = find_project(keep, session, addr.project)
        datasets = session.execute(
            select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
        ).scalars()
        scopes = [
            _scope(proj, d, None, None)
            for d in datasets
            if allowed(keep.principal, action, project_resource(session, proj, d))
        ]
        if not scopes:
            check(keep.principal, action, project_resource(session, proj))
        return scopes


def _where(scope: _Scope) -> Any:
    from labkeep.ops.listing import entries_at

    clause = entries_at(scope.dataset.id, scope.version)
    if scope.prefix:
        p = scope.prefix.rstrip("/")
        clause = and_(
            clause, or_(Entry.path == p, and_(Entry.path >= p + "/", Entry.path < p + "0"))
        )
    return clause


def _files(keep: Keep, scope: _Scope) -> Iterator[_File]:
    """The scope's files in path order, a page at a time (flat memory)."""
    after: str | None = None
    while True:
        query = select(Entry.path, Entry.size, Entry.sha256, Entry.mtime_ns).where(_where(scope))
        if after is not None:
            query = query.where(Entry.path > after)
        with keep.catalog.read() as session:
            rows = session.execute(query.order_by(Entry.path).limit(PAGE)).all()
        for path, size, digest, mtime in rows:
            yield _File(
                scope.dataset.id,
                scope.address,
                scope.project.name,
                scope.dataset.name,
                path,
                int(size),
                bytes(digest),
                int(mtime),
            )
        if len(rows) < PAGE:
            return
        after = rows[-1][0]


def _totals(keep: Keep, scopes: list[_Scope]) -> tuple[int, int]:
    files = size = 0
    with keep.catalog.read() as session:
        for scope in scopes:
            n, b = session.execute(
                select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
                    _where(scope)
                )
            ).one()
            files, size = files + int(n), size + int(b)
    return files, size


def _check_found(scopes: list[_Scope], totals: tuple[int, int], address: str) -> None:
    if totals[0] == 0 and any(s.prefix for s in scopes):
        raise NotFound(f"no file or folder {address!r}", hint="see 'labkeep ls'")


# -- the stores one operation talks to ------------------------------------------------


class _Stores:
    """Backends opened once per operation; a store found unreachable is skipped (counts
    as holding nothing) for the rest of it."""

    def __init__(self, keep: Keep) -> None:
        self.keep = keep
        self.rows: dict[int, Store] = {}
        self.backends: dict[int, ContentStore] = {}
        self.down: dict[int, str] = {}
        self._lock = threading.Lock()
        with keep.catalog.read() as session:
            for row in session.execute(select(Store)).scalars():
                session.expunge(row)
                self.rows[row.id] = row

    def by_name(self, name: str) -> Store:
        for row in self.rows.values():
            if row.name == name:
                return row
        raise NotFound(f"no store named {name!r}", hint="'labkeep store list' shows the stores")

    @property
    def tree_id(self) -> int:
        return self.by_name("tree").id

    def get(self, store_id: int, *, require: bool = False) -> ContentStore | None:
        """The backend of a content store, or None when it cannot be reached (with
        *require*: raise StoreUnavailable naming it)."""
        with self._lock:
            if store_id in self.backends:
                return self.backends[store_id]
            if store_id in self.down:
                if require:
                    raise StoreUnavailable(self.down[store_id], hint=_RETRY)
                return None
            row = self.rows[store_id]
            try:
                store = backend(row)
                health = store.check()
            except StoreUnavailable as exc:
                self.down[store_id] = exc.message
            else:
                if health.reachable:
                    self.backends[store_id] = store
                    return store
                store.close()
                self.down[store_id] = f"store {row.name!r} cannot be reached: {health.message}"
            if require:
                raise StoreUnavailable(self.down[store_id], hint=_RETRY)
            return None

    def close(self) -> None:
        for store in self.backends.values():
            with contextlib.suppress(Exception):
                store.close()


_RETRY = "fix that, then run the same command again: what was done is kept"


@dataclass(frozen=True)
class _Rep:
    """A replica row as plain values."""

    id: int
    store_id: int
    sha256: bytes
    size: int
    key: str
    status: str
    checked_by: str
    retain_until: datetime | None


def _reps(session: Session, *where: Any) -> list[_Rep]:
    return [
        _Rep(i, s, bytes(h), int(n), k, st, by, u)
        for i, s, h, n, k, st, by, u in session.execute(
            select(
                Replica.id,
                Replica.store_id,
                Replica.sha256,
                Replica.size,
                Replica.key,
                Replica.status,
                Replica.checked_by,
                Replica.retain_until,
            ).where(*where)
        )
    ]


def _sources(
    session: Session, stores: _Stores, sha256: bytes, exclude: set[int]
) -> list[tuple[_Rep, Store]]:
    """Replicas of *sha256* marked good, nearest tier first."""
    rows = _reps(session, Replica.sha256 == sha256, Replica.status == "ok")
    found = [(r, stores.rows[r.store_id]) for r in rows if r.store_id not in exclude]
    found.sort(key=lambda rs: (TIER_ORDER.get(rs[1].tier, 9), rs[1].id))
    return found


def _tree_file(keep: Keep, f: _File) -> str | None:
    """The tree copy's path when the tree holds a regular file of the right size."""
    path = keep.tree.file_path(f.project, f.name, f.path)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return str(path) if stat.S_ISREG(st.st_mode) and st.st_size == f.size else None


def _hash_stream(chunks: Iterable[bytes]) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    total = 0
    try:
        for chunk in chunks:
            digest.update(chunk)
            total += len(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return digest.digest(), total


# -- records ----------------------------------------------------------------------------


class _Run:
    """What every copy operation shares: the report sink, progress and the thread pool."""

    def __init__(
        self,
        keep: Keep,
        action: str,
        info: dict[str, Any],
        progress: Progress | None,
        on_result: Callable[[Result], None] | None,
        keep_results: bool,
        jobs: int | None,
    ) -> None:
        self.keep = keep
        self.action = action
        self.report = Report(action, info=info, keep_all=keep_results)
        self.progress = progress
        self.on_result = on_result
        self.jobs = jobs or keep.config.ingest_jobs or max(4, 2 * (os.cpu_count() or 1))
        self.stores = _Stores(keep)

    def emit(self, result: Result, size: int = 0) -> None:
        self.report.add(result)
        if self.on_result is not None:
            self.on_result(result)
        if self.progress is not None:
            self.progress.advance(1, size)

    def result(self, f: _File, status: str, message: str | None = None, **extra: Any) -> Result:
        return Result(
            self.action,
            status,
            path=f.path,
            dataset=f.dataset,
            size=f.size,
            sha256=f.sha256.hex(),
            message=message,
            extra=extra,
        )

    def start(self, scopes: list[_Scope], address: str) -> None:
        totals = _totals(self.keep, scopes)
        _check_found(scopes, totals, address)
        if self.progress is not None:
            self.progress.start(*totals)

    def on_bytes(self) -> Callable[[int], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda n: progress.advance(0, n)

    def parallel(
        self,
        files: Iterable[_File],
        work: Callable[[_File], Any],
        done: Callable[[_File, Any], None],
        submitted: Callable[[_File, Future[Any]], None] | None = None,
    ) -> None:
        """Run *work* on the pool for each file (a bounded window in flight, results in
        order) and hand each outcome (a value or the exception) to *done*."""
        window: deque[tuple[_File, Future[Any]]] = deque()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix=f"labkeep-{self.action}") as pool:
            try:
                for f in files:
                    fut = pool.submit(work, f)
                    if submitted is not None:
                        submitted(f, fut)
                    window.append((f, fut))
                    while len(window) >= self.jobs * AHEAD or (window and window[0][1].done()):
                        g, fut = window.popleft()
                        done(g, _outcome(fut))
                while window:
                    g, fut = window.popleft()
                    done(g, _outcome(fut))
            finally:
                for _, fut in window:
                    fut.cancel()

    def close(self) -> None:
        self.stores.close()


def _outcome(fut: Future[Any]) -> Any:
    try:
        return fut.result()
    except (LabkeepError, OSError) as exc:
        return exc


def _message(exc: BaseException) -> str:
    if isinstance(exc, LabkeepError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class _Recorder:
    """Replica rows to commit, in batches: a row only after its content is in place."""

    def __init__(self, keep: Keep, store: Store, held: Held | None = None) -> None:
        self.keep = keep
        self.store = store
        self.held = held
        self.rows: dict[bytes, dict[str, Any]] = {}
        self.waiting: list[tuple[Result, int]] = []
        self.last = time.monotonic()

    def add(self, sha256: bytes, size: int, key: str, until: datetime | None, by: str) -> None:
        self.rows[sha256] = {
            "sha256": sha256,
            "size": size,
            "key": key,
            "retain_until": until,
            "checked_by": by,
        }

    def due(self) -> bool:
        return len(self.rows) >= COMMIT_ROWS or time.monotonic() - self.last >= COMMIT_SECONDS

    def commit(self) -> None:
        if self.rows:
            if self.held is not None:
                self.held.check()
            record(self.keep, self.store.id, list(self.rows.values()))
        self.rows.clear()
        self.last = time.monotonic()


def record(keep: Keep, store_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert or refresh replica rows (content verified in the store just now)."""
    now = utcnow()
    with keep.catalog.write() as session:
        known = {
            bytes(sha): rid
            for sha, rid in session.execute(
                select(Replica.sha256, Replica.id).where(
                    Replica.store_id == store_id, Replica.sha256.in_([r["sha256"] for r in rows])
                )
            )
        }
        fresh = [
            {**r, "store_id": store_id, "created_at": now, "verified_at": now, "status": "ok"}
            for r in rows
            if r["sha256"] not in known
        ]
        again = [
            {
                "id": known[r["sha256"]],
                "verified_at": now,
                "status": "ok",
                "checked_by": r["checked_by"],
                "key": r["key"],
                **({"retain_until": r["retain_until"]} if r["retain_until"] else {}),
            }
            for r in rows
            if r["sha256"] in known
        ]
        if fresh:
            session.execute(insert(Replica), fresh)
        if again:
            session.execute(update(Replica), again)


# -- copy -----------------------------------------------------------------------------


def copy(
    keep: Keep,
    address: str,
    *,
    to: str,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Copy the files of ``PROJECT[/DATASET[/PATH]][@VERSION]`` to the store *to*.

    Content the store already holds (verified) is ``notneeded``; the rest is read from
    the tree (or, when the tree has no good copy, from another store), sent with its
    SHA-256, verified by the store, and only then recorded.
    """
    scopes = _scopes(keep, address, "dataset.copy")
    run = _Run(
        keep, "copy", {"target": address, "store": to}, progress, on_result, keep_results, jobs
    )
    try:
        target = run.stores.by_name(to)
        if target.kind == "tree":
            raise UsageError(
                "copies into the tree are made by 'labkeep get'", hint=f"labkeep get {address}"
            )
        store = run.stores.get(target.id, require=True)
        assert store is not None
        run.start(scopes, address)
        for scope in scopes:
            with lease(
                keep, f"copies:{scope.dataset.id}", what=f"a copy job on {scope.address}"
            ) as held:
                _copy_scope(run, scope, target, store, held)
        _event(keep, "copy", address, run.report, store=to)
    finally:
        run.close()
    return run.report


def _copy_scope(run: _Run, scope: _Scope, target: Store, store: ContentStore, held: Held) -> None:
    keep = run.keep
    recorder = _Recorder(keep, target, held)
    until = retain_until(target)
    #: content being sent now: a second file with it waits for the first
    inflight: dict[bytes, Future[Any]] = {}
    tree_present = scope.dataset.tree_state == "present"
    checked_by = "server" if store.capabilities.server_checksum else "hash"

    def todo() -> Iterator[_File]:
        for page in _pages(_files(keep, scope)):
            with keep.catalog.read() as session:
                held_ok = {
                    bytes(sha)
                    for (sha,) in session.execute(
                        select(Replica.sha256).where(
                            Replica.store_id == target.id,
                            Replica.status == "ok",
                            Replica.sha256.in_({f.sha256 for f in page}),
                        )
                    )
                }
            for f in page:
                first = inflight.get(f.sha256)
                if first is not None and not isinstance(_outcome(first), BaseException):
                    recorder.waiting.append(
                        (run.result(f, "notneeded", store=target.name, same_as_file=True), f.size)
                    )
                elif f.sha256 in held_ok or f.sha256 in recorder.rows:
                    run.emit(run.result(f, "notneeded", store=target.name), f.size)
                else:
                    yield f

    def work(f: _File) -> str:
        """Put one file's content; returns where it was read from."""
        errors = []
        key = store.key_for(f.sha256)
        if tree_present and (path := _tree_file(keep, f)) is not None:
            try:
                store.put_file(
                    key,
                    path,
                    sha256=f.sha256,
                    size=f.size,
                    on_bytes=run.on_bytes(),
                    retain_until=until,
                )
                return "tree"
            except TransferCorrupted:
                errors.append("the tree copy is damaged (its SHA-256 differs)")
        with keep.catalog.read() as session:
            sources = _sources(session, run.stores, f.sha256, {target.id})
        for replica, row in sources:
            source = run.stores.get(row.id)
            if source is None:
                errors.append(f"store {row.name!r} is unreachable")
                continue
            try:
                store.put_stream(
                    key,
                    source.open(replica.key),
                    sha256=f.sha256,
                    size=f.size,
                    on_bytes=run.on_bytes(),
                    retain_until=until,
                )
                return row.name
            except TransferCorrupted:
                errors.append(f"the copy in {row.name!r} is damaged")
            except NotFound:
                errors.append(f"the copy in {row.name!r} is missing")
        raise _NoSource(
            "no good copy to copy from"
            + (f" ({'; '.join(errors)})" if errors else " (the tree does not hold it)")
            + f"; run 'labkeep verify {f.dataset} --repair'"
        )

    def submitted(f: _File, fut: Future[Any]) -> None:
        inflight[f.sha256] = fut

    def done(f: _File, outcome: Any) -> None:
        if inflight.get(f.sha256) is not None and inflight[f.sha256].done():
            del inflight[f.sha256]
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=target.name))
            if isinstance(outcome, StoreUnavailable) or (
                isinstance(outcome, StorageError) and not isinstance(outcome, TransferCorrupted)
            ):
                _flush(run, recorder)
                raise outcome  # the target is gone or full: stop, keep what was recorded
            return
        recorder.add(f.sha256, f.size, store.key_for(f.sha256), until, checked_by)
        recorder.waiting.append((run.result(f, "ok", store=target.name, source=outcome), 0))
        if recorder.due():
            _flush(run, recorder)

    try:
        run.parallel(todo(), work, done, submitted)
    finally:
        _flush(run, recorder)


class _NoSource(LabkeepError):
    code = "no-source"


def _flush(run: _Run, recorder: _Recorder) -> None:
    recorder.commit()
    for result, size in recorder.waiting:
        run.emit(result, size)
    recorder.waiting.clear()


def _lease(keep: Keep, scope: _Scope) -> contextlib.AbstractContextManager[Held]:
    """The dataset's copies lease: one copy, get, drop, verify or repair at a time."""
    return lease(keep, f"copies:{scope.dataset.id}", what=f"a copy job on {scope.address}")


def _pages(files: Iterator[_File], size: int = 256) -> Iterator[list[_File]]:
    page: list[_File] = []
    for f in files:
        page.append(f)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _event(keep: Keep, action: str, target: str, report: Report, **details: Any) -> None:
    counts = report.counts()
    if not counts.get("ok") and not report.failed:
        return
    with keep.catalog.write() as session:
        event = append_event(session, keep.actor, action, target, {**details, **counts})
    checkpoint(keep, event)


# -- checking copies fresh --------------------------------------------------------------


def _check_replica(
    run: _Run, replica: _Rep, row: Store, f: _File, *, quick: bool
) -> tuple[str, str]:
    """Check one replica now: ("ok"|"damaged"|"missing"|"unreachable", how or why)."""
    store = run.stores.get(row.id)
    if store is None:
        return "unreachable", run.stores.down.get(row.id, "unreachable")
    try:
        if quick:
            stored = store.stat(replica.key)
            if stored is None:
                return "missing", f"not in store {row.name!r}"
            if stored.size != f.size:
                return "damaged", f"size {stored.size} in {row.name!r}, catalog says {f.size}"
            if stored.sha256 is not None and stored.sha256 != f.sha256:
                return "damaged", f"{row.name!r} records another SHA-256"
            return "ok", "server" if stored.sha256 is not None else "size"
        digest, size = _hash_stream(store.open(replica.key))
    except NotFound:
        return "missing", f"not in store {row.name!r}"
    except StoreUnavailable as exc:
        return "unreachable", exc.message
    except (LabkeepError, OSError) as exc:
        return "damaged", f"cannot read it from {row.name!r}: {_message(exc)}"
    if size != f.size or digest != f.sha256:
        return "damaged", f"the copy in {row.name!r} does not hash to the catalog's SHA-256"
    return "ok", "hash"


def _check_tree(keep: Keep, f: _File, *, quick: bool) -> tuple[str, str]:
    path = _tree_file(keep, f)
    if path is None:
        return "missing", "not in the tree (or another size)"
    if quick:
        return "ok", "size"
    try:
        from labkeep.integrity.hashing import hash_file

        hashed = hash_file(path)
    except (LabkeepError, OSError) as exc:
        return "damaged", f"cannot read the tree copy: {_message(exc)}"
    if hashed.sha256 != f.sha256:
        return "damaged", "the tree copy does not hash to the catalog's SHA-256"
    return "ok", "hash"


def _mark(keep: Keep, replica_id: int, status: str, by: str) -> None:
    with keep.catalog.write() as session:
        session.execute(
            update(Replica)
            .where(Replica.id == replica_id)
            .values(status=status, verified_at=utcnow(), checked_by=by)
        )


def _fresh_copies(
    run: _Run,
    f: _File,
    *,
    exclude_store: int | None,
    tree: bool,
    needed: int,
    quick: bool,
) -> tuple[list[str], list[str]]:
    """Count, now, the good copies of *f* outside *exclude_store*, stopping at *needed*.

    Returns (the stores whose copy was confirmed, why others did not count). Replica rows
    are updated with what was found.
    """
    good: list[str] = []
    why: list[str] = []
    if tree:
        state, how = _check_tree(run.keep, f, quick=quick)
        if state == "ok":
            good.append("tree")
        else:
            why.append(f"tree: {how}")
    if len(good) >= needed:
        return good, why
    with run.keep.catalog.read() as session:
        replicas = _reps(session, Replica.sha256 == f.sha256, Replica.status == "ok")
    replicas = [r for r in replicas if r.store_id != exclude_store]
    replicas.sort(key=lambda r: (TIER_ORDER.get(run.stores.rows[r.store_id].tier, 9), r.id))
    for replica in replicas:
        row = run.stores.rows[replica.store_id]
        state, how = _check_replica(run, replica, row, f, quick=quick)
        if state == "ok":
            good.append(row.name)
            if not quick:
                _mark(run.keep, replica.id, "ok", how)
        else:
            why.append(f"{row.name}: {how}")
            if state in ("damaged", "missing"):
                _mark(run.keep, replica.id, state, "hash" if not quick else "size")
        if len(good) >= needed:
            break
    return good, why


# -- drop -------------------------------------------------------------------------------


def drop(
    keep: Keep,
    address: str,
    *,
    from_store: str,
    quick: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Remove the copies of ``PROJECT[/DATASET[/PATH]]`` from one store, file by file,
    only where the policy's ``min_copies`` good copies remain elsewhere (checked now).

    From the tree: whole sealed datasets only, when their project's policy allows
    dropping tree copies (cold data); ``get`` brings them back. Every drop is an event.
    """
    scopes = _scopes(keep, address, "dataset.drop")
    run = _Run(
        keep,
        "drop",
        {"target": address, "store": from_store},
        progress,
        on_result,
        keep_results,
        jobs,
    )
    try:
        source = run.stores.by_name(from_store)
        run.start(scopes, address)
        for scope in scopes:
            with keep.catalog.read() as session:
                policy = policy_for(session, scope.project.id, scope.project.name)
            with lease(
                keep, f"copies:{scope.dataset.id}", what=f"a copy job on {scope.address}"
            ) as held:
                if source.kind == "tree":
                    _drop_tree(run, scope, policy, held, quick=quick)
                else:
                    _drop_store(run, scope, source, policy, held, quick=quick)
        _event(keep, "drop", address, run.report, store=from_store, quick=quick)
    finally:
        run.close()
    return run.report


def _drop_tree(run: _Run, scope: _Scope, policy: PolicyInfo, held: Held, *, quick: bool) -> None:
    keep = run.keep
    if scope.prefix or scope.version is not None:
        raise UsageError(
            "the tree copy is dropped for whole datasets",
            hint=f"labkeep drop {scope.address} --from tree",
        )
    with keep.catalog.read() as session:
        dataset = session.get_one(Dataset, scope.dataset.id)
        sealed, state = dataset.sealed, dataset.tree_state
    if state != "present":
        for f in _files(keep, scope):
            run.emit(run.result(f, "notneeded", "the tree holds no copy", store="tree"), f.size)
        return
    if not sealed:
        raise UsageError(
            f"{scope.address} is not sealed: only a sealed dataset's tree copy can be dropped",
            hint=f"seal it first ('labkeep seal {scope.address}')",
        )
    if not policy.tree_droppable:
        raise UsageError(
            f"the policy of {scope.project.name} keeps tree copies",
            hint=f"allow it for cold data: 'labkeep policy set {scope.project.name} "
            "--tree-droppable'",
        )
    needed = policy.min_copies
    short = 0

    def work(f: _File) -> tuple[list[str], list[str]]:
        return _fresh_copies(run, f, exclude_store=None, tree=False, needed=needed, quick=quick)

    def done(f: _File, outcome: Any) -> None:
        nonlocal short
        if isinstance(outcome, BaseException):
            short += 1
            run.emit(run.result(f, "error", _message(outcome), store="tree"))
            return
        good, why = outcome
        if len(good) < needed:
            short += 1
            run.emit(
                run.result(
                    f,
                    "impossible",
                    _short_message(good, why, needed),
                    store="tree",
                    copies=good,
                ),
                f.size,
            )

    with keep.tree.lock(scope.project.name, scope.dataset.name, what="drop"):
        run.parallel(_files(keep, scope), work, done)
        if short:
            raise BelowPolicy(
                f"{short:,} files of {scope.address} have fewer than {needed} good copies "
                "outside the tree: nothing was dropped",
                hint=f"copy them first ('labkeep copy {scope.address} --to STORE'), or repair "
                f"damaged copies ('labkeep verify {scope.address} --repair')",
            )
        held.check()
        with keep.catalog.write() as session:
            dataset = session.get_one(Dataset, scope.dataset.id)
            dataset.tree_state = "dropped"
            append_event(session, keep.actor, "drop.tree", scope.address, {"min_copies": needed})
        from labkeep.ops.seal import _protect

        raw = keep.tree.dataset_dir(scope.project.name, scope.dataset.name) / "raw"
        _protect(raw, False)
        for f in _files(keep, scope):
            path = keep.tree.file_path(f.project, f.name, f.path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                run.emit(run.result(f, "error", f"cannot delete: {exc.strerror}", store="tree"))
                continue
            run.emit(run.result(f, "ok", store="tree"), f.size)
        for folder, _dirs, _names in os.walk(raw, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _drop_store(
    run: _Run, scope: _Scope, source: Store, policy: PolicyInfo, held: Held, *, quick: bool
) -> None:
    keep = run.keep
    store = run.stores.get(source.id, require=True)
    assert store is not None
    needed = policy.min_copies
    tree_present = scope.dataset.tree_state == "present" and scope.version is None
    now = utcnow()

    def work(f: _File) -> Any:
        with keep.catalog.read() as session:
            found = _reps(session, Replica.store_id == source.id, Replica.sha256 == f.sha256)
            if not found:
                return "absent"
            replica = found[0]
            other = session.execute(
                select(Project.name, Dataset.name)
                .join(Dataset, Dataset.project_id == Project.id)
                .join(Entry, Entry.dataset_id == Dataset.id)
                .where(Entry.sha256 == f.sha256, Entry.dataset_id != f.dataset_id)
                .limit(1)
            ).first()
        if other is not None:
            return ("shared", f"{other[0]}/{other[1]}")
        if replica.retain_until is not None and replica.retain_until > now:
            return ("locked", replica.retain_until)
        return replica, _fresh_copies(
            run, f, exclude_store=source.id, tree=tree_present, needed=needed, quick=quick
        )

    def done(f: _File, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=source.name))
            return
        if outcome == "absent":
            run.emit(
                run.result(f, "notneeded", f"not in {source.name!r}", store=source.name), f.size
            )
            return
        if outcome[0] == "shared":
            run.emit(
                run.result(
                    f,
                    "notneeded",
                    f"kept: the same content is part of {outcome[1]}",
                    store=source.name,
                ),
                f.size,
            )
            return
        if outcome[0] == "locked":
            run.emit(
                run.result(
                    f,
                    "impossible",
                    f"under WORM retention in {source.name!r} until {isoformat(outcome[1])}",
                    store=source.name,
                ),
                f.size,
            )
            return
        replica, (good, why) = outcome
        if len(good) < needed:
            run.emit(
                run.result(
                    f,
                    "impossible",
                    _short_message(good, why, needed),
                    store=source.name,
                    copies=good,
                ),
                f.size,
            )
            return
        held.check()
        with keep.catalog.write() as session:  # the row goes first, then the content
            session.execute(delete(Replica).where(Replica.id == replica.id))
        try:
            store.delete(replica.key)
        except RetentionLocked as exc:
            record(keep, source.id, [_row_of(replica)])  # still there: still a copy
            run.emit(run.result(f, "impossible", exc.message, store=source.name), f.size)
            return
        except (LabkeepError, OSError) as exc:
            run.emit(
                run.result(
                    f,
                    "error",
                    f"recorded as dropped, but deleting it failed: {_message(exc)} "
                    "(the content may remain in the store, unrecorded)",
                    store=source.name,
                ),
                f.size,
            )
            return
        run.emit(run.result(f, "ok", store=source.name, copies=good), f.size)

    run.parallel(_files(keep, scope), work, done)


def _row_of(replica: _Rep) -> dict[str, Any]:
    return {
        "sha256": replica.sha256,
        "size": replica.size,
        "key": replica.key,
        "retain_until": replica.retain_until,
        "checked_by": replica.checked_by,
    }


# -- bringing content into the tree ----------------------------------------------------


def _fetch_to_tree(run: _Run, f: _File, partial_dir: str) -> str:
    """Write *f*'s content into the tree from a good replica (hashed as it is written,
    renamed over its final name only when it matches). Returns the store it came from."""
    keep = run.keep
    with keep.catalog.read() as session:
        sources = _sources(session, run.stores, f.sha256, set())
    errors = []
    for replica, row in sources:
        store = run.stores.get(row.id)
        if store is None:
            errors.append(f"store {row.name!r} is unreachable")
            continue
        partial = os.path.join(partial_dir, uuid.uuid4().hex)
        try:
            _write_verified(store.open(replica.key), partial, f, run.on_bytes())
        except NotFound:
            errors.append(f"the copy in {row.name!r} is missing")
            _mark(keep, replica.id, "missing", "hash")
            continue
        except TransferCorrupted:
            errors.append(f"the copy in {row.name!r} is damaged")
            _mark(keep, replica.id, "damaged", "hash")
            continue
        except StoreUnavailable as exc:
            errors.append(exc.message)
            continue
        final = keep.tree.file_path(f.project, f.name, f.path)
        try:
            os.makedirs(final.parent, exist_ok=True)
            if final.is_dir():
                raise UsageError(f"a folder is in the way of {f.path}")
            os.replace(partial, final)
            from labkeep.storage import fsync_dir

            fsync_dir(final.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return row.name
    raise _NoSource(
        "no good copy in any store"
        + (f" ({'; '.join(errors)})" if errors else "")
        + f"; see 'labkeep whereis {f.dataset}/{f.path}'"
    )


def _write_verified(
    chunks: Iterator[bytes], partial: str, f: _File, on_bytes: Callable[[int], None] | None
) -> None:
    digest = hashlib.sha256()
    total = 0
    try:
        with open(partial, "xb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                total += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if total != f.size or digest.digest() != f.sha256:
        os.unlink(partial)
        raise TransferCorrupted(
            f"what was read for {f.dataset}/{f.path} does not match the catalog"
        )
    os.utime(partial, ns=(f.mtime_ns, f.mtime_ns))


@contextlib.contextmanager
def _writable_tree(keep: Keep, scope: _Scope, sealed: bool) -> Iterator[None]:
    """Under the dataset's lock: raw/ writable for the block; a sealed dataset's raw/ is
    protected again afterwards. The seal intent is recorded first, so a crash in between
    leaves a state that ``labkeep seal`` finishes (and ingest refuses)."""
    project, name = scope.project.name, scope.dataset.name
    from labkeep.ops.seal import _protect

    raw = keep.tree.dataset_dir(project, name) / "raw"
    if sealed:
        keep.tree.set_seal_intent(project, name, "seal")
        _protect(raw, False)
    try:
        yield
    finally:
        if sealed:
            _protect(raw, True)
            keep.tree.set_seal_intent(project, name, None)


def get(
    keep: Keep,
    address: str,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Bring the files of ``PROJECT[/DATASET]`` back into the tree from other stores.

    Files the tree holds with the catalog's size are ``notneeded``; the others are read
    from the nearest good replica, verified against the catalog's SHA-256 and put in
    place (through the seal, which is restored after). A dataset dropped from the tree is
    ``present`` again once every file is back.
    """
    scopes = _scopes(keep, address, "dataset.copy")
    for scope in scopes:
        if scope.prefix or scope.version is not None:
            raise UsageError(
                "get brings whole datasets back into the tree",
                hint="to fetch one file or an old version, use 'labkeep export'",
            )
    run = _Run(keep, "get", {"target": address}, progress, on_result, keep_results, jobs)
    try:
        run.start(scopes, address)
        for scope in scopes:
            with lease(
                keep, f"copies:{scope.dataset.id}", what=f"a copy job on {scope.address}"
            ) as held:
                _get_scope(run, scope, held)
        _event(keep, "get", address, run.report)
    finally:
        run.close()
    return run.report


def _get_scope(run: _Run, scope: _Scope, held: Held) -> None:
    keep = run.keep
    project, name = scope.project.name, scope.dataset.name
    with keep.catalog.read() as session:
        dataset = session.get_one(Dataset, scope.dataset.id)
        sealed = dataset.sealed
    failed = 0
    restored: list[str] = []
    with keep.tree.lock(project, name, what="get"):
        partial = str(keep.tree.prepare_dataset(project, name))
        missing = (f for f in _files(keep, scope) if not _quick_present(keep, run, f))

        def done(f: _File, outcome: Any) -> None:
            nonlocal failed
            if isinstance(outcome, BaseException):
                failed += 1
                run.emit(run.result(f, "error", _message(outcome), store="tree"))
            else:
                restored.append(f.path)
                run.emit(run.result(f, "ok", store="tree", source=outcome))

        with _writable_tree(keep, scope, sealed):
            run.parallel(missing, lambda f: _fetch_to_tree(run, f, partial), done)
        held.check()
        _tree_verified(keep, scope.dataset.id, restored)
        if not failed:
            with keep.catalog.write() as session:
                dataset = session.get_one(Dataset, scope.dataset.id)
                if dataset.tree_state != "present":
                    dataset.tree_state = "present"
                    append_event(session, keep.actor, "get.tree", scope.address, {})


def _quick_present(keep: Keep, run: _Run, f: _File) -> bool:
    if _tree_file(keep, f) is not None:
        run.emit(run.result(f, "notneeded", store="tree"), f.size)
        return True
    return False


def _tree_verified(keep: Keep, dataset_id: int, paths: list[str]) -> None:
    """Tree copies just written and hashed: their fixity is known good."""
    now = utcnow()
    with keep.catalog.write() as session:
        for start in range(0, len(paths), 1000):
            session.execute(
                update(Entry)
                .where(
                    Entry.dataset_id == dataset_id,
                    Entry.valid_to.is_(None),
                    Entry.path.in_(paths[start : start + 1000]),
                )
                .values(verify_status="ok", verified_at=now)
            )


# -- repair -------------------------------------------------------------------------------


def repair_tree(
    keep: Keep,
    address: str,
    paths: list[str],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Replace damaged or missing tree files of one dataset from good replicas (the
    seal is written through under a recorded event and restored)."""
    scopes = _scopes(keep, address, "dataset.repair")
    (scope,) = scopes
    run = _Run(
        keep, "repair", {"target": address, "store": "tree"}, progress, on_result, True, jobs
    )
    try:
        with _lease(keep, scope):
            with keep.catalog.read() as session:
                sealed = session.get_one(Dataset, scope.dataset.id).sealed
            wanted = set(paths)
            files = [f for f in _files(keep, scope) if f.path in wanted]
            repaired: list[str] = []

            def done(f: _File, outcome: Any) -> None:
                if isinstance(outcome, BaseException):
                    run.emit(run.result(f, "error", _message(outcome), store="tree"))
                else:
                    repaired.append(f.path)
                    run.emit(run.result(f, "ok", "repaired", store="tree", source=outcome))

            project, name = scope.project.name, scope.dataset.name
            with keep.tree.lock(project, name, what="repair"):
                partial = str(keep.tree.prepare_dataset(project, name))
                with _writable_tree(keep, scope, sealed):
                    run.parallel(files, lambda f: _fetch_to_tree(run, f, partial), done)
                _tree_verified(keep, scope.dataset.id, repaired)
        if repaired:
            with keep.catalog.write() as session:
                event = append_event(
                    session,
                    keep.actor,
                    "repair",
                    scope.address,
                    {
                        "store": "tree",
                        "files": len(repaired),
                        "sealed": sealed,
                        "paths": repaired[:100],
                    },
                )
            checkpoint(keep, event)
    finally:
        run.close()
    return run.report


# -- verify and repair the replicas in one store --------------------------------------


def verify_store(
    keep: Keep,
    address: str,
    *,
    store: str,
    quick: bool = False,
    repair: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Re-read and re-hash the replicas that *store* holds of ``PROJECT[/DATASET]``.

    With *quick*, trust the store: its object's size and its own SHA-256 (said so in
    every record). With *repair*, a damaged or missing replica is replaced from a good
    copy (a WORM copy under retention cannot be replaced, and says until when).
    """
    action = "dataset.repair" if repair else "dataset.verify"
    scopes = _scopes(keep, address, action)
    run = _Run(
        keep,
        "verify",
        {"target": address, "store": store, "quick": quick},
        progress,
        on_result,
        keep_results,
        jobs,
    )
    try:
        target = run.stores.by_name(store)
        if target.kind == "tree":
            raise UsageError("the tree is verified by 'labkeep verify' without --store")
        backend_ = run.stores.get(target.id, require=True)
        assert backend_ is not None
        run.start(scopes, address)
        for scope in scopes:
            with _lease(keep, scope):
                _verify_scope(run, scope, target, backend_, quick=quick, repair=repair)
        states = run.report.states()
        run.report.info["states"] = {s: states.get(s, 0) for s in ("ok", "modified", "missing")}
        _event(
            keep,
            "verify.store",
            address,
            run.report,
            store=store,
            quick=quick,
            **run.report.info["states"],
        )
    finally:
        run.close()
    return run.report


def _verify_scope(
    run: _Run, scope: _Scope, target: Store, store: ContentStore, *, quick: bool, repair: bool
) -> None:
    keep = run.keep
    seen: set[bytes] = set()
    tree_present = scope.dataset.tree_state == "present" and scope.version is None
    until = retain_until(target)

    def work(f: _File) -> Any:
        with keep.catalog.read() as session:
            found = _reps(session, Replica.store_id == target.id, Replica.sha256 == f.sha256)
        if not found:
            return None
        replica = found[0]
        state, how = _check_replica(run, replica, target, f, quick=quick)
        if state == "unreachable":
            raise StoreUnavailable(how, hint=_RETRY)
        _mark(keep, replica.id, state, how if state == "ok" else ("size" if quick else "hash"))
        fixed = None
        if state != "ok" and repair:
            fixed = _repair_replica(run, f, replica, target, store, until, tree_present)
        return state, how, fixed

    def done(f: _File, outcome: Any) -> None:
        if isinstance(outcome, StoreUnavailable):
            raise outcome
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=target.name))
            return
        if outcome is None:
            run.emit(
                run.result(f, "notneeded", f"no copy in {target.name!r}", store=target.name),
                f.size,
            )
            return
        state, how, fixed = outcome
        if state == "ok":
            result = run.result(f, "ok", store=target.name, checked_by=how)
            result.state = "ok"
        else:
            shown = "modified" if state == "damaged" else "missing"
            message = f"{how} (store {target.name!r})"
            if fixed is not None:
                ok, note = fixed
                message += f"; {note}"
                result = run.result(f, "ok" if ok else "error", message, store=target.name)
                if ok:
                    result.extra["repaired"] = True
            else:
                result = run.result(f, "error", message, store=target.name)
            result.state = shown
        if f.sha256 in seen:
            result.extra["same_content_as_earlier_file"] = True
        seen.add(f.sha256)
        if len(seen) > 100_000:
            seen.clear()
        run.emit(result, f.size)

    run.parallel(_files(keep, scope), work, done)


def _repair_replica(
    run: _Run,
    f: _File,
    replica: _Rep,
    target: Store,
    store: ContentStore,
    until: datetime | None,
    tree_present: bool,
) -> tuple[bool, str]:
    """Replace a damaged or missing replica from a good copy; (done, what happened)."""
    keep = run.keep
    if replica.retain_until is not None and replica.retain_until > utcnow():
        return False, (
            f"under WORM retention until {isoformat(replica.retain_until)}: it cannot be "
            "replaced there; the other copies hold it"
        )
    try:
        store.delete(replica.key)
    except (LabkeepError, OSError) as exc:
        return False, f"cannot remove the damaged copy: {_message(exc)}"
    key = store.key_for(f.sha256)
    if tree_present and (path := _tree_file(keep, f)) is not None:
        try:
            store.put_file(key, path, sha256=f.sha256, size=f.size, retain_until=until)
            record(keep, target.id, [_fresh_row(f, key, until, store)])
            return True, "repaired from the tree"
        except TransferCorrupted:
            pass
    with keep.catalog.read() as session:
        sources = _sources(session, run.stores, f.sha256, {target.id})
    for other, row in sources:
        source = run.stores.get(row.id)
        if source is None:
            continue
        try:
            store.put_stream(
                key, source.open(other.key), sha256=f.sha256, size=f.size, retain_until=until
            )
        except (TransferCorrupted, NotFound):
            continue
        record(keep, target.id, [_fresh_row(f, key, until, store)])
        return True, f"repaired from {row.name!r}"
    return False, "no good copy to repair it from"


def _fresh_row(f: _File, key: str, until: datetime | None, store: ContentStore) -> dict[str, Any]:
    return {
        "sha256": f.sha256,
        "size": f.size,
        "key": key,
        "retain_until": until,
        "checked_by": "server" if store.capabilities.server_checksum else "hash",
    }


# -- where content lives ---------------------------------------------------------------


def whereis(keep: Keep, address: str) -> dict[str, Any]:
    """Every store holding ``PROJECT/DATASET/PATH[@VERSION]`` (a file), when each copy was
    last checked and what was found; for a dataset, the same per store (files held of
    how many, the oldest check, WORM retention)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path is None:
        return copies_of(keep, address)
    with keep.catalog.read() as session:
        proj, dataset = find_dataset(
            keep,
            session,
            addr.project,
            addr.dataset,
            "dataset.read",
            version=addr.version,
            path=addr.path,
        )
        from labkeep.ops.listing import entries_at

        row = session.execute(
            select(
                Entry.size, Entry.sha256, Entry.valid_to, Entry.verified_at, Entry.verify_status
            ).where(entries_at(dataset.id, addr.version), Entry.path == addr.path)
        ).first()
        if row is None:
            raise NotFound(f"no file {addr.path!r} in {addr.dataset_address}")
        size, digest, valid_to, t_at, t_status = row
        copies: list[dict[str, Any]] = []
        if valid_to is None and dataset.tree_state == "present":
            copies.append(
                {
                    "store": "tree",
                    "kind": "tree",
                    "tier": "hot",
                    "status": {"modified": "damaged"}.get(t_status or "", t_status or "unverified"),
                    "verified_at": isoformat(t_at),
                    "key": f"{proj.name}/{dataset.name}/{addr.path}",
                }
            )
        stores = {s.id: s for s in session.execute(select(Store)).scalars()}
        for r in session.execute(
            select(Replica).where(Replica.sha256 == digest).order_by(Replica.store_id)
        ).scalars():
            s = stores[r.store_id]
            copies.append(
                {
                    "store": s.name,
                    "kind": s.kind,
                    "tier": s.tier,
                    "status": r.status,
                    "verified_at": isoformat(r.verified_at),
                    "checked_by": r.checked_by,
                    "retain_until": isoformat(r.retain_until),
                    "offsite": bool(s.offsite),
                    "key": r.key,
                }
            )
        policy = policy_for(session, proj.id, proj.name)
    good = [c for c in copies if c["status"] in ("ok", "unverified")]
    return {
        "file": f"{addr.dataset_address}/{addr.path}",
        "size": int(size),
        "sha256": bytes(digest).hex(),
        "copies": copies,
        "good_copies": len(good),
        "min_copies": policy.min_copies,
    }


def copies_of(keep: Keep, address: str) -> dict[str, Any]:
    """A dataset's copies, store by store (see :func:`whereis`)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        proj, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        return dataset_copies(session, proj, dataset)


def dataset_copies(session: Session, proj: Project, dataset: Dataset) -> dict[str, Any]:
    """The 3-2-1 picture of one dataset's current files (the caller may read it)."""
    from labkeep.ops.verify import verification_of

    address = f"{proj.name}/{dataset.name}"
    current = and_(Entry.dataset_id == dataset.id, Entry.valid_to.is_(None))
    n_files, n_bytes = session.execute(
        select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(current)
    ).one()
    stores = {s.id: s for s in session.execute(select(Store)).scalars()}
    copies: list[dict[str, Any]] = []
    if dataset.tree_state == "present":
        fixity: dict[str, Any] = verification_of(session, dataset, address)
        copies.append(
            {
                "store": "tree",
                "kind": "tree",
                "tier": "hot",
                "medium": stores_tree_medium(stores),
                "offsite": False,
                "files": int(n_files),
                "complete": True,
                "verified_at": fixity["last_verify"],
                "ok": bool(fixity["ok"]) or not fixity["last_verify"],
                "damaged": int(fixity["files"].get("modified", 0))
                + int(fixity["files"].get("missing", 0)),
            }
        )
    rows = session.execute(
        select(
            Replica.store_id,
            func.count(Entry.id),
            func.min(Replica.verified_at),
            func.min(Replica.retain_until),
            func.count(Entry.id).filter(Replica.status != "ok"),
        )
        .join(Replica, Replica.sha256 == Entry.sha256)
        .where(current)
        .group_by(Replica.store_id)
    ).all()
    for store_id, held, oldest, until, bad in rows:
        s = stores[store_id]
        copies.append(
            {
                "store": s.name,
                "kind": s.kind,
                "tier": s.tier,
                "medium": s.medium,
                "offsite": bool(s.offsite),
                "files": int(held),
                "complete": int(held) == int(n_files),
                "verified_at": isoformat(oldest),
                "ok": not bad,
                "damaged": int(bad or 0),
                "retain_until": isoformat(until),
            }
        )
    policy = policy_for(session, proj.id, proj.name)
    full = [c for c in copies if c["complete"] and c["ok"]]
    media = {c["medium"] for c in full}
    offsite = sum(1 for c in full if c["offsite"])
    below = []
    if n_files:
        if len(full) < policy.min_copies:
            below.append(f"{len(full)} of {policy.min_copies} copies")
        if len(media) < policy.min_media:
            below.append(f"{len(media)} of {policy.min_media} kinds of media")
        if offsite < policy.min_offsite:
            below.append(f"{offsite} of {policy.min_offsite} off-site copies")
    fix = None
    if below:
        candidates = [
            s.name
            for s in stores.values()
            if s.kind != "tree" and s.name not in {c["store"] for c in full}
        ]
        if any(not c["ok"] for c in copies):
            fix = f"labkeep verify {address} --repair"
        elif candidates:
            fix = f"labkeep copy {address} --to {candidates[0]}"
        else:
            fix = "add a store ('labkeep store add ...'), then copy the dataset to it"
    return {
        "dataset": address,
        "files": int(n_files),
        "bytes": int(n_bytes),
        "tree": dataset.tree_state,
        "copies": copies,
        "good_copies": len(full),
        "policy": policy.to_dict(),
        "below_policy": below,
        "fix": fix,
    }


def stores_tree_medium(stores: dict[int, Store]) -> str:
    for s in stores.values():
        if s.kind == "tree":
            return s.medium
    return "disk"


def policy_check(keep: Keep, project: str | None = None) -> list[dict[str, Any]]:
    """Every dataset (the principal may read) and its copies against its policy."""
    out = []
    with keep.catalog.read() as session:
        if project is not None:
            projects = [find_project(keep, session, project)]
        else:
            projects = list(session.execute(select(Project).order_by(Project.name)).scalars())
        for proj in projects:
            for dataset in session.execute(
                select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
            ).scalars():
                if not allowed(
                    keep.principal, "dataset.read", project_resource(session, proj, dataset)
                ):
                    continue
                out.append(dataset_copies(session, proj, dataset))
    return out


def policy_apply(
    keep: Keep,
    project: str | None = None,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Run the copy-on-seal rules now: copy every sealed dataset to the stores its
    project's policy names (what a background worker will do after each seal)."""
    report = Report("policy.apply", info={"project": project}, keep_all=keep_results)
    with keep.catalog.read() as session:
        if project is not None:
            projects = [find_project(keep, session, project)]
        else:
            projects = list(session.execute(select(Project).order_by(Project.name)).scalars())
        work: list[tuple[str, str]] = []
        for proj in projects:
            policy = policy_for(session, proj.id, proj.name)
            if not policy.on_seal:
                continue
            for dataset in session.execute(
                select(Dataset).where(Dataset.project_id == proj.id, Dataset.sealed.is_(True))
            ).scalars():
                if allowed(
                    keep.principal, "dataset.copy", project_resource(session, proj, dataset)
                ):
                    work.extend((f"{proj.name}/{dataset.name}", s) for s in policy.on_seal)
    for address, store in work:
        part = copy(
            keep,
            address,
            to=store,
            jobs=jobs,
            progress=progress,
            on_result=on_result,
            keep_results=keep_results,
        )
        for status, n in part.counts().items():
            report.tally(status, n)
        report.results.extend(part.results)
    report.info["copies"] = [{"dataset": a, "store": s} for a, s in work]
    return report


def last_event_at(session: Session, action: str, target: str) -> datetime | None:
    return session.execute(
        select(Event.at)
        .where(Event.action == action, Event.target == target)
        .order_by(Event.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def below_policy(session: Session, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Datasets with fewer good copies than their policy asks (the first *limit*, and how
    many): the 3-2-1 picture of the whole keep, from grouped catalog queries."""
    from labkeep.catalog import Policy

    stores = {s.id: s for s in session.execute(select(Store)).scalars()}
    tree_medium = stores_tree_medium(stores)
    policies = {p.project_id: p for p in session.execute(select(Policy)).scalars()}
    default = policies.get(None)
    current = Entry.valid_to.is_(None)
    n_files = dict(
        session.execute(
            select(Entry.dataset_id, func.count(Entry.id)).where(current).group_by(Entry.dataset_id)
        ).all()
    )
    held: dict[int, list[tuple[int, int, int]]] = {}
    for dataset_id, store_id, n, bad in session.execute(
        select(
            Entry.dataset_id,
            Replica.store_id,
            func.count(Entry.id),
            func.count(Entry.id).filter(Replica.status != "ok"),
        )
        .join(Replica, Replica.sha256 == Entry.sha256)
        .where(current)
        .group_by(Entry.dataset_id, Replica.store_id)
    ):
        held.setdefault(dataset_id, []).append((store_id, int(n), int(bad)))
    listed: list[dict[str, Any]] = []
    count = 0
    for dataset_id, project_id, project, name, tree_state in session.execute(
        select(Dataset.id, Project.id, Project.name, Dataset.name, Dataset.tree_state)
        .join(Project, Project.id == Dataset.project_id)
        .order_by(Project.name, Dataset.name)
    ):
        files = int(n_files.get(dataset_id, 0))
        if not files:
            continue
        row = policies.get(project_id) or default
        need = (row.min_copies, row.min_media, row.min_offsite) if row else (1, 1, 0)
        full: list[tuple[str, str, bool]] = []
        if tree_state == "present":
            full.append(("tree", tree_medium, False))
        for store_id, n, bad in held.get(dataset_id, []):
            s = stores[store_id]
            if n == files and not bad:
                full.append((s.name, s.medium, bool(s.offsite)))
        media = {m for _, m, _ in full}
        offsite = sum(1 for *_, o in full if o)
        short = []
        if len(full) < need[0]:
            short.append(f"{len(full)} of {need[0]} copies")
        if len(media) < need[1]:
            short.append(f"{len(media)} of {need[1]} kinds of media")
        if offsite < need[2]:
            short.append(f"{offsite} of {need[2]} off-site copies")
        if not short:
            continue
        count += 1
        if len(listed) < limit:
            have = {n for n, _, _ in full}
            spare = [s.name for s in stores.values() if s.kind != "tree" and s.name not in have]
            listed.append(
                {
                    "dataset": f"{project}/{name}",
                    "copies": [n for n, _, _ in full],
                    "below": short,
                    "fix": f"labkeep copy {project}/{name} --to {spare[0]}"
                    if spare
                    else "add a store ('labkeep store add ...') and copy the dataset to it",
                }
            )
    return listed, count


def _short_message(good: list[str], why: list[str], needed: int) -> str:
    n = len(good)
    return (
        f"only {n} good {'copy' if n == 1 else 'copies'} elsewhere ({', '.join(good) or 'none'}), "
        f"the policy needs {needed}" + (f"; {'; '.join(why)}" if why else "")
    )
