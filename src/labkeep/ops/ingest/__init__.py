"""Ingest: move instrument output into ``data/PROJECT/DATASET/raw/`` with SHA-256s.

Write order (tested in tests/test_crash.py):
1. each file is copied (or hard-linked) to a unique partial name under the dataset's
   ``.labkeep/partial/`` while it is hashed, in one pass, on a thread pool;
2. per batch, the partial files are made durable (one ``syncfs`` or an fsync each),
   renamed to their final names, and the renames made durable (an fsync of each folder;
   with durability "batch", the ``syncfs`` that the next batch starts in the background,
   or a last one);
3. only then are the batch's catalog rows committed;
4. only after that are source files deleted (when asked), each after its copy was
   re-read and matched;
5. at the end the manifest is rewritten and the version committed with an event.

A crash anywhere leaves partial files (removed on the next run), or final files with
no catalog row (adopted by the next run after re-hashing them, without copying), or
committed rows; never a final name on incomplete content, never a row without content.

Re-ingest compares with the tree, not only with the catalog: a file already registered
is skipped (``notneeded``) only when the source and the tree copy both still have the
catalog's size and mtime (one lstat) and no verify marked the entry ``modified`` or
``missing``. Otherwise the tree copy is re-hashed, and a copy that is missing or damaged
is restored from the source when the source's bytes hash to the catalog's SHA-256:
copied to a partial file, its hash checked, renamed over the damaged file along the
same write order (``ok`` with ``repaired: true``; no new version: the dataset's content
is what the catalog says). A source that differs from the catalog stays a conflict and
the tree is not touched. Damage that keeps size and mtime (bit rot) is invisible to the
quick check: ``verify`` finds it, and the next ingest then re-hashes that entry.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import stat
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import func, insert, select, update

from labkeep.catalog import Dataset, Entry, Version
from labkeep.clock import utcnow
from labkeep.errors import (
    LabkeepError,
    SealedError,
    SealInterrupted,
    SourceError,
    UsageError,
)
from labkeep.integrity.hashing import (
    FileChanged,
    Hashed,
    NotRegularFile,
    can_syncfs,
    copy_hash,
    hash_file,
    link_hash,
    syncfs,
)
from labkeep.names import MAX_MESSAGE, check_relpath, check_text, parse_address
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.manifests import store_manifest
from labkeep.ops.projects import ensure_dataset
from labkeep.results import Report, Result
from labkeep.storage import fsync_dir

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

RAW = "raw"
#: flush a batch at least this often, so a long ingest commits as it goes
FLUSH_SECONDS = 5.0
FLUSH_BYTES = 4 << 30
#: below this mean file size one worker thread copies (the main thread renames, commits)
TINY_FILE = 32 << 10


class Progress(Protocol):
    """What a front end gives ingest (and verify) to show progress."""

    def start(self, total_files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...


@dataclass
class _Item:
    rel: str  # path below the source root, "/"-separated
    src: str
    size: int
    mtime_ns: int
    #: copy | link | adopt (final file exists uncommitted) | compare (entry exists)
    mode: str
    known_sha: bytes | None = None
    #: compare: the entry's row id, size and mtime in the catalog
    entry_id: int | None = None
    known_size: int = 0
    known_mtime: int = 0
    #: compare: the tree copy may be missing or damaged (re-hash it; restore if so)
    tree_suspect: bool = False
    #: bytes of it already shown as progress (counted while it is read)
    counted: int = 0


@dataclass
class _Done:
    item: _Item
    hashed: Hashed
    partial: str | None  # partial file to rename into place (None: nothing to place)
    verified: bool = False  # copy re-read and matched (needed to delete the source)
    #: compare: the tree copy was re-hashed and matched the catalog
    tree_checked: bool = False


#: a renamed batch: what to report, and the catalog rows to commit
_Placed = tuple[list[_Done], list[dict[str, object]]]
#: a current entry: row id, size, mtime, SHA-256, outcome of its last verification
_Known = tuple[int, int, int, bytes, str | None]


def _scan(source: Path, report: Report, address: str) -> list[_Item]:
    """Every regular file below *source*; a record for anything that cannot be ingested."""

    def refuse(rel: str, message: str) -> None:
        report.add(
            Result("ingest", "impossible", path=f"{RAW}/{rel}", dataset=address, message=message)
        )

    items: list[_Item] = []
    if not source.is_dir():
        st = source.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{source} is neither a folder nor a regular file")
        name = source.name
        items.append(_Item(name, str(source), st.st_size, st.st_mtime_ns, "copy"))
        return items
    stack = [("", str(source))]
    while stack:
        prefix, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError as exc:
            report.add(
                Result(
                    "ingest",
                    "error",
                    path=f"{RAW}/{prefix}",
                    dataset=address,
                    message=f"cannot read folder: {exc.strerror}",
                )
            )
            continue
        for child in children:
            rel = prefix + child.name
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            try:
                check_relpath(rel)
            except UsageError as exc:
                refuse(shown, f"{exc.message}; not ingested")
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                report.add(
                    Result(
                        "ingest",
                        "error",
                        path=f"{RAW}/{rel}",
                        dataset=address,
                        message=f"cannot stat: {exc.strerror}",
                    )
                )
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel + "/", child.path))
            elif stat.S_ISREG(st.st_mode):
                items.append(_Item(rel, child.path, st.st_size, st.st_mtime_ns, "copy"))
            elif stat.S_ISLNK(st.st_mode):
                refuse(rel, "symbolic link: not followed, not ingested")
            else:
                refuse(rel, "special file (device, FIFO or socket): not ingested")
    return items


def _check_source(source: Path, keep: Keep) -> Path:
    if not source.exists() and not source.is_symlink():
        raise SourceError(f"source {source} does not exist", hint="check the path and try again")
    if source.is_symlink():
        raise SourceError(f"source {source} is a symbolic link", hint="give the real folder")
    real = source.resolve()
    tree = keep.tree.base.resolve()
    if real == tree or tree in real.parents or real in tree.parents:
        raise SourceError(
            f"source {source} overlaps the keep's tree {tree}",
            hint="ingest from a buffer folder outside the keep",
        )
    if not os.access(real, os.R_OK):
        raise SourceError(f"source {source} is not readable", hint="check its permissions")
    return real


def ingest(
    keep: Keep,
    source: str | os.PathLike[str],
    address: str,
    *,
    jobs: int | None = None,
    link: bool = False,
    seal: bool = False,
    delete_source: bool = False,
    kind: str = "session",
    message: str = "",
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Ingest the files below *source* into ``PROJECT/DATASET/raw/``.

    Idempotent and resumable: files already registered with the same size and mtime are
    skipped (``notneeded``); after a crash, running it again finishes the job. Files that
    cannot be ingested (symlinks, special files, unreadable, changing, non-UTF-8 names)
    each get an error record and the rest goes on.
    """
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path or addr.version is not None:
        raise UsageError(f"ingest into a dataset, not {address!r}", hint="use PROJECT/DATASET")
    check_text(message, "the message", MAX_MESSAGE)
    project, name = addr.project, addr.dataset
    target = f"{project}/{name}"
    src_root = _check_source(Path(source).expanduser().absolute(), keep)
    # (without keep_results, on_result takes every record and the report keeps problems)
    report = Report(
        "ingest",
        info={"dataset": target, "source": str(src_root), "bytes": 0},
        keep_all=keep_results,
    )

    with keep.catalog.write() as session:
        _, dataset, _created = ensure_dataset(
            keep, session, project, name, kind, action="dataset.ingest"
        )
        _refuse_sealed(dataset, target)
        dataset_id = dataset.id

    with keep.tree.lock(project, name, what="ingest"):
        _refuse_protected(keep, project, name, dataset_id)
        run = _IngestRun(keep, project, name, dataset_id, report, jobs, link, delete_source)
        run.progress, run.on_result = progress, on_result
        run.execute(src_root, message)
    if seal and not report.failed:
        from labkeep.ops.seal import seal as do_seal

        report.info["seal"] = do_seal(keep, target).to_dict()
    elif seal:
        report.info["seal"] = {"status": "impossible", "message": "not sealed: ingest had errors"}
    return report


def _refuse_sealed(dataset: Dataset, target: str) -> None:
    if dataset.sealed:
        raise SealedError(
            f"{target} is sealed: its raw data is write-once",
            hint="ingest into a new dataset (e.g. the next session); "
            "a site admin can 'labkeep unseal --force' if this is truly needed",
        )


def _refuse_protected(keep: Keep, project: str, name: str, dataset_id: int) -> None:
    """Under the lock: refuse a dataset sealed meanwhile, or one whose seal was cut short
    (its raw/ may be partly write-protected while the catalog says unsealed)."""
    target = f"{project}/{name}"
    with keep.catalog.read() as session:
        _refuse_sealed(session.get_one(Dataset, dataset_id), target)
    if keep.tree.seal_intent(project, name) == "seal":
        raise SealInterrupted(
            f"a seal of {target} was interrupted: its raw/ may be partly write-protected",
            hint=f"finish it with 'labkeep seal {target}', or undo it with "
            f"'labkeep unseal --force {target}'; then run the ingest again",
        )


class _IngestRun:
    """The state of one ingest while it holds the dataset's lock."""

    def __init__(
        self,
        keep: Keep,
        project: str,
        name: str,
        dataset_id: int,
        report: Report,
        jobs: int | None,
        link: bool,
        delete_source: bool,
    ) -> None:
        self.keep = keep
        self.project = project
        self.name = name
        self.target = f"{project}/{name}"
        self.dataset_id = dataset_id
        self.report = report
        self.jobs = jobs or keep.config.ingest_jobs or os.cpu_count() or 1
        self.auto_jobs = not (jobs or keep.config.ingest_jobs)
        self.link = link
        self.delete_source = delete_source
        self.progress: Progress | None = None
        self.on_result: Callable[[Result], None] | None = None
        self.dataset_dir = keep.tree.dataset_dir(project, name)
        self.partial_dir = keep.tree.partial_dir(project, name)
        self.batch_sync = keep.config.durability == "batch"
        #: a full batch whose syncfs runs, and the renamed batch that syncfs makes durable
        self.syncing: tuple[list[_Done], Future[bool], _Placed | None] | None = None
        self.version: int | None = None
        self.made_dirs: set[str] = set()
        #: damaged or missing tree copies restored from the source
        self.repaired = 0

    # -- records ------------------------------------------------------------------------
    def emit(self, result: Result) -> None:
        self.report.add(result)
        if self.on_result is not None:
            self.on_result(result)

    def record(
        self, item: _Item, status: str, message: str | None = None, sha256: str | None = None
    ) -> Result:
        return Result(
            "ingest",
            status,
            path=f"{RAW}/{item.rel}",
            dataset=self.target,
            size=item.size,
            sha256=sha256,
            message=message,
        )

    # -- the run ----------------------------------------------------------------------
    def execute(self, src_root: Path, message: str) -> None:
        keep = self.keep
        keep.tree.prepare_dataset(self.project, self.name)
        keep.tree.clear_partials(self.project, self.name)
        with keep.catalog.read() as session:
            self.version = session.execute(
                select(Version.number).where(
                    Version.dataset_id == self.dataset_id, Version.state == "open"
                )
            ).scalar_one_or_none()
            current = {
                row[0]: row[1:]
                for row in session.execute(
                    select(
                        Entry.path,
                        Entry.id,
                        Entry.size,
                        Entry.mtime_ns,
                        Entry.sha256,
                        Entry.verify_status,
                    ).where(Entry.dataset_id == self.dataset_id, Entry.valid_to.is_(None))
                )
            }
        scanned = _scan(src_root, self.report, self.target)
        for result in list(self.report.results):
            if self.on_result is not None:
                self.on_result(result)
        resumed = self.version is not None
        if self.progress is not None:
            self.progress.start(len(scanned), sum(i.size for i in scanned))
        work = self._classify(scanned, current)
        self._transfer_all(work)
        if self.delete_source:
            _remove_empty_dirs(src_root)
        self._finalize(message, resumed)

    def _classify(self, items: list[_Item], current: dict[str, _Known]) -> list[_Item]:
        work: list[_Item] = []
        for item in items:
            dest_rel = f"{RAW}/{item.rel}"
            known = current.get(dest_rel)
            if known is not None:
                entry_id, size, mtime, digest, verify_status = known
                tree_same = (
                    self._tree_has(dest_rel, size, mtime)
                    and verify_status not in ("modified", "missing")
                )  # fmt: skip
                source_same = size == item.size and mtime == item.mtime_ns
                if source_same and tree_same and not self.delete_source:
                    self.emit(self.record(item, "notneeded", sha256=digest.hex()))
                    if self.progress is not None:
                        self.progress.advance(1, item.size)
                    continue
                item.mode, item.known_sha = "compare", digest
                item.entry_id, item.known_size, item.known_mtime = entry_id, size, mtime
                item.tree_suspect = not tree_same
            elif self._adoptable(dest_rel, item):
                item.mode = "adopt"
            elif self.link:
                item.mode = "link"
            work.append(item)
        return work

    def _tree_has(self, dest_rel: str, size: int, mtime_ns: int) -> bool:
        """The quick check of a tree copy: a regular file with this size and mtime."""
        try:
            st = os.lstat(self.dataset_dir / dest_rel)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime_ns)

    def _tree_matches(self, item: _Item) -> bool:
        """Re-hash the tree copy of an entry: does it hold the catalog's bytes?

        If it does but its mtime was changed, the catalog's mtime is put back, so that the
        quick check of the next ingest trusts it again.
        """
        dest = self.dataset_dir / RAW / item.rel
        try:
            st = os.lstat(dest)
            if st.st_size != item.known_size or hash_file(str(dest)).sha256 != item.known_sha:
                return False
        except (OSError, LabkeepError):
            return False
        if st.st_mtime_ns != item.known_mtime:
            with contextlib.suppress(OSError):
                os.utime(dest, ns=(st.st_atime_ns, item.known_mtime), follow_symlinks=False)
        return True

    def _adoptable(self, dest_rel: str, item: _Item) -> bool:
        """A final file without a catalog row: left by a crash between rename and commit."""
        try:
            st = os.lstat(self.dataset_dir / dest_rel)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (
            item.size,
            item.mtime_ns,
        )

    def _on_bytes(self, item: _Item) -> Callable[[int], None] | None:
        """Progress per chunk read (a big file moves the bar while it is copied)."""
        progress = self.progress
        if progress is None:
            return None

        def advance(nbytes: int) -> None:
            item.counted += nbytes
            progress.advance(0, nbytes)

        return advance

    def _work(self, item: _Item, partial: str) -> _Done:
        """Runs on the thread pool: hash, and copy or link, one file (to *partial*)."""
        on_bytes = self._on_bytes(item)
        if item.mode == "compare" and item.tree_suspect:
            if not self._tree_matches(item):
                return self._restore(item, partial, on_bytes)
            tree_checked = True
        else:
            tree_checked = False
        if item.mode in ("adopt", "compare"):
            dest = str(self.dataset_dir / RAW / item.rel)
            hashed = hash_file(dest if item.mode == "adopt" else item.src, on_bytes=on_bytes)
            verified = False
            if self.delete_source:
                other = hash_file(item.src if item.mode == "adopt" else dest)
                verified = other.sha256 == hashed.sha256
            return _Done(item, hashed, None, verified, tree_checked)
        if item.mode == "link":
            hashed = link_hash(item.src, partial, fsync=not self.batch_sync, on_bytes=on_bytes)
            return _Done(item, hashed, partial, verified=True)
        hashed = copy_hash(item.src, partial, fsync=not self.batch_sync, on_bytes=on_bytes)
        verified = self.delete_source and hash_file(partial).sha256 == hashed.sha256
        return _Done(item, hashed, partial, verified)

    def _restore(self, item: _Item, partial: str, on_bytes: Callable[[int], None] | None) -> _Done:
        """The tree copy is missing or damaged: copy the source to *partial* (with the
        catalog's mtime), to be renamed over it only if it has the catalog's SHA-256."""
        hashed = copy_hash(
            item.src,
            partial,
            fsync=not self.batch_sync,
            mtime_ns=item.known_mtime,
            on_bytes=on_bytes,
        )
        if hashed.sha256 != item.known_sha:
            os.unlink(partial)  # another content: a conflict, reported by _place_all
            return _Done(item, hashed, None)
        verified = self.delete_source and hash_file(partial).sha256 == hashed.sha256
        return _Done(item, hashed, partial, verified)

    def _transfer_all(self, work: list[_Item]) -> None:
        """Hash and copy (or link) on worker threads; make batches durable as they fill.

        The workers take the next item themselves and run up to two batches ahead of this
        thread, so copying goes on while batches are synced, renamed and committed.
        """
        batch_files = self.keep.config.batch_files
        jobs = self.jobs
        if self.auto_jobs and sum(i.size for i in work) < TINY_FILE * len(work):
            jobs = 1  # per-file costs dominate: more threads only contend (for the GIL)
        if self.batch_sync and not can_syncfs():
            self.batch_sync = False
        results: queue.SimpleQueue[tuple[_Item, _Done | Exception]] = queue.SimpleQueue()
        ahead = threading.Semaphore(max(2 * batch_files, 4 * jobs))
        stop = threading.Event()
        take = threading.Lock()
        todo = iter(work)
        # unique partial names (the folder was emptied under the dataset's lock)
        prefix = os.path.join(self.partial_dir, uuid.uuid4().hex[:12] + "-")
        numbers = itertools.count()

        def worker() -> None:
            while True:
                ahead.acquire()
                with take:
                    item = None if stop.is_set() else next(todo, None)
                    number = next(numbers)
                if item is None:
                    return
                try:
                    results.put((item, self._work(item, f"{prefix}{number}")))
                except Exception as exc:  # noqa: BLE001 (re-raised by the main thread)
                    results.put((item, exc))

        batch: list[_Done] = []
        batch_bytes = 0
        last_flush = time.monotonic()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="labkeep-sync") as syncer,
            ThreadPoolExecutor(jobs, thread_name_prefix="labkeep-ingest") as pool,
        ):
            for _ in range(jobs):
                pool.submit(worker)
            try:
                for _ in range(len(work)):
                    item, done = results.get()
                    ahead.release()
                    if isinstance(done, Exception):
                        if not isinstance(done, (OSError, LabkeepError)):
                            raise done
                        self._failed(item, done)
                        continue
                    batch.append(done)
                    batch_bytes += item.size
                    if (
                        len(batch) >= batch_files
                        or batch_bytes >= FLUSH_BYTES
                        or time.monotonic() - last_flush >= FLUSH_SECONDS
                    ):
                        self._flush(batch, syncer)
                        batch, batch_bytes, last_flush = [], 0, time.monotonic()
            finally:
                stop.set()
                for _ in range(jobs):  # wake workers waiting for room
                    ahead.release()
            if batch:
                self._flush(batch, syncer)
            self._flush(None, syncer)

    def _failed(self, item: _Item, exc: BaseException) -> None:
        if isinstance(exc, FileChanged):
            msg = (
                "file changed while it was read; not ingested "
                "(run the ingest again once the instrument has finished writing it)"
            )
        elif isinstance(exc, NotRegularFile):
            msg = "no longer a regular file; not ingested"
        elif isinstance(exc, LabkeepError):
            msg = exc.message
        elif isinstance(exc, FileNotFoundError):
            msg = "vanished before it could be read"
        elif isinstance(exc, PermissionError):
            msg = "permission denied: cannot read it"
        elif isinstance(exc, OSError) and exc.errno == 28:
            msg = "no space left on the keep's disk; nothing of this file was kept"
        elif isinstance(exc, OSError) and exc.errno == 18:
            msg = "--link needs source and keep on the same filesystem"
        else:
            msg = f"{type(exc).__name__}: {exc}"
        self.emit(self.record(item, "error", msg))
        self._advance(item)

    def _place(self, done: _Done) -> str | None:
        """Rename a durable partial file to its final name; return an error message."""
        if done.partial is None:
            return None
        rel = f"{RAW}/{done.item.rel}"
        parent = os.path.dirname(rel)
        try:
            if parent not in self.made_dirs:
                os.makedirs(self.dataset_dir / parent, exist_ok=True)
                self.made_dirs.add(parent)
            os.rename(done.partial, f"{self.dataset_dir}/{rel}")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(done.partial)
            if isinstance(exc, IsADirectoryError) or (self.dataset_dir / rel).is_dir():
                return "a folder of that name is already in the dataset"
            if isinstance(exc, PermissionError):
                return (
                    f"cannot place file: {exc.strerror}: raw/ is write-protected (a seal cut "
                    "short, or a change by hand); run 'labkeep seal "
                    f"{self.target}' to finish sealing it or 'labkeep unseal --force "
                    f"{self.target}' to make it writable"
                )
            return f"cannot place file: {exc.strerror}"
        return None

    def _flush(self, batch: list[_Done] | None, syncer: ThreadPoolExecutor) -> None:
        """Take a full *batch* (None: the end) along the write order.

        Durability "file": the content was fsynced file by file; rename, fsync the folders,
        commit. Durability "batch": a ``syncfs`` is started in the background (*syncer*)
        once the batch is full. When it returns, the batch's content is durable, and so
        are the renames of the batch before it: those rows are committed, then this batch
        is renamed, to be made durable by the next batch's ``syncfs`` (or a last one).
        """
        if not self.batch_sync:
            if batch:
                placed, rows = self._place_all(batch)
                for folder in {os.path.dirname(f"{RAW}/{d.item.rel}") for d in placed if d.partial}:
                    fsync_dir(self.dataset_dir / folder)
                self._commit(placed, rows)
            return
        renamed = None
        if self.syncing is not None:
            synced, future, waiting = self.syncing
            self.syncing = None
            if not future.result():  # cannot happen after can_syncfs(): never go on unsynced
                raise LabkeepError("syncfs(2) failed to run")
            if waiting is not None:
                self._commit(*waiting)
            renamed = self._place_all(synced)
        if batch is not None:
            self.syncing = (batch, syncer.submit(syncfs, self.partial_dir), renamed)
        elif renamed is not None:
            if any(done.partial for done in renamed[0]):
                syncfs(self.dataset_dir)
            self._commit(*renamed)

    def _place_all(self, batch: list[_Done]) -> _Placed:
        """Rename a batch of durable partial files into place; return it and its rows."""
        rows: list[dict[str, object]] = []
        placed: list[_Done] = []
        for done in batch:
            item = done.item
            if item.mode == "compare":
                assert item.known_sha is not None
                if done.hashed.sha256 != item.known_sha:
                    self.emit(
                        self.record(
                            item,
                            "error",
                            "already in the dataset with different content; not replaced "
                            "(ingest the new data into a new dataset)",
                        )
                    )
                    self._advance(item)
                    continue
                if done.partial is not None:  # a restore: over the damaged tree copy
                    error = self._place(done)
                    if error:
                        self.emit(self.record(item, "error", error))
                        self._advance(item)
                        continue
                placed.append(done)
                continue
            error = self._place(done)
            if error:
                self.emit(self.record(item, "error", error))
                self._advance(item)
                continue
            placed.append(done)
            rows.append(
                {
                    "dataset_id": self.dataset_id,
                    "path": f"{RAW}/{item.rel}",
                    "size": done.hashed.size,
                    "sha256": done.hashed.sha256,
                    "mtime_ns": done.hashed.mtime_ns,
                }
            )
        return placed, rows

    def _commit(self, placed: list[_Done], rows: list[dict[str, object]]) -> None:
        """Commit the rows of a batch whose renames are durable; then report it.

        A restored tree copy's entry forgets its failed verification (the copy is new,
        and not yet verified); a tree copy re-hashed and found intact counts as verified.
        """
        now = utcnow()
        updates: list[dict[str, object]] = [
            {"id": d.item.entry_id, "verify_status": None, "verified_at": None}
            if d.partial is not None
            else {"id": d.item.entry_id, "verify_status": "ok", "verified_at": now}
            for d in placed
            if d.item.mode == "compare" and (d.partial is not None or d.tree_checked)
        ]
        if rows or updates:
            with self.keep.catalog.write() as session:
                if rows:
                    version = self._open_version(session)
                    for row in rows:
                        row["valid_from"] = version
                    session.execute(insert(Entry), rows)
                if updates:
                    session.execute(update(Entry), updates)
        for done in placed:
            self._done(done)

    def _open_version(self, session: Session) -> int:
        if self.version is None:
            session.execute(
                select(Dataset.id).where(Dataset.id == self.dataset_id).with_for_update()
            )
            highest = session.execute(
                select(func.max(Version.number)).where(Version.dataset_id == self.dataset_id)
            ).scalar_one()
            self.version = (highest or 0) + 1
            session.add(
                Version(
                    dataset_id=self.dataset_id,
                    number=self.version,
                    state="open",
                    kind="ingest",
                    author=self.keep.actor,
                    message="",
                    created_at=utcnow(),
                    n_files=0,
                    n_bytes=0,
                )
            )
            session.flush()
        return self.version

    def _done(self, done: _Done) -> None:
        item = done.item
        restored = item.mode == "compare" and done.partial is not None
        status = "notneeded" if item.mode == "compare" and not restored else "ok"
        message = None
        if restored:
            message = "restored from the source: the copy in the keep was missing or damaged"
            self.repaired += 1
        result = self.record(item, status, message)
        result.sha256 = done.hashed.sha256.hex()
        if status == "ok":
            self.report.info["bytes"] += item.size
        if item.mode == "adopt":
            result.extra["resumed"] = True
        if restored:
            result.extra["repaired"] = True
        if self.delete_source:
            result.extra["source_deleted"] = self._delete_source(done)
        self.emit(result)
        self._advance(item)

    def _advance(self, item: _Item) -> None:
        """One file done: the bar gets the bytes of it not shown while it was read."""
        if self.progress is not None:
            self.progress.advance(1, max(0, item.size - item.counted))

    def _delete_source(self, done: _Done) -> bool:
        """Delete a source file whose copy is registered and was re-read and matched."""
        item = done.item
        if not done.verified:
            return False
        try:
            st = os.lstat(item.src)
            if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
                return False
            os.unlink(item.src)
        except OSError:
            return False
        return True

    def _finalize(self, message: str, resumed: bool) -> None:
        counts = self.report.counts()
        event = None
        with self.keep.catalog.write() as session:
            dataset = session.execute(
                select(Dataset).where(Dataset.id == self.dataset_id).with_for_update()
            ).scalar_one()
            manifest_sha = store_manifest(self.keep, session, self.project, self.name, dataset.id)
            details: dict[str, object] = {"source": self.report.info["source"], **counts}
            if self.repaired:
                details["repaired"] = self.repaired
            if self.version is not None:
                files, size = session.execute(
                    select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
                        Entry.dataset_id == dataset.id, Entry.valid_to.is_(None)
                    )
                ).one()
                version = session.execute(
                    select(Version).where(
                        Version.dataset_id == dataset.id, Version.number == self.version
                    )
                ).scalar_one()
                version.state = "committed"
                version.committed_at = utcnow()
                version.message = message or f"ingest from {self.report.info['source']}"
                version.n_files, version.n_bytes = int(files), int(size)
                version.manifest_sha256 = manifest_sha
                dataset.head_version = self.version
                details.update(version=self.version, manifest_sha256=manifest_sha, resumed=resumed)
                self.report.info["version"] = self.version
            if self.version is not None or self.report.failed or self.repaired:
                event = append_event(session, self.keep.actor, "ingest", self.target, details)
        if event is not None:
            checkpoint(self.keep, event)
        self.report.info["manifest_sha256"] = manifest_sha
        if self.repaired:
            self.report.info["repaired"] = self.repaired


def _remove_empty_dirs(root: Path) -> None:
    """Remove folders below *root* (not *root* itself) left empty by --delete-source."""
    for folder, _dirs, _files in os.walk(root, topdown=False):
        if Path(folder) != root:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
