"""The transfer: hash and copy (or link) on worker threads, then the durability barrier.

Worker threads pull the next planned file themselves (the plan, and the scan below it,
run under one lock on whichever worker asks) and hand their results to the run's thread
through one queue, up to two batches ahead of it. The run's thread collects batches and
takes each along the write order of the package docstring (:meth:`Transfer.flush`):
content durable, renamed into place, renames durable, then the batch's catalog rows.

Parallelism follows the file sizes: while the recent mean is under ``TINY_FILE`` one
worker copies (per-file costs dominate; more threads only contend for the GIL), above
it all of them (unless ``jobs`` was set).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkeep.errors import LabkeepError
from labkeep.integrity.hashing import (
    Hashed,
    can_syncfs,
    copy_hash,
    hash_file,
    link_hash,
    syncfs,
)
from labkeep.ops.ingest._scan import RAW, Item
from labkeep.results import Result
from labkeep.storage import fsync_dir

if TYPE_CHECKING:
    from labkeep.ops.ingest._run import _IngestRun

#: flush a batch at least this often, so a long ingest commits as it goes
FLUSH_SECONDS = 5.0
FLUSH_BYTES = 4 << 30
#: below this recent mean file size one worker thread copies
TINY_FILE = 32 << 10
#: weight of the newest file in the running mean size
_MEAN_WEIGHT = 1 / 32


@dataclass(slots=True)
class Done:
    item: Item
    hashed: Hashed
    partial: str | None  # partial file to rename into place (None: nothing to place)
    verified: bool = False  # copy re-read and matched (needed to delete the source)
    #: compare: the tree copy was re-hashed and matched the catalog
    tree_checked: bool = False
    #: linked straight to its final name (nothing to rename; its folder to make durable)
    linked: bool = False


#: a renamed batch: what to report, and the catalog rows to commit
Placed = tuple[list[Done], list[dict[str, object]]]
#: what a worker hands over: a file and its outcome, a ready record, or (None, None) at
#: its end
_Handed = tuple[Item | None, Done | Result | BaseException | None]


class Transfer:
    """The worker threads and the batches of one ingest run."""

    def __init__(self, run: _IngestRun) -> None:
        self.run = run
        keep = run.keep
        self.raw_dir = f"{run.dataset_dir}/{RAW}"
        self.batch_files = keep.config.batch_files
        self.batch_sync = keep.config.durability == "batch" and can_syncfs()
        self.link = run.link
        self.delete_source = run.delete_source
        self.verify_sources = run.verify_sources
        self.jobs = run.jobs
        self.adaptive = run.auto_jobs and run.jobs > 1
        #: a full batch whose syncfs runs, and the renamed batch that syncfs makes durable
        self.syncing: tuple[list[Done], Future[bool], Placed | None] | None = None

    # -- per file, on the worker threads ----------------------------------------------
    def _on_bytes(self, item: Item) -> Callable[[int], None] | None:
        """Progress per chunk read (a big file moves the bar while it is copied)."""
        progress = self.run.progress
        if progress is None or item.size <= (1 << 20):
            return None  # one chunk: the whole file is shown when it is done

        def advance(nbytes: int) -> None:
            item.counted += nbytes
            progress.advance(0, nbytes)

        return advance

    def work(self, item: Item, partial: str) -> Done:
        """Hash, and copy or link, one file (to *partial*)."""
        on_bytes = self._on_bytes(item)
        mode = item.mode
        if mode == "copy":
            hashed = copy_hash(item.src, partial, fsync=not self.batch_sync, on_bytes=on_bytes)
            verified = self.delete_source and hash_file(partial).sha256 == hashed.sha256
            return Done(item, hashed, partial, verified)
        if mode == "link":
            return self._link(item, partial, on_bytes)
        tree_checked = False
        if mode == "compare" and item.tree_suspect:
            if not self._tree_matches(item):
                return self._restore(item, partial, on_bytes)
            tree_checked = True
        dest = f"{self.raw_dir}/{item.rel}"
        hashed = hash_file(dest if mode == "adopt" else item.src, on_bytes=on_bytes)
        verified = False
        if self.delete_source or self.verify_sources:
            other = hash_file(item.src if mode == "adopt" else dest)
            verified = other.sha256 == hashed.sha256
            if mode == "adopt" and self.verify_sources and not verified:
                raise LabkeepError(
                    "already in the dataset's folder with different content; not adopted "
                    "(ingest the new data into a new dataset)"
                )
        return Done(item, hashed, None, verified, tree_checked)

    def _link(self, item: Item, partial: str, on_bytes: Callable[[int], None] | None) -> Done:
        """Hard-link a file straight to its final name: one directory operation instead of
        a link and a rename. It is the source's own inode, so a crash before the batch is
        durable leaves either no name or a name for the right bytes (the next run adopts
        it). A name already taken (a file not in the catalog, or a folder) goes the copy's
        way: a partial file renamed over it, or the folder reported."""
        fsync = not self.batch_sync
        final = f"{self.raw_dir}/{item.rel}"
        try:
            try:
                hashed = link_hash(item.src, final, fsync=fsync, on_bytes=on_bytes)
            except FileNotFoundError:
                if not os.path.lexists(item.src):
                    raise
                os.makedirs(os.path.dirname(final), exist_ok=True)  # its folder is new
                hashed = link_hash(item.src, final, fsync=fsync, on_bytes=on_bytes)
        except FileExistsError:
            hashed = link_hash(item.src, partial, fsync=fsync, on_bytes=on_bytes)
            return Done(item, hashed, partial, verified=True)
        except PermissionError as exc:
            if not os.access(item.src, os.R_OK):
                raise  # reported as unreadable
            if not os.access(os.path.dirname(final), os.W_OK):
                raise LabkeepError(self._protected(exc)) from None
            raise LabkeepError(
                f"cannot hard-link it: {exc.strerror} (the system lets you link only files "
                "you own or may write: fs.protected_hardlinks); ingest without --link to "
                "copy it"
            ) from None
        return Done(item, hashed, None, verified=True, linked=True)

    def _protected(self, exc: OSError) -> str:
        return (
            f"cannot place file: {exc.strerror}: raw/ is write-protected (a seal cut "
            f"short, or a change by hand); run 'labkeep seal {self.run.target}' to finish "
            f"sealing it or 'labkeep unseal --force {self.run.target}' to make it writable"
        )

    def _tree_matches(self, item: Item) -> bool:
        """Re-hash the tree copy of an entry: does it hold the catalog's bytes?

        If it does but its mtime was changed, the catalog's mtime is put back, so that the
        quick check of the next ingest trusts it again.
        """
        dest = f"{self.raw_dir}/{item.rel}"
        try:
            st = os.lstat(dest)
            if st.st_size != item.known_size or hash_file(dest).sha256 != item.known_sha:
                return False
        except (OSError, LabkeepError):
            return False
        if st.st_mtime_ns != item.known_mtime:
            with contextlib.suppress(OSError):
                os.utime(dest, ns=(st.st_atime_ns, item.known_mtime), follow_symlinks=False)
        return True

    def _restore(self, item: Item, partial: str, on_bytes: Callable[[int], None] | None) -> Done:
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
            return Done(item, hashed, None)
        verified = self.delete_source and hash_file(partial).sha256 == hashed.sha256
        return Done(item, hashed, partial, verified)

    # -- the pool ---------------------------------------------------------------------
    def transfer(self, planned: Iterator[Item | Result]) -> None:
        """Run every planned file through the workers; flush batches as they fill.

        The workers take the next file themselves and run up to two batches ahead of this
        thread, so copying goes on while batches are synced, renamed and committed.
        """
        run = self.run
        jobs = self.jobs
        results: queue.SimpleQueue[_Handed] = queue.SimpleQueue()
        ahead = threading.Semaphore(max(2 * self.batch_files, 4 * jobs))
        stop = threading.Event()
        take = threading.Lock()
        #: set: every worker copies; clear: only the first (tiny files)
        wide = threading.Event()
        if not self.adaptive:
            wide.set()
        mean = [-1.0]
        # unique partial names (the folder was emptied under the dataset's lock)
        prefix = os.path.join(run.partial_dir, uuid.uuid4().hex[:12] + "-")
        numbers = itertools.count()

        def pull() -> tuple[Item | Result | None, int]:
            with take:
                if stop.is_set():
                    return None, 0
                one = next(planned, None)
                if self.adaptive and isinstance(one, Item):
                    m = mean[0]
                    m = one.size if m < 0 else m + (one.size - m) * _MEAN_WEIGHT
                    mean[0] = m
                    if m >= TINY_FILE:
                        wide.set()
                    elif wide.is_set():
                        wide.clear()
                return one, next(numbers)

        def worker(index: int) -> None:
            try:
                while True:
                    if index and not wide.is_set():
                        wide.wait()
                    ahead.acquire()
                    try:
                        one, number = pull()
                    except BaseException as exc:  # noqa: BLE001 (the plan or scan failed: re-raised)
                        stop.set()
                        results.put((None, exc))
                        return
                    if one is None:
                        return
                    if isinstance(one, Result):
                        results.put((None, one))
                        continue
                    try:
                        results.put((one, self.work(one, f"{prefix}{number}")))
                    except Exception as exc:  # noqa: BLE001 (handled by the run's thread)
                        results.put((one, exc))
            finally:
                wide.set()  # wake the parked workers: the end, for them too
                results.put((None, None))

        batch: list[Done] = []
        batch_bytes = 0
        last_flush = time.monotonic()
        batch_files = self.batch_files
        with (
            ThreadPoolExecutor(1, thread_name_prefix="labkeep-sync") as syncer,
            ThreadPoolExecutor(jobs, thread_name_prefix="labkeep-ingest") as pool,
        ):
            for index in range(jobs):
                pool.submit(worker, index)
            running = jobs
            try:
                while running:
                    item, done = results.get()
                    ahead.release()
                    if done is None:
                        running -= 1
                        continue
                    if isinstance(done, Result):
                        run.emit(done)
                        if done.status == "notneeded" and run.progress is not None:
                            run.progress.advance(1, done.size or 0)
                        continue
                    if isinstance(done, BaseException):
                        if item is None or not isinstance(done, (OSError, LabkeepError)):
                            raise done
                        run.failed(item, done)
                        continue
                    batch.append(done)
                    batch_bytes += done.item.size
                    if (
                        len(batch) >= batch_files
                        or batch_bytes >= FLUSH_BYTES
                        or time.monotonic() - last_flush >= FLUSH_SECONDS
                    ):
                        self.flush(batch, syncer)
                        batch, batch_bytes, last_flush = [], 0, time.monotonic()
            finally:
                stop.set()
                wide.set()
                for _ in range(jobs):  # wake workers waiting for room
                    ahead.release()
            if batch:
                self.flush(batch, syncer)
            self.flush(None, syncer)

    # -- the durability barrier, on the run's thread ---------------------------------
    def flush(self, batch: list[Done] | None, syncer: ThreadPoolExecutor) -> None:
        """Take a full *batch* (None: the end) along the write order.

        Durability "file": the content was fsynced file by file; rename, fsync the folders,
        commit. Durability "batch": a ``syncfs`` is started in the background (*syncer*)
        once the batch is full. When it returns, the batch's content is durable, and so
        are the renames of the batch before it: those rows are committed, then this batch
        is renamed, to be made durable by the next batch's ``syncfs`` (or a last one).
        """
        run = self.run
        if not self.batch_sync:
            if batch:
                placed, rows = self.place_all(batch)
                named = [d for d in placed if d.partial or d.linked]
                for folder in {os.path.dirname(f"{RAW}/{d.item.rel}") for d in named}:
                    fsync_dir(run.dataset_dir / folder)
                run._commit(placed, rows)
            return
        renamed = None
        if self.syncing is not None:
            synced, future, waiting = self.syncing
            self.syncing = None
            if not future.result():  # cannot happen after can_syncfs(): never go on unsynced
                raise LabkeepError("syncfs(2) failed to run")
            if waiting is not None:
                run._commit(*waiting)
            renamed = self.place_all(synced)
        if batch is not None:
            self.syncing = (batch, syncer.submit(syncfs, run.partial_dir), renamed)
        elif renamed is not None:
            if any(done.partial for done in renamed[0]):
                syncfs(run.dataset_dir)
            run._commit(*renamed)

    def _place(self, done: Done) -> str | None:
        """Rename a durable partial file to its final name; return an error message."""
        if done.partial is None:
            return None
        rel = done.item.rel
        final = f"{self.raw_dir}/{rel}"
        try:
            try:
                os.rename(done.partial, final)
            except FileNotFoundError:  # its folder is not there yet
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.rename(done.partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(done.partial)
            if isinstance(exc, IsADirectoryError) or os.path.isdir(final):
                return "a folder of that name is already in the dataset"
            if isinstance(exc, PermissionError):
                return self._protected(exc)
            return f"cannot place file: {exc.strerror}"
        return None

    def place_all(self, batch: list[Done]) -> Placed:
        """Rename a batch of durable partial files into place; return it and its rows."""
        run = self.run
        dataset_id = run.dataset_id
        rows: list[dict[str, object]] = []
        placed: list[Done] = []
        for done in batch:
            item = done.item
            if item.mode == "compare":
                assert item.known_sha is not None
                if done.hashed.sha256 != item.known_sha:
                    run.emit(
                        run.record(
                            item,
                            "error",
                            "already in the dataset with different content; not replaced "
                            "(ingest the new data into a new dataset)",
                        )
                    )
                    run.advance(item)
                    continue
                if done.partial is not None:  # a restore: over the damaged tree copy
                    error = self._place(done)
                    if error:
                        run.emit(run.record(item, "error", error))
                        run.advance(item)
                        continue
                placed.append(done)
                continue
            error = self._place(done)
            if error:
                run.emit(run.record(item, "error", error))
                run.advance(item)
                continue
            placed.append(done)
            hashed = done.hashed
            rows.append(
                {
                    "dataset_id": dataset_id,
                    "path": f"{RAW}/{item.rel}",
                    "size": hashed.size,
                    "sha256": hashed.sha256,
                    "mtime_ns": hashed.mtime_ns,
                }
            )
        return placed, rows
