"""The ``buffer-import`` job: one acquisition folder of a watched buffer into its dataset.

Queued by the watcher (:mod:`labkeep.ops.watch`) acting as the folder's owner, so the
ingest (dataset, version, event) is the owner's. The job re-lists the folder before and
after the ingest: a folder that changed before the ingest goes back to ``waiting`` (its
new listing gets its own job once ready); one that changed during the ingest becomes
``changed`` and the job fails with the reason (the dataset holds the files as they were
read; nothing is sealed). The folder becomes ``imported`` in the transaction that
records the job as done.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from labkeep.catalog import BufferFolder, Dataset, Project, Watch
from labkeep.clock import utcnow
from labkeep.errors import NotFound, UsageError
from labkeep.ops._buffer_scan import Listing, list_folder, parse_ready
from labkeep.ops.audit import append_event
from labkeep.ops.jobs import JobContext, JobProblems, handler

if TYPE_CHECKING:
    from labkeep.keep import Keep

FIELDS = ("watch", "folder", "fingerprint", "dataset")


def _load(keep: Keep, watch: str, folder: str) -> tuple[Watch | None, BufferFolder | None]:
    with keep.catalog.read() as session:
        w = session.execute(select(Watch).where(Watch.name == watch)).scalar_one_or_none()
        row = None
        if w is not None:
            row = session.execute(
                select(BufferFolder).where(
                    BufferFolder.watch_id == w.id, BufferFolder.folder == folder
                )
            ).scalar_one_or_none()
        session.expunge_all()
    return w, row


def _authorize(keep: Keep, args: dict[str, Any]) -> str:
    """Only the folder's owner (or a site admin) queues its import."""
    from labkeep.ops.job_kinds import _dataset_target

    if not all(isinstance(args.get(k), str) for k in FIELDS):
        raise UsageError("a buffer-import job needs " + ", ".join(FIELDS))
    _, row = _load(keep, args["watch"], args["folder"])
    p = keep.principal
    if row is None or (row.owner != p.name and not p.site_admin):
        raise NotFound(f"no buffer folder {args['folder']!r} of yours in {args['watch']}")
    return _dataset_target(keep, args["dataset"], "dataset.ingest")


def _set(keep: Keep, row: BufferFolder, state: str, **values: Any) -> bool:
    with keep.catalog.write() as session:
        done = session.execute(
            update(BufferFolder)
            .where(
                BufferFolder.id == row.id,
                BufferFolder.state == "queued",
                BufferFolder.fingerprint == row.fingerprint,
            )
            .values(state=state, **values)
            .execution_options(synchronize_session=False)
        )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def same_filesystem(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


@handler(
    "buffer-import",
    authorize=_authorize,
    describe=lambda a: f"{a.get('watch')}: {a.get('folder')} -> {a.get('dataset')}",
    max_attempts=3,
)
def buffer_import_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    keep = ctx.keep
    w, row = _load(keep, a["watch"], a["folder"])
    if w is None or row is None:
        return {"status": "notneeded", "message": "the watch or the folder was forgotten"}
    if row.state != "queued" or row.fingerprint != a["fingerprint"]:
        return {"status": "notneeded", "message": f"the folder is {row.state} now"}
    rule = parse_ready(w.ready)
    marker = rule.marker if rule.kind == "marker" else None
    source = os.path.join(w.path, row.folder)
    before = list_folder(source, marker)
    if before is None:
        _set(keep, row, "vanished", message="folder gone before its import; nothing imported")
        return {"status": "notneeded", "message": "the folder is gone"}
    if before.fingerprint != a["fingerprint"]:
        _set(
            keep,
            row,
            "waiting",
            fingerprint=before.fingerprint,
            last_change=utcnow(),
            files=len(before.files),
            bytes=before.nbytes,
            job_id=None,
            message="changed after its import was queued: waiting again",
        )
        return {"status": "notneeded", "message": "changed before the import: waiting again"}
    link = bool(w.link) and same_filesystem(source, keep.tree.base)
    project, dataset = a["dataset"].split("/", 1)
    result: dict[str, Any] = {
        "watch": w.name,
        "folder": row.folder,
        "dataset": a["dataset"],
        "files": len(before.files),
        "bytes": before.nbytes,
        "linked": link,
        "link_asked": bool(w.link),
    }
    if _sealed_holding(keep, project, dataset, source, before):
        result["resumed"] = "already imported and sealed"  # a retry after the seal
    else:
        report = keep.ingest(
            source,
            a["dataset"],
            link=link,
            verify_sources=True,  # the buffer's files are deleted later: bytes, not times
            kind="session",
            message=f"import from buffer {w.name}: {row.folder}",
            progress=ctx.as_progress(),
            keep_results=False,
            exclude=[marker] if marker else [],
        )
        result.update(report.counts(), version=report.info.get("version"))
        after = list_folder(source, marker)
        if after is None or after.fingerprint != before.fingerprint:
            why = (
                "files changed while they were imported: the dataset holds them as they "
                "were read, not sealed; check the acquisition, then 'labkeep watch retry "
                f"{w.name} {row.folder}'"
            )
            _set(keep, row, "changed", message=why)
            with keep.catalog.write() as session:
                append_event(
                    session,
                    keep.actor,
                    "buffer.changed",
                    a["dataset"],
                    {"watch": w.name, "folder": row.folder, "during": "import"},
                )
            raise JobProblems(why, result)
        if report.failed:
            problems = [r for r in report.results if r.status not in ("ok", "notneeded")]
            first = problems[0] if problems else None
            why = f"{report.problems} file(s) not imported" + (
                f"; first: {first.path}: {first.message}" if first else ""
            )
            _set(keep, row, "failed", message=why)
            raise JobProblems(why, result)
    if w.seal:
        result["sealed"] = keep.seal(a["dataset"]).to_dict().get("version")
    with keep.catalog.write() as session:
        session.execute(
            update(BufferFolder)
            .where(
                BufferFolder.id == row.id,
                BufferFolder.state == "queued",
                BufferFolder.fingerprint == row.fingerprint,
            )
            .values(
                state="imported",
                imported_at=utcnow(),
                linked=link,
                job_id=ctx.claim.id,
                message=""
                if link or not w.link
                else "copied: buffer and keep are on different filesystems",
            )
            .execution_options(synchronize_session=False)
        )
        append_event(
            session,
            keep.actor,
            "buffer.import",
            a["dataset"],
            {k: result[k] for k in ("watch", "folder", "files", "bytes", "linked")},
        )
        ctx.finish(session, result)
    return result


def _sealed_holding(keep: Keep, project: str, dataset: str, source: str, listing: Listing) -> bool:
    """The dataset is sealed and holds every listed file with the same bytes (an earlier
    attempt of this job imported and sealed it, then lost its lease before recording
    that). Sizes and mtimes are not enough: the buffer's files are deleted later, and
    another acquisition may have the same names, sizes and times."""
    from labkeep.catalog import Entry
    from labkeep.integrity.hashing import hash_file
    from labkeep.ops.buffers import missing_from_dataset

    with keep.catalog.read() as session:
        ds = session.execute(
            select(Dataset)
            .join(Project, Project.id == Dataset.project_id)
            .where(Project.name == project, Dataset.name == dataset)
        ).scalar_one_or_none()
        if not (ds and ds.sealed and not missing_from_dataset(session, ds.id, listing)):
            return False
        dataset_id = ds.id
    for start in range(0, len(listing.files), 500):  # one query per 500 files
        rels = [rel for rel, _size, _mtime in listing.files[start : start + 500]]
        with keep.catalog.read() as session:
            digests = dict(
                session.execute(
                    select(Entry.path, Entry.sha256).where(
                        Entry.dataset_id == dataset_id,
                        Entry.valid_to.is_(None),
                        Entry.path.in_([f"raw/{rel}" for rel in rels]),
                    )
                ).tuples()
            )
        for rel in rels:
            digest = digests.get(f"raw/{rel}")
            if digest is None or hash_file(os.path.join(source, rel)).sha256 != bytes(digest):
                return False
    return True
