"""One ingest run under the dataset's lock: scan -> plan -> transfer -> commit -> finalize.

This module holds the run's state and what happens on the run's own thread: the records
(each one handed to the report sink and to ``on_result`` as it comes), the batch commits,
and the version, manifest and event at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from sqlalchemy import func, insert, select

from labkeep.catalog import Dataset, Entry, Version
from labkeep.clock import utcnow
from labkeep.errors import LabkeepError
from labkeep.integrity.hashing import FileChanged, NotRegularFile
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.ingest._plan import TreeProbe, current_entries, plan, suspect_paths
from labkeep.ops.ingest._scan import RAW, Item, Spool, scan
from labkeep.ops.ingest._transfer import Done, Transfer
from labkeep.ops.manifests import store_manifest
from labkeep.results import Report, Result

#: the entries table, for a Core executemany of a batch's rows (no ORM per row)
ENTRIES = cast("Table", Entry.__table__)

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Table
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress


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
        verify_sources: bool = False,
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
        self.verify_sources = verify_sources
        self.progress: Progress | None = None
        self.on_result: Callable[[Result], None] | None = None
        #: paths below the source left out (a watched buffer's marker file)
        self.exclude: frozenset[str] = frozenset()
        self.dataset_dir = keep.tree.dataset_dir(project, name)
        self.partial_dir = keep.tree.partial_dir(project, name)
        self.version: int | None = None
        #: damaged or missing tree copies restored from the source
        self.repaired = 0

    # -- records ------------------------------------------------------------------------
    def emit(self, result: Result) -> None:
        self.report.add(result)
        if self.on_result is not None:
            self.on_result(result)

    def record(
        self, item: Item, status: str, message: str | None = None, sha256: str | None = None
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

    def advance(self, item: Item) -> None:
        """One file done: the bar gets the bytes of it not shown while it was read."""
        if self.progress is not None:
            self.progress.advance(1, max(0, item.size - item.counted))

    def failed(self, item: Item, exc: BaseException) -> None:
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
        self.advance(item)

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
        resumed = self.version is not None
        suspect = suspect_paths(keep, self.dataset_id)
        spool = None
        try:
            scanned = scan(src_root, self.target)
            if self.exclude:
                scanned = (
                    s for s in scanned if not (isinstance(s, Item) and s.rel in self.exclude)
                )
            if self.progress is not None:
                # the bar wants its totals before the copying: spool the scan to a
                # temporary file (counters only in memory), then copy from the spool
                spool = Spool(self.partial_dir)
                for refused in spool.write(scanned, src_root):
                    self.emit(refused)
                self.progress.start(spool.files, spool.bytes)
                scanned = spool.read()
            planned = plan(
                scanned,
                current_entries(keep, self.dataset_id),
                suspect,
                TreeProbe(self.dataset_dir),
                link=self.link,
                delete_source=self.delete_source or self.verify_sources,
                dataset=self.target,
            )
            Transfer(self).transfer(planned)
        finally:
            if spool is not None:
                spool.close()
        if self.delete_source:
            _remove_empty_dirs(src_root)
        self._finalize(message, resumed)

    # -- commits, on the run's thread -------------------------------------------------
    def _commit(self, placed: list[Done], rows: list[dict[str, object]]) -> None:
        """Commit the rows of a batch whose renames are durable; then report it."""
        checked: list[tuple[int, str]] = []
        restored: list[tuple[int, str]] = []
        for done in placed:
            item = done.item
            if item.mode == "compare" and item.entry_id is not None:
                if done.partial is not None:
                    restored.append((item.entry_id, f"{RAW}/{item.rel}"))
                elif done.tree_checked:
                    checked.append((item.entry_id, f"{RAW}/{item.rel}"))
        if rows or checked or restored:
            with self.keep.catalog.write() as session:
                if rows:
                    version = self._open_version(session)
                    for row in rows:
                        row["valid_from"] = version
                    session.connection().execute(insert(ENTRIES), rows)
                if checked or restored:
                    _record_tree_checks(session, self.dataset_id, checked, restored)
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

    def _done(self, done: Done) -> None:
        item = done.item
        mode = item.mode
        restored = mode == "compare" and done.partial is not None
        status = "notneeded" if mode == "compare" and not restored else "ok"
        result = Result(
            "ingest",
            status,
            path=f"{RAW}/{item.rel}",
            dataset=self.target,
            size=item.size,
            sha256=done.hashed.sha256.hex(),
        )
        if status == "ok":
            self.report.info["bytes"] += item.size
        if mode == "adopt":
            result.extra["resumed"] = True
        if restored:
            result.message = "restored from the source: the copy in the keep was missing or damaged"
            result.extra["repaired"] = True
            self.repaired += 1
        if self.delete_source:
            result.extra["source_deleted"] = self._delete_source(done)
        self.emit(result)
        if self.progress is not None:
            self.progress.advance(1, max(0, item.size - item.counted))

    def _delete_source(self, done: Done) -> bool:
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
                from labkeep.ops.extract import queue_extraction

                queue_extraction(self.keep, session, self.project, self.name, self.version)
                self.report.info["version"] = self.version
            if self.version is not None or self.report.failed or self.repaired:
                event = append_event(session, self.keep.actor, "ingest", self.target, details)
        if event is not None:
            checkpoint(self.keep, event)
        self.report.info["manifest_sha256"] = manifest_sha
        if self.repaired:
            self.report.info["repaired"] = self.repaired


def _record_tree_checks(
    session: Session,
    dataset_id: int,
    checked: Sequence[tuple[int, str]],
    restored: Sequence[tuple[int, str]],
) -> None:
    """Every write of verification state that ingest does, in one place.

    *checked*: entries (row id, path) whose tree copy ingest re-hashed and found intact:
    they count as verified now. *restored*: entries whose tree copy was missing or
    damaged and was restored from the source: the copy is new and not yet verified, so
    the failed verification is forgotten (see :mod:`labkeep.ops.fixity`).
    """
    from labkeep.ops import fixity

    del dataset_id  # (the row ids are enough)
    fixity.record(session, [(entry_id, "ok") for entry_id, _ in checked], utcnow())
    fixity.forget(session, [entry_id for entry_id, _ in restored])


def _remove_empty_dirs(root: Path) -> None:
    """Remove folders below *root* (not *root* itself) left empty by --delete-source."""
    for folder, _dirs, _files in os.walk(root, topdown=False):
        if folder != str(root):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
