"""Fixity: re-hash the tree and compare with the catalog.

Every catalog entry is OK, MODIFIED (size or SHA-256 differ) or MISSING; every file in
the tree that the catalog does not know is EXTRA (labkeep's own files are not data: the
manifest, ``.labkeep/`` and temp files, which the dataset's lock removes first); a
manifest that does not match the catalog is reported too. Results go to
``verify_YYYY-MM-DD.log``, to the tree's fixity (``tree_checks``, one row per entry) and to one
audit event per dataset, whose details (the counts of files per state and the
manifest's state) are what ``status`` reads.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.access import allowed, check
from labkeep.catalog import Dataset, Entry, Event, Project
from labkeep.clock import isoformat, utcnow
from labkeep.errors import Busy, LabkeepError, UsageError, from_os_error
from labkeep.integrity.hashing import Hashed, hash_file
from labkeep.integrity.manifest import MANIFEST_NAME
from labkeep.names import parse_address
from labkeep.ops import fixity
from labkeep.ops._access import find_dataset, find_project, project_resource
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.manifests import manifest_digest
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress

#: "unsaved": a working-tree file (outside raw/) that was changed, added or removed since
#: the dataset's last save (by size and mtime): work in progress, not damage, so never
#: "repaired" (its saved content stays in the versions store)
STATES = ("ok", "modified", "missing", "extra", "unsaved")
RAW_PREFIX = "raw/"
#: files handed to the hashing threads ahead of the one whose result is awaited
HASH_AHEAD = 64
#: catalog rows read, and outcomes written, per transaction
PAGE = 5000
UNSAVED = "{} since the last save: run 'labkeep save {}' to keep it as a version"
UNSAVED_NEW = "new since the last save: run 'labkeep save {}' to keep it as a version"
#: states of the manifest in a verify event: as the catalog says, changed, not there
MANIFEST_STATES = ("ok", "modified", "missing")


def _shown(summary: Any) -> tuple[str, ...]:
    """The states a summary names: "unsaved" only where a working tree had some."""
    return tuple(s for s in STATES if s != "unsaved" or summary.get(s))


def _scope(keep: Keep, target: str | None) -> list[tuple[str, str, int]]:
    """(project, dataset, id) of every dataset *target* covers that the principal may verify."""
    with keep.catalog.read() as session:
        if not target:
            check(keep.principal, "keep.admin")
            query = select(Project.name, Dataset.name, Dataset.id).join(
                Project, Project.id == Dataset.project_id
            )
            return [
                (p, d, i) for p, d, i in session.execute(query.order_by(Project.name, Dataset.name))
            ]
        addr = parse_address(target)
        if addr.dataset:
            proj, dataset = find_dataset(
                keep, session, addr.project, addr.dataset, "dataset.verify"
            )
            return [(proj.name, dataset.name, dataset.id)]
        proj = find_project(keep, session, addr.project)
        datasets = session.execute(
            select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
        ).scalars()
        scope = [
            (proj.name, d.name, d.id)
            for d in datasets
            if allowed(keep.principal, "dataset.verify", project_resource(session, proj, d))
        ]
        if not scope:
            check(keep.principal, "dataset.verify", project_resource(session, proj))
        return scope


def verify(
    keep: Keep,
    target: str | None = None,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    keep_results: bool = True,
    store: str | None = None,
    quick: bool = False,
    repair: bool = False,
) -> Report:
    """Verify every dataset in *target* (a project, a dataset, or the whole keep).

    With *keep_results* False (when *on_result* takes every record as it comes) the
    report keeps only the problems: memory does not grow with the number of files.

    *store* verifies the replicas in that store instead of the tree (*quick*: trust the
    store's size and SHA-256). *repair* replaces every damaged or missing copy found
    (in the tree, through the seal, or in the store) from a good copy.
    """
    if store is not None and store != "tree":
        if not target:
            raise UsageError("--store needs a PROJECT or PROJECT/DATASET")
        from labkeep.ops.repair import verify_store

        return verify_store(
            keep,
            target,
            store=store,
            quick=quick,
            repair=repair,
            jobs=jobs,
            progress=progress,
            on_result=on_result,
            keep_results=keep_results,
        )
    if quick:
        raise UsageError("--quick is for the replicas of a store (--store NAME)")
    datasets = _scope(keep, target)
    report = Report(
        "verify",
        info={"target": target or "(all)", "datasets": len(datasets)},
        keep_all=keep_results,
    )
    folder = Path(log_dir) if log_dir else keep.config.verify_log_dir
    log_path = folder / f"verify_{date.today().isoformat()}.log"
    report.info["log"] = str(log_path)
    threads = jobs or keep.config.ingest_jobs or os.cpu_count() or 1
    with VerifyLog(log_path) as log:
        log.write(
            f"# labkeep verify {target or '(all)'} at {isoformat(utcnow())} by {keep.actor}\n"
        )
        if progress is not None:
            progress.start(*_totals(keep, [d[2] for d in datasets]))
        last_event = None
        with ThreadPoolExecutor(threads, thread_name_prefix="labkeep-verify") as pool:
            for project, name, dataset_id in datasets:
                run = _DatasetVerify(
                    keep, project, name, dataset_id, report, log, progress, on_result
                )
                if dropped(keep, dataset_id):
                    run.emit(
                        Result(
                            "verify",
                            "notneeded",
                            dataset=run.target,
                            message="its tree copy was dropped (see 'labkeep whereis "
                            f"{run.target}'): verify its stores with --store",
                        )
                    )
                    continue
                try:
                    with keep.tree.lock(project, name, what="verify"):
                        last_event = run.execute(pool)
                except Busy as exc:
                    run.emit(Result("verify", "error", dataset=run.target, message=exc.message))
                if repair and run.damaged:
                    _repair(keep, run, report, progress, on_result, jobs)
        summary = report.states()
        log.write(
            "# summary: "
            + ", ".join(f"{s.upper()} {summary.get(s, 0)}" for s in _shown(summary))
            + "\n"
        )
        if last_event is not None:
            point = checkpoint(keep, last_event)
            log.write(f"# audit chain head: event {point.event_id} {point.hash}\n")
    report.info["states"] = {s: summary.get(s, 0) for s in _shown(summary)}
    if repair:  # each repaired file was reported once as found damaged: what is left?
        report.info["unrepaired"] = max(0, report.problems - int(report.info.get("repaired", 0)))
    return report


def _merge(
    entries: Iterator[tuple[int, str, int, bytes, int]],
    disk: Iterator[tuple[str, os.stat_result]],
) -> Iterator[tuple[tuple[int, str, int, bytes, int] | None, tuple[str, os.stat_result] | None]]:
    """Pair two path-sorted streams: (entry, file) for a path in both, else one None."""
    entry = next(entries, None)
    item = next(disk, None)
    while entry is not None or item is not None:
        if item is None or (entry is not None and entry[1] < item[0]):
            yield entry, None
            entry = next(entries, None)
        elif entry is None or item[0] < entry[1]:
            yield None, item
            item = next(disk, None)
        else:
            yield entry, item
            entry, item = next(entries, None), next(disk, None)


def dropped(keep: Keep, dataset_id: int) -> bool:
    with keep.catalog.read() as session:
        return session.get_one(Dataset, dataset_id).tree_state != "present"


def _repair(
    keep: Keep,
    run: _DatasetVerify,
    report: Report,
    progress: Progress | None,
    on_result: Callable[[Result], None] | None,
    jobs: int | None,
) -> None:
    """Replace the damaged and missing tree files *run* found from good replicas."""
    from labkeep.ops.repair import repair_tree

    def forward(result: Result) -> None:
        report.add(result)
        run.log.write(
            f"REPAIR   {run.target}/{result.path}: {result.status}"
            + (f" ({result.message})" if result.message else "")
            + "\n"
        )
        if on_result is not None:
            on_result(result)

    try:
        repaired = repair_tree(keep, run.target, run.damaged, jobs=jobs, on_result=forward)
    except LabkeepError as exc:
        forward(Result("repair", "error", dataset=run.target, message=exc.message))
        return
    fixed = [r.path for r in repaired.results if r.status == "ok"]
    report.info["repaired"] = report.info.get("repaired", 0) + len(fixed)
    if fixed:
        # the dataset's fixity as it is now: repaired files were hashed as they were written
        counts = {s: run.counts.get(s, 0) for s in STATES}
        lost = {p for p in run.damaged if p not in set(fixed)}
        counts["ok"] += len(fixed)
        counts["modified"] = sum(1 for p in lost if p in run.modified)
        counts["missing"] = len(lost) - counts["modified"]
        with keep.catalog.write() as session:
            append_event(
                session,
                keep.actor,
                "verify",
                run.target,
                {**counts, "manifest": run.manifest_state, "repaired": len(fixed)},
            )


class VerifyLog:
    """The dated verify log, appended to; a failure to write it (a full disk, a read-only
    folder) is an error naming the log, not a stray OSError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> LabkeepError:
        exc.filename = str(self.path)
        return from_os_error(exc, "write the verify log")

    def write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise self._error(exc) from exc

    def __enter__(self) -> VerifyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _totals(keep: Keep, ids: list[int]) -> tuple[int, int]:
    from sqlalchemy import func

    if not ids:
        return 0, 0
    with keep.catalog.read() as session:
        files, size = session.execute(
            select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
                Entry.dataset_id.in_(ids), Entry.valid_to.is_(None)
            )
        ).one()
    return int(files), int(size)


class _DatasetVerify:
    def __init__(
        self,
        keep: Keep,
        project: str,
        name: str,
        dataset_id: int,
        report: Report,
        log: VerifyLog,
        progress: Progress | None,
        on_result: Callable[[Result], None] | None,
    ) -> None:
        self.keep = keep
        self.project = project
        self.name = name
        self.target = f"{project}/{name}"
        self.dataset_id = dataset_id
        self.report = report
        self.log = log
        self.progress = progress
        self.on_result = on_result
        self.root = keep.tree.dataset_dir(project, name)
        #: files per state (the manifest is not counted: it has its own state)
        self.counts: Counter[str] = Counter()
        #: paths found modified or missing (for --repair; as many as there are problems)
        self.damaged: list[str] = []
        self.modified: set[str] = set()
        self.manifest_state = "ok"

    def emit(self, result: Result, *, count: bool = True) -> None:
        self.report.add(result)
        if result.state and count:
            self.counts[result.state] += 1
            if result.state in ("modified", "missing") and result.path:
                self.damaged.append(result.path)
                if result.state == "modified":
                    self.modified.add(result.path)
        if result.state:
            self.log.write(f"{result.state.upper():8} {self.target}/{result.path}")
            self.log.write(f"  ({result.message})\n" if result.message else "\n")
        elif result.message:
            self.log.write(f"ERROR    {self.target}: {result.message}\n")
        if self.on_result is not None:
            self.on_result(result)

    def result(
        self,
        path: str,
        state: str,
        message: str | None = None,
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> Result:
        status = {"ok": "ok", "unsaved": "notneeded"}.get(state, "error")
        return Result(
            "verify",
            status,
            path=path,
            dataset=self.target,
            state=state,
            message=message,
            size=size,
            sha256=sha256,
        )

    def execute(self, pool: ThreadPoolExecutor) -> Event:
        """Verify the dataset; return the verify event it appended.

        The catalog's rows (keyset pages, path order) and the tree (a sorted walk) are
        merged as two sorted streams; files are hashed a bounded window ahead, and the
        outcomes written to the catalog in batches: memory does not grow with the files.
        """
        with self.keep.catalog.read() as session:
            has_entries = session.execute(
                select(Entry.id)
                .where(Entry.dataset_id == self.dataset_id, Entry.valid_to.is_(None))
                .limit(1)
            ).first()
            expected_manifest = manifest_digest(session, self.dataset_id) if has_entries else None
        self.updates: list[tuple[int, str]] = []
        self.verified_at = utcnow()
        window: deque[tuple[tuple[int, str, int, bytes, bool], Future[Hashed], list[int]]] = deque()
        for entry, disk in _merge(
            self._entries(), self.keep.tree.walk_sorted(self.project, self.name)
        ):
            if entry is None:
                assert disk is not None
                if disk[0].startswith(RAW_PREFIX):
                    self.emit(self.result(disk[0], "extra", "in the tree, not in the catalog"))
                else:
                    self.emit(self.result(disk[0], "unsaved", UNSAVED_NEW.format(self.target)))
                continue
            entry_id, path, size, _digest, mtime_ns = entry
            st = disk[1] if disk is not None else None
            working = not path.startswith(RAW_PREFIX)
            touched = (
                working
                and st is not None
                and stat.S_ISREG(st.st_mode)
                and st.st_size == size
                and st.st_mtime_ns != mtime_ns
            )
            if touched:
                # same size, new mtime: unsaved only if the bytes differ (a touch, or a
                # rewrite with the same content, is no change: save records none)
                window.append(((entry_id, path, size, _digest, True), *self._submit(pool, path)))
                if len(window) >= HASH_AHEAD:
                    self._hashed_one(*window.popleft())
            elif working and (
                st is None
                or not stat.S_ISREG(st.st_mode)
                or (st.st_size, st.st_mtime_ns) != (size, mtime_ns)
            ):
                # changed by someone since the last save: the saved bytes are in the
                # versions store; this is work in progress, not damage
                what = "removed" if st is None else "changed"
                self.emit(
                    self.result(path, "unsaved", UNSAVED.format(what, self.target), size=size)
                )
                self._advance(size)
            elif st is None:
                self._found(entry_id, path, size, "missing", "in the catalog, not in the tree")
            elif not stat.S_ISREG(st.st_mode):
                self._found(entry_id, path, size, "modified", "no longer a regular file")
            elif st.st_size != size:
                self._found(
                    entry_id, path, size, "modified", f"size {st.st_size}, catalog says {size}"
                )
            else:
                window.append(((entry_id, path, size, _digest, False), *self._submit(pool, path)))
                if len(window) >= HASH_AHEAD:
                    self._hashed_one(*window.popleft())
        while window:
            self._hashed_one(*window.popleft())
        self._check_manifest(expected_manifest)
        return self._record(self.updates)

    def _entries(self) -> Iterator[tuple[int, str, int, bytes, int]]:
        after: str | None = None
        while True:
            query = select(Entry.id, Entry.path, Entry.size, Entry.sha256, Entry.mtime_ns).where(
                Entry.dataset_id == self.dataset_id, Entry.valid_to.is_(None)
            )
            if after is not None:
                query = query.where(Entry.path > after)
            with self.keep.catalog.read() as session:
                rows = session.execute(query.order_by(Entry.path).limit(PAGE)).all()
            for entry_id, path, size, digest, mtime_ns in rows:
                yield int(entry_id), path, int(size), bytes(digest), int(mtime_ns)
            if len(rows) < PAGE:
                return
            after = rows[-1][1]

    def _found(self, entry_id: int, path: str, size: int, state: str, message: str) -> None:
        self.emit(self.result(path, state, message, size=size))
        self._update(entry_id, state)
        self._advance(size)

    def _hashed_one(
        self, entry: tuple[int, str, int, bytes, bool], future: Future[Hashed], read: list[int]
    ) -> None:
        entry_id, path, size, digest, touched = entry
        try:
            actual = future.result().sha256
        except (OSError, LabkeepError) as exc:
            message = exc.message if isinstance(exc, LabkeepError) else str(exc.strerror)
            self.emit(self.result(path, "modified", f"cannot read: {message}", size=size))
            self._update(entry_id, "modified")
        else:
            if actual == digest:
                self.emit(self.result(path, "ok", size=size, sha256=digest.hex()))
                self._update(entry_id, "ok")
            elif touched:  # rewritten since the last save: work in progress
                self.emit(
                    self.result(path, "unsaved", UNSAVED.format("changed", self.target), size=size)
                )
            else:
                message = f"SHA-256 is {actual.hex()}, catalog says {digest.hex()}"
                self.emit(self.result(path, "modified", message, size=size))
                self._update(entry_id, "modified")
        self._advance(size - read[0])

    def _update(self, entry_id: int, state: str) -> None:
        self.updates.append((entry_id, state))
        if len(self.updates) >= PAGE:
            self._write(self.updates)
            self.updates = []

    def _write(self, updates: list[tuple[int, str]]) -> None:
        with self.keep.catalog.write() as session:
            fixity.record(session, updates, self.verified_at)

    def _check_manifest(self, expected: str | None) -> None:
        """Compare the manifest on disk with the one the catalog describes (*expected*:
        its SHA-256, None for no entries) by hashing both as streams."""
        path = self.root / MANIFEST_NAME
        try:
            actual = hash_file(str(path)).sha256.hex()
        except FileNotFoundError:
            if expected is not None:
                self.manifest_state = "missing"
                message = "manifest missing; run 'labkeep manifest'"
                self.emit(self.result(MANIFEST_NAME, "missing", message), count=False)
            return
        except (OSError, LabkeepError) as exc:
            actual = f"unreadable: {exc}"
        empty = hashlib.sha256(b"").hexdigest()
        if actual != (expected or empty):
            self.manifest_state = "modified"
            message = "manifest does not match the catalog; run 'labkeep manifest'"
            self.emit(self.result(MANIFEST_NAME, "modified", message), count=False)

    def _submit(self, pool: ThreadPoolExecutor, path: str) -> tuple[Future[Hashed], list[int]]:
        """Hash one file on the pool; the progress bar moves as its bytes are read (the
        list holds how many were shown)."""
        read = [0]
        progress = self.progress

        def on_bytes(nbytes: int) -> None:
            read[0] += nbytes
            if progress is not None:
                progress.advance(0, nbytes)

        return pool.submit(hash_file, str(self.root / path), on_bytes=on_bytes), read

    def _advance(self, size: int) -> None:
        """One file done; *size*: its bytes not yet shown."""
        if self.progress is not None:
            self.progress.advance(1, max(0, size))

    def _record(self, updates: list[tuple[int, str]]) -> Event:
        with self.keep.catalog.write() as session:
            fixity.record(session, updates, self.verified_at)
            details: dict[str, object] = {s: self.counts.get(s, 0) for s in STATES}
            details["manifest"] = self.manifest_state
            return append_event(session, self.keep.actor, "verify", self.target, details)


def verification(keep: Keep, address: str) -> dict[str, object]:
    """A dataset's fixity at a glance: the last run's counts, and files never verified.

    Read from the last verify event and the head version (verify always covers a whole
    dataset), so it costs the same for ten files as for ten million.
    """
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        return verification_of(session, dataset, addr.dataset_address)


def verification_of(session: Session, dataset: Dataset, address: str) -> dict[str, object]:
    """:func:`verification` for a dataset the caller already found (and may read)."""
    import json

    from labkeep.ops.projects import _head_counts

    n_files = _head_counts(session, [dataset.id]).get(dataset.id, (0, 0))[0]
    last = session.execute(
        select(Event.at, Event.details)
        .where(Event.action == "verify", Event.target == address)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
    result: dict[str, Any] = json.loads(last[1]) if last else {}
    checked = sum(result.get(s, 0) for s in ("ok", "modified", "missing", "unsaved"))
    counts = {s: int(result.get(s, 0)) for s in ("ok", "modified", "missing", "extra")}
    counts["never"] = max(0, n_files - checked)
    return {
        "dataset": address,
        "files": {k: v for k, v in counts.items() if v},
        "last_verify": isoformat(last[0]) if last else None,
        "last_result": result or None,
        "ok": not (counts["modified"] or counts["missing"] or counts["extra"])
        and result.get("manifest", "ok") == "ok",
    }
