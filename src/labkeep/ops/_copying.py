"""The machinery the copy use cases share: scopes, the stores one operation talks to,
runs with their thread pool and result records, the replica log's writer, and checking
copies (see :mod:`labkeep.ops.copies` for the write order)."""

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

from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from labkeep.access import allowed, check
from labkeep.catalog import Dataset, Entry, Project, Replica, Store
from labkeep.clock import utcnow
from labkeep.errors import (
    LabkeepError,
    NotFound,
    StoreUnavailable,
    TransferCorrupted,
    UsageError,
)
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project, project_resource
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.leases import Held, lease
from labkeep.ops.stores import backend
from labkeep.results import Report, Result
from labkeep.storage.objects import STALE_TMP_SECONDS, ObjectsStore

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress
    from labkeep.storage.base import ContentStore

#: catalog rows read per page; files in flight per worker thread (results are handed on
#: in order: a window this deep keeps the threads busy behind a put that stalls for a
#: second, as about 1 % of small puts to SeaweedFS did here)
PAGE = 2000
AHEAD = 128
#: commit replica rows at least this often
COMMIT_ROWS = 200
COMMIT_SECONDS = 1.0
TIER_ORDER = {"hot": 0, "warm": 1, "cold": 2}
#: replica checks written per transaction
MARK_BATCH = 1000


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


class _Stores:
    """Backends opened once per operation; a store found unreachable is skipped (counts
    as holding nothing) for the rest of it."""

    def __init__(self, keep: Keep) -> None:
        self.keep = keep
        self.rows: dict[int, Store] = {}
        self.backends: dict[int, ContentStore] = {}
        self.down: dict[int, str] = {}
        #: stores whose content can be read but not written (why, for people)
        self.read_only: dict[int, str] = {}
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

    def get(
        self, store_id: int, *, require: bool = False, write: bool = False
    ) -> ContentStore | None:
        """The backend of a content store, or None when it cannot be reached (with
        *require*: raise StoreUnavailable naming it). With *write* (content is to be put
        or deleted there), a store that can only be read counts as unreachable."""
        with self._lock:
            if write and store_id in self.read_only:
                if require:
                    raise StoreUnavailable(self.read_only[store_id], hint=_WRITABLE)
                return None
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
                    if health.writable and isinstance(store, ObjectsStore):
                        store.clean(older_than=STALE_TMP_SECONDS)  # killed copies' leftovers
                    if not health.writable:
                        self.read_only[store_id] = (
                            f"store {row.name!r} can only be read: {health.message}"
                        )
                        if write:
                            if require:
                                raise StoreUnavailable(self.read_only[store_id], hint=_WRITABLE)
                            return None
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
_WRITABLE = "make it writable (remount it read-write), then run the same command again"


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
        # network and disk bound: more threads than cores (8 measured best to SeaweedFS)
        self.jobs = jobs or max(8, 2 * (os.cpu_count() or 1))
        self.stores = _Stores(keep)
        #: what checks of replicas found, written in batches (not a transaction a file)
        self._marks: list[dict[str, Any]] = []
        self._marks_lock = threading.Lock()
        self._notes: dict[tuple[str, str], list[str]] = {}

    def noted(self, f: _File, text: str) -> None:
        """Something found on the way while working on *f* (from any worker thread):
        said in its result (:meth:`notes_of`)."""
        with self._marks_lock:
            self._notes.setdefault((f.dataset, f.path), []).append(text)

    def notes_of(self, f: _File) -> str | None:
        with self._marks_lock:
            notes = self._notes.pop((f.dataset, f.path), None)
        return "; ".join(notes) if notes else None

    def mark(self, replica_id: int, status: str, by: str) -> None:
        """Record what a check of a replica found (from any worker thread)."""
        row = {"rid": replica_id, "st": status, "at": utcnow(), "by": by}
        with self._marks_lock:
            self._marks.append(row)
            full = len(self._marks) >= MARK_BATCH
        if full:
            self.flush_marks()

    def flush_marks(self) -> None:
        with self._marks_lock:
            rows, self._marks = self._marks, []
        if rows:  # (a row dropped meanwhile is simply not updated)
            table: Any = Replica.__table__
            stmt = (
                update(table)
                .where(table.c.id == bindparam("rid"))
                .values(
                    status=bindparam("st"), verified_at=bindparam("at"), checked_by=bindparam("by")
                )
            )
            with self.keep.catalog.write() as session:
                session.execute(stmt, rows)

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
        try:
            self.flush_marks()
        finally:
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
    with keep.catalog.write() as session:
        record_in(session, store_id, rows, utcnow())


def record_in(session: Session, store_id: int, rows: list[dict[str, Any]], now: datetime) -> None:
    """:func:`record` in the caller's transaction (at most 1,000 rows a call)."""
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
            _tree_damaged(run.keep, f, state)
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
                run.mark(replica.id, "ok", how)
        else:
            why.append(f"{row.name}: {how}")
            if state in ("damaged", "missing"):
                run.mark(replica.id, state, "hash" if not quick else "size")
        if len(good) >= needed:
            break
    return good, why


def _row_of(replica: _Rep) -> dict[str, Any]:
    return {
        "sha256": replica.sha256,
        "size": replica.size,
        "key": replica.key,
        "retain_until": replica.retain_until,
        "checked_by": replica.checked_by,
    }


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
            run.mark(replica.id, "missing", "hash")
            continue
        except TransferCorrupted:
            errors.append(f"the copy in {row.name!r} is damaged")
            run.mark(replica.id, "damaged", "hash")
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


def _quick_present(keep: Keep, run: _Run, f: _File) -> bool:
    if _tree_file(keep, f) is not None:
        run.emit(run.result(f, "notneeded", store="tree"), f.size)
        return True
    return False


def _tree_damaged(keep: Keep, f: _File, state: str) -> None:
    """A check on the way (copy, drop) found the tree copy of *f* damaged or missing:
    recorded as verify would (whereis, status and later drops count it no more)."""
    found = state == "damaged" or os.path.lexists(keep.tree.file_path(f.project, f.name, f.path))
    _tree_verified(keep, f.dataset_id, [f.path], "modified" if found else "missing")


def _tree_verified(keep: Keep, dataset_id: int, paths: list[str], status: str = "ok") -> None:
    """Tree copies just written and hashed: their fixity is known good (or, with
    *status*, what a check found)."""
    from labkeep.ops import fixity

    now = utcnow()
    with keep.catalog.write() as session:
        for start in range(0, len(paths), 1000):
            ids = session.execute(
                select(Entry.id).where(
                    Entry.dataset_id == dataset_id,
                    Entry.valid_to.is_(None),
                    Entry.path.in_(paths[start : start + 1000]),
                )
            ).scalars()
            fixity.record(session, [(i, status) for i in ids], now)


def _short_message(good: list[str], why: list[str], needed: int) -> str:
    n = len(good)
    return (
        f"only {n} good {'copy' if n == 1 else 'copies'} elsewhere ({', '.join(good) or 'none'}), "
        f"the policy needs {needed}" + (f"; {'; '.join(why)}" if why else "")
    )
