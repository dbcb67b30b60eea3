"""Save: record what changed in a dataset's working tree as a new version; restore.

A dataset's working tree is its folder in the tree (``data/PROJECT/DATASET``) except
``raw/`` (ingest's, append-only and sealed) and labkeep's own files. People and programs
write there; ``save`` makes a version of it:

1. under the dataset's lease (held in the catalog, so saves from any host take turns;
   a save that finds the dataset busy waits for its turn), the working tree is walked
   in byte-wise path order and merged with the head's entries, read in keyset pages in
   the same order: a file with the head's size and mtime is unchanged (the quick check);
   the others are read once each, in parallel, hashing them while their bytes go into the
   keep's versions store (content-addressed, write-once; see :func:`history_store`);
2. the content is durable in that store before the catalog names it; so a file changed
   in place later (or removed) keeps its old content there, and every version stays
   retrievable (``get P/D@N --to``, downloads);
3. one transaction then records the replica rows, ends the replaced and removed entries
   (``valid_to``), inserts the new ones, rewrites ``MANIFEST.sha256``, commits the
   version with its event: a crash before it leaves the head as it was (content stored
   for nothing is harmless).

Memory holds one page of the head's entries plus the changed files (about 200 bytes
each), never the whole dataset. A file that changes while it is read, a symbolic link or
a name that is not UTF-8 gets an error record and is left out; the rest is saved.

``restore`` puts old content back into the working tree (all of it, or below a path),
each file verified against its SHA-256 before it takes its place, and saves the result
as a new version; it refuses to overwrite changes that were not saved.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import DateTime, and_, func, insert, literal, or_, select, update

from labkeep.catalog import Dataset, Entry, Store, TreeCheck, Version
from labkeep.catalog._db import plain_rows
from labkeep.clock import utcnow
from labkeep.errors import Busy, LabkeepError, NotFound, SealedError, StorageError, UsageError
from labkeep.integrity.hashing import FileChanged, Hashed, NotRegularFile, hash_file
from labkeep.integrity.manifest import sort_key
from labkeep.names import MAX_MESSAGE, check_relpath, check_text, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.manifests import patch_manifest, store_manifest
from labkeep.results import Report, Result
from labkeep.storage._tree import PRIVATE_DIR

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Table
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress
    from labkeep.storage.base import ContentStore

RAW = "raw"
#: catalog rows read per page
PAGE = 5000
ENTRIES = cast("Table", Entry.__table__)
#: what the versions store is called when the keep makes it itself
VERSIONS_STORE = "versions"
#: margin (s) before the head's save within which an unchanged mtime proves nothing
RACY_SECONDS = 3.0


# -- the versions store ------------------------------------------------------------------
def history_store(keep: Keep) -> tuple[int, ContentStore]:
    """The store that keeps every saved content (``[versions] store``), made on first use
    as an objects folder under the keep (``[versions] path``) when it is the default."""
    from labkeep.ops.stores import backend

    name = keep.config.versions_store
    with keep.catalog.read() as session:
        row = session.execute(select(Store).where(Store.name == name)).scalar_one_or_none()
        if row is not None:
            session.expunge(row)
    if row is None:
        if name != VERSIONS_STORE:
            raise NotFound(
                f"the versions store {name!r} ([versions] store in labkeep.toml) does not exist",
                hint=f"add it with 'labkeep store add {name} ...', or remove the setting",
            )
        folder = keep.config.versions_path
        folder.mkdir(parents=True, exist_ok=True)
        with keep.catalog.write() as session:
            row = session.execute(select(Store).where(Store.name == name)).scalar_one_or_none()
            if row is None:
                row = Store(
                    name=name,
                    kind="objects",
                    tier="hot",
                    location=str(folder),
                    created_at=utcnow(),
                    offsite=False,
                    medium="disk",
                    settings=json.dumps({"role": "versions"}),
                )
                session.add(row)
                session.flush()
                append_event(
                    session,
                    keep.actor,
                    "store.add",
                    f"store:{name}",
                    {"kind": "objects", "role": "versions", "path": str(folder)},
                )
            session.expunge(row)
    store = backend(row)
    from labkeep.storage.objects import STALE_TMP_SECONDS, ObjectsStore

    if isinstance(store, ObjectsStore):  # what killed saves left behind
        store.clean(older_than=STALE_TMP_SECONDS)
    return row.id, store


# -- the working tree ----------------------------------------------------------------------
@dataclass
class _Seen:
    """One working-tree path whose content must be read: added, or not quick-equal."""

    path: str
    abspath: str
    size: int
    mtime_ns: int
    old_id: int | None = None
    old_sha: bytes | None = None
    old_size: int | None = None
    old_mtime: int | None = None


@dataclass
class _Scope:
    """Which paths a save looks at: everything but raw/, below prefixes, or exact files."""

    prefixes: tuple[str, ...] = ()
    files: tuple[str, ...] | None = None

    def covers(self, path: str) -> bool:
        if path == RAW or path.startswith(RAW + "/"):
            return False
        if self.files is not None:
            return True  # the walk lists exactly them; head rows are matched by the merge
        if not self.prefixes:
            return True
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)


def _inside(root: Path, path: str, target: str) -> str:
    """A path given to save or restore, relative to the dataset (an absolute path into
    its working tree is accepted); its private folder and anything outside are refused."""
    if path.startswith("/"):
        full = os.path.abspath(path)
        base = os.path.abspath(root)
        if full == base:
            return ""
        if not full.startswith(base + "/"):
            raise UsageError(
                f"{path} is not in {target}'s working tree ({base})",
                hint=f"give paths relative to the dataset, e.g. 'labkeep save {target} masks/'",
            )
        path = full[len(base) + 1 :]
    if not path.strip("/"):
        return ""
    rel = check_relpath(path.strip("/"))
    if rel == PRIVATE_DIR or rel.startswith(PRIVATE_DIR + "/"):
        raise UsageError(f"{PRIVATE_DIR}/ is labkeep's own folder: it is not versioned")
    return rel


def _in_head(session: Session, dataset_id: int, prefix: str) -> bool:
    """The head has a file at *prefix* or below it."""
    return (
        session.execute(
            select(Entry.id)
            .where(
                Entry.dataset_id == dataset_id,
                Entry.valid_to.is_(None),
                or_(
                    Entry.path == prefix,
                    and_(Entry.path >= prefix + "/", Entry.path < prefix + "0"),
                ),
            )
            .limit(1)
        ).first()
        is not None
    )


def _walk(
    keep: Keep, project: str, name: str, scope: _Scope
) -> Iterator[tuple[str, os.stat_result | None]]:
    """(path, lstat or None when absent) of the working tree in byte-wise order."""
    root = keep.tree.dataset_dir(project, name)
    if scope.files is not None:
        for path in scope.files:
            try:
                yield path, os.lstat(root / path)
            except FileNotFoundError:
                yield path, None
        return
    walk = keep.tree.walk_sorted(project, name, skip=frozenset({RAW}))
    try:
        if not scope.prefixes:  # the whole working tree: the walk already leaves raw/ out
            yield from walk
            return
        for path, st in walk:
            if scope.covers(path):
                yield path, st
    except PermissionError as exc:
        raise StorageError(
            f"cannot read the folder {exc.filename or '?'} of {project}/{name}: "
            f"{exc.strerror}; nothing was saved",
            hint="make it readable for labkeep (a save must see every folder, or the files "
            "in it would count as removed), then save again",
        ) from None


def _head(keep: Keep, dataset_id: int, scope: _Scope) -> Iterator[tuple[str, int, int, int, bytes]]:
    """The head's entries outside raw/ in path order, a page at a time."""
    if scope.files is not None:
        wanted = list(scope.files)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            with keep.catalog.read() as session:
                rows = session.execute(
                    select(Entry.path, Entry.id, Entry.size, Entry.mtime_ns, Entry.sha256)
                    .where(
                        Entry.dataset_id == dataset_id,
                        Entry.valid_to.is_(None),
                        Entry.path.in_(chunk),
                    )
                    .order_by(Entry.path)
                ).all()
            for row in rows:
                yield (row[0], row[1], row[2], row[3], bytes(row[4]))
        return
    # one key range over the prefixes (filtered by the scope), so rows come in one order
    low = min(scope.prefixes) if scope.prefixes else ""
    high = max(p + "0" for p in scope.prefixes) if scope.prefixes else None
    last: str | None = None
    while True:
        query = (
            select(Entry.path, Entry.id, Entry.size, Entry.mtime_ns, Entry.sha256)
            .where(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
            .order_by(Entry.path)
            .limit(PAGE)
        )
        if last is not None:
            query = query.where(Entry.path > last)
        elif low:
            query = query.where(Entry.path >= low)
        if high is not None:
            query = query.where(Entry.path < high)
        with keep.catalog.read() as session:  # the driver's tuples: a page is 5,000 rows
            page = plain_rows(session, query)
        for one in page:
            if scope.covers(one[0]):
                yield (one[0], one[1], one[2], one[3], bytes(one[4]))
        if len(page) < PAGE:
            return
        last = page[-1][0]


# -- save ----------------------------------------------------------------------------------
@dataclass
class SavePlan:
    """What a save found: the changed files (to read) and the removed entries."""

    seen: list[_Seen]
    removed: list[tuple[int, str, int, bytes]]  # entry id, path, size, sha256
    unchanged: int
    problems: list[Result]


def _racy_after(keep: Keep, dataset_id: int) -> int:
    """The mtime (ns) from which the quick check cannot be trusted ("racy git"): a file
    rewritten with the same size within the file system's timestamp granule (a few ms on
    ext4, 1-2 s on some NAS) after the last save keeps its mtime. Files with an mtime
    this close to (or after) the head's save, less a margin for a file server's clock,
    are hashed again."""
    with keep.catalog.read() as session:
        last = session.execute(
            select(func.max(Version.committed_at)).where(Version.dataset_id == dataset_id)
        ).scalar_one_or_none()
    if last is None:
        return 0
    seconds = calendar.timegm(last.timetuple()) + last.microsecond / 1e6
    return int((seconds - RACY_SECONDS) * 1e9)


def _unsavable(path: str, st: os.stat_result) -> str | None:
    """Why a version cannot hold what is at *path* (None: a regular file, named in UTF-8)."""
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "the name is not UTF-8: not saved (rename it to a UTF-8 name)"
    if not stat.S_ISREG(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        return f"{what}: not saved (versions hold regular files)"
    return None


def _plan(
    keep: Keep, project: str, name: str, dataset_id: int, scope: _Scope, target: str
) -> SavePlan:
    """Merge the working tree with the head's entries: the files to read, the removed.

    (Reading while walking was tried: the copying threads hold the GIL between their
    system calls, and the walk, one ``lstat`` after another, slowed by more than the
    overlap gained: 0.34 s against 0.25 s for the benchmark's save.)"""
    root = str(keep.tree.dataset_dir(project, name))
    seen: list[_Seen] = []
    removed: list[tuple[int, str, int, bytes]] = []
    problems: list[Result] = []
    unchanged = 0
    racy = _racy_after(keep, dataset_id)
    heads = _head(keep, dataset_id, scope)
    head = next(heads, None)
    for path, st in _walk(keep, project, name, scope):
        while head is not None and head[0] < path:
            if scope.files is None:
                removed.append((head[1], head[0], head[2], head[4]))
            head = next(heads, None)
        known = head if head is not None and head[0] == path else None
        if known is not None:
            head = next(heads, None)
        if st is None:  # an exact file asked for and absent
            if known is not None:
                removed.append((known[1], known[0], known[2], known[4]))
            continue
        why = _unsavable(path, st)
        if why is not None:
            problems.append(Result("save", "impossible", path=path, dataset=target, message=why))
            continue
        if (
            known is not None
            and known[2] == st.st_size
            and known[3] == st.st_mtime_ns
            and st.st_mtime_ns < racy
        ):
            unchanged += 1
            continue
        one = _Seen(path, f"{root}/{path}", st.st_size, st.st_mtime_ns)
        if known is not None:
            one.old_id, one.old_size, one.old_sha = known[1], known[2], known[4]
            one.old_mtime = known[3]
        seen.append(one)
    while head is not None:
        if scope.files is None:
            removed.append((head[1], head[0], head[2], head[4]))
        head = next(heads, None)
    return SavePlan(seen, removed, unchanged, problems)


def _store_one(store: ContentStore, one: _Seen) -> tuple[Hashed, Path | None]:
    """Read the file once: its SHA-256, and its bytes into the versions store (for an
    objects store only staged: :meth:`ObjectsStore.publish` makes a batch durable)."""
    from labkeep.storage.objects import ObjectsStore

    if isinstance(store, ObjectsStore):
        tmp, hashed = store.stage_file(one.abspath)
        return hashed, tmp
    hashed = hash_file(one.abspath)
    store.put_file(
        store.key_for(hashed.sha256), one.abspath, sha256=hashed.sha256, size=hashed.size
    )
    return hashed, None


#: staged files made durable together (two syncfs calls per batch)
PUBLISH_BATCH = 2000


def save(
    keep: Keep,
    address: str,
    *,
    message: str = "",
    paths: Iterable[str] = (),
    files: Iterable[str] | None = None,
    jobs: int | None = None,
    wait: float = 60.0,
    kind: str = "save",
    run_id: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
    _locked: bool = False,
) -> Report:
    """Record the working tree of ``PROJECT/DATASET`` (or below *paths*, or exactly the
    *files*) as a new version; nothing changed: no version (``info["version"]`` None).

    Waits up to *wait* seconds for another save or ingest of the dataset to finish.
    """
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.version is not None:
        raise UsageError(
            "save records a new version; give the dataset without @N",
            hint=f"labkeep save {addr.dataset_address}",
        )
    check_text(message, "the message", MAX_MESSAGE)
    project, name = addr.project, addr.dataset
    target = f"{project}/{name}"
    root = keep.tree.dataset_dir(project, name)
    given = [_inside(root, p, target) for p in ([addr.path] if addr.path else []) + list(paths)]
    prefixes = tuple(p for p in given if p)  # (the dataset's own folder: all of it)
    for p in prefixes:
        if p == RAW or p.startswith(RAW + "/"):
            raise UsageError(
                f"{p!r} is in raw/, which belongs to ingest (append-only)",
                hint=f"add instrument files with 'labkeep ingest SOURCE {target}'",
            )
    scope = _Scope(prefixes, None if files is None else tuple(sorted(set(files))))
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, project, name, "dataset.save")
        dataset_id = dataset.id
        for p in prefixes:  # a path that names nothing is a mistake, not "nothing to save"
            if not os.path.lexists(root / p) and not _in_head(session, dataset_id, p):
                raise NotFound(
                    f"no file or folder {p!r} in {target} (neither in its working tree nor "
                    "in its last version)",
                    hint=f"give paths relative to the dataset, e.g. 'labkeep save {target} masks/'",
                )
        if dataset.kind == "release":
            raise SealedError(
                f"{target} is a release: its content never changes",
                hint="make a new release from a new version instead",
            )
        _require_tree(dataset, target)
    report = Report("save", info={"dataset": target, "version": None}, keep_all=keep_results)

    def emit(result: Result) -> None:
        report.add(result)
        if on_result is not None:
            on_result(result)

    lock = contextlib.nullcontext() if _locked else dataset_lock(keep, project, name, "save", wait)
    with lock:
        store_id, store = history_store(keep)
        try:
            with _Reader(keep, store, target, jobs) as reader:
                plan = _plan(keep, project, name, dataset_id, scope, target)
                for one in plan.seen:
                    reader.submit(one)
                for problem in plan.problems:
                    emit(problem)
                new_rows, replicas = reader.collect(plan, progress, emit)
        finally:
            store.close()
        _commit(
            keep,
            dataset_id,
            target,
            plan,
            new_rows,
            replicas,
            store_id,
            store.kind,
            message,
            kind,
            run_id,
            report,
            emit,
        )
    report.info["unchanged"] = (
        plan.unchanged
        + len(plan.seen)
        - sum(report.info.get(k, 0) for k in ("added", "modified"))
        - report.counts().get("error", 0)
    )
    return report


class _Reader:
    """Reads the changed files in parallel: each is hashed while its bytes go into the
    versions store (:meth:`submit`); :meth:`collect` takes the results in the plan's
    order. Leaving the block early cancels what has not started and removes what was
    staged."""

    def __init__(self, keep: Keep, store: ContentStore, target: str, jobs: int | None) -> None:
        self.store, self.target = store, target
        workers = max(1, min(jobs or keep.config.ingest_jobs or (os.cpu_count() or 1) * 2, 32))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labkeep-save")
        self.futures: list[Future[tuple[Hashed, Path | None]]] = []

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            for fut in self.futures:
                fut.cancel()
        self.pool.shutdown(wait=True)
        if kind is not None:  # whatever was staged and not published is removed
            for fut in self.futures:
                if fut.cancelled() or fut.exception() is not None:
                    continue
                tmp = fut.result()[1]
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)

    def submit(self, one: _Seen) -> None:
        self.futures.append(self.pool.submit(_store_one, self.store, one))

    def collect(
        self, plan: SavePlan, progress: Progress | None, emit: Callable[[Result], None]
    ) -> tuple[list[tuple[_Seen, Hashed]], dict[bytes, tuple[int, str]]]:
        """(file, hashed) of the files read whole, and the replicas to record. Every
        content is durable in the store when this returns (staged files are published
        in batches)."""
        from labkeep.storage.objects import ObjectsStore

        store, target = self.store, self.target
        done: list[tuple[_Seen, Hashed]] = []
        replicas: dict[bytes, tuple[int, str]] = {}
        staged: list[tuple[Path, Hashed]] = []
        if progress is not None:
            progress.start(len(plan.seen), sum(s.size for s in plan.seen))

        def publish() -> None:
            if staged:
                assert isinstance(store, ObjectsStore)
                store.publish(staged)
                staged.clear()

        assert len(self.futures) == len(plan.seen)
        for one, fut in zip(plan.seen, self.futures, strict=True):
            try:
                hashed, tmp = fut.result()
            except (FileChanged, NotRegularFile, FileNotFoundError, PermissionError) as exc:
                emit(_unreadable(one, target, exc))
                continue
            except LabkeepError as exc:
                if exc.exit_code == 3:
                    raise
                emit(Result("save", "error", path=one.path, dataset=target,
                            size=one.size, message=exc.message))  # fmt: skip
                continue
            if tmp is not None:
                staged.append((tmp, hashed))
                if len(staged) >= PUBLISH_BATCH:
                    publish()
            if progress is not None:
                progress.advance(1, one.size)
            replicas[hashed.sha256] = (hashed.size, store.key_for(hashed.sha256))
            done.append((one, hashed))
        publish()
        return done, replicas


def _unreadable(one: _Seen, target: str, exc: BaseException) -> Result:
    if isinstance(exc, FileChanged):
        msg = "changed while it was read: not saved (save again when written)"
    elif isinstance(exc, NotRegularFile):
        msg = "no longer a regular file: not saved"
    elif isinstance(exc, FileNotFoundError):
        msg = "vanished while saving: not saved"
    else:
        msg = "permission denied: cannot read it"
    return Result("save", "error", path=one.path, dataset=target, size=one.size, message=msg)


def _commit(
    keep: Keep,
    dataset_id: int,
    target: str,
    plan: SavePlan,
    new_rows: list[tuple[_Seen, Hashed]],
    replicas: dict[bytes, tuple[int, str]],
    store_id: int,
    store_kind: str,
    message: str,
    kind: str,
    run_id: int | None,
    report: Report,
    emit: Callable[[Result], None],
) -> None:
    project, name = target.split("/", 1)
    changed: list[tuple[_Seen, Hashed]] = []
    touched: list[tuple[_Seen, Hashed]] = []
    for one, h in new_rows:
        if one.old_sha == h.sha256 and one.old_size == h.size:
            if one.old_mtime != h.mtime_ns:  # same bytes, new mtime: registered again
                touched.append((one, h))
        else:
            changed.append((one, h))
    now = utcnow()
    replica_rows = [
        {"sha256": sha, "size": size, "key": key, "checked_by": "hash", "retain_until": None}
        for sha, (size, key) in replicas.items()
    ]
    if not changed and not plan.removed:
        if replica_rows:
            with keep.catalog.write() as session:
                _record_replicas(session, store_id, replica_rows, now)
        report.info.update(added=0, modified=0, removed=0, touched=len(touched))
        return
    event = None
    with keep.catalog.write() as session:
        dataset = session.execute(
            select(Dataset).where(Dataset.id == dataset_id).with_for_update()
        ).scalar_one()
        highest = session.execute(
            select(func.max(Version.number)).where(Version.dataset_id == dataset_id)
        ).scalar_one()
        if session.execute(
            select(Version.number).where(Version.dataset_id == dataset_id, Version.state == "open")
        ).first():
            raise Busy(
                f"an ingest of {target} was interrupted and is not finished",
                hint=f"finish it first: run the same 'labkeep ingest ... {target}' again",
            )
        number = (highest or 0) + 1
        version = Version(
            dataset_id=dataset_id,
            number=number,
            state="committed",
            kind=kind,
            author=keep.actor,
            message=message or _default_message(changed, plan),
            created_at=now,
            committed_at=now,
            run_id=run_id,
        )
        session.add(version)
        # 2. the content is durable in the store (published): its replica rows go in
        # the same transaction as the entries that refer to it, never after
        _record_replicas(session, store_id, replica_rows, now)
        ended = [one.old_id for one, _ in changed if one.old_id is not None] + [
            r[0] for r in plan.removed
        ]
        # a touched file (same bytes, new mtime) is registered again so the quick check
        # holds next time; the diff ignores such pairs
        ended += [one.old_id for one, _ in touched if one.old_id is not None]
        for start in range(0, len(ended), 500):
            session.execute(
                update(Entry)
                .where(Entry.id.in_(ended[start : start + 500]), Entry.valid_to.is_(None))
                .values(valid_to=number)
                .execution_options(synchronize_session=False)
            )
        rows = [
            {
                "dataset_id": dataset_id,
                "path": one.path,
                "size": h.size,
                "sha256": h.sha256,
                "mtime_ns": h.mtime_ns,
                "valid_from": number,
                "valid_to": None,
            }
            for one, h in changed + touched
        ]
        for start in range(0, len(rows), 1000):
            session.connection().execute(insert(ENTRIES), rows[start : start + 1000])
        # the files were just read whole: their tree copies count as verified now (new
        # entries have no checks yet: a plain insert, in the database)
        session.execute(
            insert(TreeCheck).from_select(
                ["entry_id", "checked_at", "status"],
                select(Entry.id, literal(now, DateTime()), literal("ok")).where(
                    Entry.dataset_id == dataset_id, Entry.valid_from == number
                ),
            )
        )
        previous = session.execute(
            select(Version.manifest_sha256).where(
                Version.dataset_id == dataset_id, Version.number == dataset.head_version
            )
        ).scalar_one_or_none()
        edits: list[tuple[str, str | None]] = [(one.path, h.sha256.hex()) for one, h in changed]
        edits += [(path, None) for _, path, _, _ in plan.removed]
        edits.sort(key=lambda e: sort_key(e[0]))
        manifest_sha = patch_manifest(keep, project, name, previous, edits) or store_manifest(
            keep, session, project, name, dataset_id
        )
        files, size = _head_totals(session, dataset_id, dataset.head_version, changed, plan)
        version.n_files, version.n_bytes, version.manifest_sha256 = files, size, manifest_sha
        dataset.head_version = number
        if changed or touched:
            from labkeep.ops.extract import queue_extraction

            queue_extraction(keep, session, project, name, number)
        counts = {
            "added": sum(1 for one, _ in changed if one.old_id is None),
            "modified": sum(1 for one, _ in changed if one.old_id is not None),
            "removed": len(plan.removed),
        }
        details: dict[str, Any] = {
            "version": number,
            "manifest_sha256": manifest_sha,
            "kind": kind,
            **counts,
        }
        if run_id is not None:
            details["run"] = run_id
        event = append_event(session, keep.actor, "save", target, details)
    checkpoint(keep, event)
    report.info.update(version=number, manifest_sha256=manifest_sha, touched=len(touched), **counts)
    for one, h in changed:
        emit(
            Result(
                "save",
                "ok",
                path=one.path,
                dataset=target,
                size=h.size,
                sha256=h.sha256.hex(),
                extra={"change": "modified" if one.old_id is not None else "added"},
            )
        )
    for _, path, size, sha in plan.removed:
        emit(
            Result(
                "save",
                "ok",
                path=path,
                dataset=target,
                size=size,
                sha256=sha.hex(),
                extra={"change": "removed"},
            )
        )
    del store_kind


def _record_replicas(
    session: Session, store_id: int, rows: list[dict[str, Any]], now: datetime
) -> None:
    from labkeep.ops._copying import record_in

    for start in range(0, len(rows), 1000):
        record_in(session, store_id, rows[start : start + 1000], now)


def _head_totals(
    session: Session,
    dataset_id: int,
    head: int | None,
    changed: list[tuple[_Seen, Hashed]],
    plan: SavePlan,
) -> tuple[int, int]:
    """Files and bytes of the new version: the head's totals and this save's changes
    (a count over the dataset's entries where the head has none recorded)."""
    before = None
    if head is not None:
        before = session.execute(
            select(Version.n_files, Version.n_bytes).where(
                Version.dataset_id == dataset_id, Version.number == head
            )
        ).first()
    if before is None or before[0] is None or before[1] is None:
        files, size = session.execute(
            select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
                Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
            )
        ).one()
        return int(files), int(size)
    files = int(before[0]) + sum(1 for one, _ in changed if one.old_id is None) - len(plan.removed)
    size = int(before[1]) + sum(h.size - (one.old_size or 0) for one, h in changed)
    size -= sum(r[2] for r in plan.removed)
    return files, size


def _default_message(changed: list[tuple[_Seen, Hashed]], plan: SavePlan) -> str:
    added = sum(1 for one, _ in changed if one.old_id is None)
    return f"save: {added} added, {len(changed) - added} modified, {len(plan.removed)} removed"


def _require_tree(dataset: Dataset, target: str) -> None:
    """A dataset whose tree copy was dropped has no working tree to save or restore into
    (an empty folder would read as "everything removed")."""
    if dataset.tree_state != "present":
        raise UsageError(
            f"the tree copy of {target} was dropped: there is no working tree to save",
            hint=f"bring it back first with 'labkeep get {target}'",
        )


@contextlib.contextmanager
def dataset_lock(keep: Keep, project: str, name: str, what: str, wait: float) -> Iterator[None]:
    """The dataset's lease, waiting up to *wait* seconds for another holder to finish."""
    deadline = time.monotonic() + max(0.0, wait)
    delay = 0.05
    while True:
        try:
            with keep.tree.lock(project, name, what=what):
                yield
            return
        except Busy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# -- restore -------------------------------------------------------------------------------
def restore(
    keep: Keep,
    address: str,
    *,
    message: str = "",
    force: bool = False,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Put the content of ``P/D@N[/PATH]`` back into the working tree and save it as a new
    version. Refuses (UsageError) when the working tree below PATH has unsaved changes,
    unless *force* (those changes are then replaced; their bytes are still kept in the
    versions store by a save made first)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.version is None:
        raise UsageError(
            "restore needs the version to go back to",
            hint=f"e.g. 'labkeep restore {addr.dataset_address}@1'",
        )
    project, name = addr.project, addr.dataset
    target = f"{project}/{name}"
    prefix = addr.path.strip("/") if addr.path else ""
    if prefix == RAW or prefix.startswith(RAW + "/"):
        raise UsageError(
            "raw/ is write-once: it is not restored",
            hint="copy old raw files out with 'labkeep get P/D@N --to DIR'",
        )
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, project, name, "dataset.save")
        dataset_id = dataset.id
        _require_tree(dataset, target)
        exists = session.execute(
            select(Version.id).where(
                Version.dataset_id == dataset_id,
                Version.number == addr.version,
                Version.state == "committed",
            )
        ).first()
    if not exists:
        raise UsageError(
            f"{target} has no version {addr.version}", hint=f"'labkeep log {target}' lists them"
        )
    paths = (prefix,) if prefix else ()
    if prefix:
        known = next(_entries_at(keep, dataset_id, addr.version, prefix), None) is not None
        if not known and not os.path.lexists(keep.tree.dataset_dir(project, name) / prefix):
            raise NotFound(
                f"no file or folder {prefix!r} in {target}@{addr.version} (nor in its working "
                "tree)",
                hint=f"'labkeep ls {target}@{addr.version}' lists what that version holds",
            )
    with dataset_lock(keep, project, name, "restore", 60.0):
        dirty = _plan(keep, project, name, dataset_id, _Scope(paths), target)
        if dirty.problems:  # symlinks, special files, unreadable: restore would delete them
            names = ", ".join(str(r.path) for r in dirty.problems[:3])
            raise UsageError(
                f"{target} holds things a version cannot keep ({names}"
                + ("…" if len(dirty.problems) > 3 else "")
                + "): restoring would delete them",
                hint="move them out of the dataset (or make them readable regular files), "
                "then restore again",
            )
        dirty.seen = [one for one in dirty.seen if _differs(one)]
        if (dirty.seen or dirty.removed) and not force:
            sample = ", ".join([s.path for s in dirty.seen[:3]] + [r[1] for r in dirty.removed[:3]])
            raise UsageError(
                f"{target} has changes that were not saved ({sample}…)"
                if len(dirty.seen) + len(dirty.removed) > 3
                else f"{target} has changes that were not saved ({sample})",
                hint=f"save them first ('labkeep save {target} -m ...'), or restore with "
                "--force (they are saved as a version first, then replaced)",
            )
        if dirty.seen or dirty.removed:
            before = save(
                keep, target, message=f"before restoring @{addr.version}", paths=paths, _locked=True
            )
            unsaved = [r for r in before.results if r.status in ("error", "impossible")]
            if unsaved:  # they would be lost: stop before anything is replaced
                names = ", ".join(str(r.path) for r in unsaved[:3])
                raise UsageError(
                    f"{target}: {len(unsaved)} changed files could not be saved before "
                    f"restoring ({names}): nothing was restored",
                    hint=f"fix them ('labkeep save {target}' says why), then restore again",
                )
        report = Report("restore", info={"dataset": target, "from_version": addr.version})
        _put_back(keep, project, name, dataset_id, addr.version, prefix, report, on_result)
        if report.failed:
            report.info["version"] = None
            return report
        saved = save(
            keep,
            target,
            message=message or f"restore @{addr.version}" + (f" {prefix}" if prefix else ""),
            paths=paths,
            kind="restore",
            _locked=True,
        )
    report.info.update(
        {
            k: saved.info.get(k)
            for k in ("version", "added", "modified", "removed", "manifest_sha256")
        }
    )
    return report


def _differs(one: _Seen) -> bool:
    """A working file differs from the head: by size, else by its bytes (a file touched
    or rewritten with the same content is not a change)."""
    if one.old_sha is None or one.size != one.old_size:
        return True
    try:
        return hash_file(one.abspath).sha256 != one.old_sha
    except (OSError, LabkeepError):
        return True


def _entries_at(
    keep: Keep, dataset_id: int, version: int, prefix: str
) -> Iterator[tuple[str, int, bytes]]:
    """(path, size, sha256) of a version's files outside raw/ (below *prefix*), in order."""
    last: str | None = None
    while True:
        query = (
            select(Entry.path, Entry.size, Entry.sha256)
            .where(
                Entry.dataset_id == dataset_id,
                Entry.valid_from <= version,
                or_(Entry.valid_to.is_(None), Entry.valid_to > version),
            )
            .order_by(Entry.path)
            .limit(PAGE)
        )
        if prefix:
            query = query.where(and_(Entry.path >= prefix, Entry.path < prefix + "0"))
        if last is not None:
            query = query.where(Entry.path > last)
        with keep.catalog.read() as session:
            rows = session.execute(query).all()
        for path, size, sha in rows:
            if _Scope((prefix,) if prefix else ()).covers(path):
                yield path, size, bytes(sha)
        if len(rows) < PAGE:
            return
        last = rows[-1][0]


def _put_back(
    keep: Keep,
    project: str,
    name: str,
    dataset_id: int,
    version: int,
    prefix: str,
    report: Report,
    on_result: Callable[[Result], None] | None,
) -> None:
    from labkeep.ops.content import open_replica

    target = f"{project}/{name}"
    root = keep.tree.dataset_dir(project, name)
    partial = keep.tree.prepare_dataset(project, name)

    def emit(result: Result) -> None:
        report.add(result)
        if on_result is not None:
            on_result(result)

    olds = _entries_at(keep, dataset_id, version, prefix)
    walk = _walk(keep, project, name, _Scope((prefix,) if prefix else ()))
    old = next(olds, None)
    for path, st in walk:  # files of the working tree that the old version did not have
        while old is not None and old[0] < path:
            old = next(olds, None)
        if old is not None and old[0] == path:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / path)
        emit(Result("restore", "ok", path=path, dataset=target, extra={"change": "removed"}))
        del st
    for path, size, sha in _entries_at(keep, dataset_id, version, prefix):
        dest = root / path
        try:
            st = os.lstat(dest)
            if (
                stat.S_ISREG(st.st_mode)
                and st.st_size == size
                and hash_file(str(dest)).sha256 == sha
            ):
                continue
        except FileNotFoundError:
            pass
        except (OSError, LabkeepError):
            pass
        tmp = partial / f"{uuid.uuid4().hex}.part"
        try:
            digest = hashlib.sha256()
            with open_replica(keep, size, sha) as src, open(tmp, "xb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.digest() != sha:
                raise LabkeepError(
                    f"the stored copy of {path} does not match its SHA-256",
                    hint="run 'labkeep verify --store versions' and repair it",
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                # a folder now: its files that the old version does not have were removed
                # above; what is left of it are empty folders
                _remove_empty_dirs(root, path)
                if dest.is_dir():
                    raise UsageError(f"{path} is a folder in the working tree now")
            os.replace(tmp, dest)
            emit(
                Result(
                    "restore",
                    "ok",
                    path=path,
                    dataset=target,
                    size=size,
                    sha256=sha.hex(),
                    extra={"change": "restored"},
                )
            )
        except LabkeepError as exc:
            emit(
                Result(
                    "restore", "error", path=path, dataset=target, size=size, message=exc.message
                )
            )
        except OSError as exc:
            emit(
                Result(
                    "restore",
                    "error",
                    path=path,
                    dataset=target,
                    size=size,
                    message=f"cannot write it: {exc.strerror}",
                )
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    _remove_empty_dirs(root, prefix)


def _remove_empty_dirs(root: Path, prefix: str) -> None:
    base = root / prefix if prefix else root
    for folder, _dirs, _files in os.walk(base, topdown=False):
        rel = os.path.relpath(folder, root)
        if (
            rel in (".", PRIVATE_DIR)
            or rel.startswith(PRIVATE_DIR + "/")
            or rel == RAW
            or rel.startswith(RAW + "/")
        ):
            continue
        with contextlib.suppress(OSError):
            os.rmdir(folder)
