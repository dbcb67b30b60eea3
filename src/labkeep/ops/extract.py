"""Metadata read from files, and thumbnails: the extraction job and what reads its records.

After ingest or save commits a version, an ``extract`` job is queued in the same
transaction (``[extract] after_ingest``); it never runs inside the ingest. The job reads
each file of the version that has no record yet through the store seam
(:func:`labkeep.ops.content.open_content`: the tree's copy, else a good replica, spooled
to a temporary file), hands it to the plugins in a child process
(:class:`labkeep.extract.runner.Isolated`), and writes one ``extractions`` row per entry
(replacing an older one: running it again changes nothing but the time). Thumbnails are
written by the child into ``[extract] cache``/previews/ab/cd/SHA256.png, keyed by
content, before the row that says ``preview = ok`` (write order: content before the row).

Readers: :func:`file_metadata` (access as for reading the file), :func:`search_fields`
(flat text fields for a search index), :func:`preview` (the thumbnail, for the web).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select

from labkeep.catalog import Dataset, Entry, Extraction, Project
from labkeep.clock import isoformat, utcnow
from labkeep.errors import NotFound, UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.jobs import JobContext, handler
from labkeep.ops.listing import entries_at
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

#: rows written per transaction
BATCH = 50
THUMB_SIDE = 256


# -- where thumbnails live ------------------------------------------------------------------
def preview_path(keep: Keep, sha256_hex: str) -> Path:
    """The cached thumbnail of a content (whether or not it exists)."""
    h = sha256_hex
    return keep.config.cache_path / "previews" / h[:2] / h[2:4] / f"{h}.png"


# -- records --------------------------------------------------------------------------------
@dataclass
class FileMetadata:
    """What labkeep read from one file (``status``: ok, error, or pending: not yet read)."""

    dataset: str
    path: str
    version: int
    sha256: str
    size: int
    status: str
    extractor: str = ""
    extractor_version: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    preview: str = "none"
    extracted_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "path": self.path,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status,
            "extractor": self.extractor,
            "extractor_version": self.extractor_version,
            "fields": self.fields,
            "search": search_text_fields(self.fields),
            "error": self.error,
            "preview": self.preview,
            "extracted_at": isoformat(self.extracted_at) if self.extracted_at else None,
        }


def search_text_fields(fields: dict[str, Any]) -> dict[str, str]:
    from labkeep.extract.model import search_fields as flat

    return flat(fields)


# -- queueing -------------------------------------------------------------------------------
def queue_extraction(
    keep: Keep, session: Session, project: str, dataset: str, version: int
) -> int | None:
    """Queue the extraction of a committed version in *session* (the commit's own
    transaction: the job exists exactly when the version does). None when turned off."""
    if not keep.config.extract.after_ingest:
        return None
    from labkeep.ops.jobs import enqueue

    target = f"{project}/{dataset}"
    job = enqueue(
        keep,
        "extract",
        {"dataset": target, "version": version},
        target=target,
        unique_key=f"extract:{target}@{version}",
        priority=-5,  # after the work people wait for
        session=session,
        system=True,
    )
    return job.id


def _authorize(keep: Keep, args: dict[str, Any]) -> str:
    if not isinstance(args.get("dataset"), str):
        raise UsageError("an extract job needs 'dataset' (P/D or P/D/PATH)")
    addr = parse_address(args["dataset"], need_dataset=True)
    with keep.catalog.read() as session:
        find_dataset(keep, session, addr.project, str(addr.dataset), "dataset.verify")
    return addr.dataset_address


@handler(
    "extract",
    authorize=_authorize,
    describe=lambda a: (
        f"metadata of {a.get('dataset')}" + (f"@{a['version']}" if a.get("version") else "")
    ),
)
def extract_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    address = str(a["dataset"])
    if a.get("version") and "@" not in address:
        address = f"{address}@{int(a['version'])}"
    report = extract(
        ctx.keep,
        address,
        force=bool(a.get("force", False)),
        progress=ctx.as_progress(),
        keep_results=False,
    )
    summary = report.summary()
    summary["problems"] = [r.to_dict() for r in report.results if r.status == "error"][:20]
    return summary


# -- extracting -----------------------------------------------------------------------------
#: rows of the to-do list read per query (memory stays flat for any dataset size)
PAGE = 1000

Row = tuple[int, str, int, bytes, int]


@dataclass
class _Todo:
    project: str
    dataset: str
    target: str
    files: int
    bytes: int
    query: Any

    def pages(self, keep: Keep) -> Iterator[list[Row]]:
        """The entries to read in path order, a page at a time (keyset paging)."""
        after: str | None = None
        while True:
            query = self.query if after is None else self.query.where(Entry.path > after)
            with keep.catalog.read() as session:
                rows = [
                    (int(i), str(p), int(s), bytes(h), int(m))
                    for i, p, s, h, m in session.execute(query.limit(PAGE))
                ]
            if not rows:
                return
            yield rows
            after = rows[-1][1]


def _todo(keep: Keep, address: str, force: bool) -> _Todo:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(
            keep, session, addr.project, addr.dataset, "dataset.verify", version=addr.version
        )
        where = [entries_at(dataset.id, addr.version)]
        if addr.path:
            folder = addr.path.rstrip("/")
            where.append((Entry.path == folder) | Entry.path.startswith(folder + "/"))
        if not force:
            done = select(Extraction.entry_id).where(Extraction.entry_id == Entry.id)
            where.append(~done.exists())
        files, size = session.execute(
            select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(*where)
        ).one()
    query = (
        select(Entry.id, Entry.path, Entry.size, Entry.sha256, Entry.mtime_ns)
        .where(*where)
        .order_by(Entry.path)
    )
    return _Todo(addr.project, addr.dataset, addr.dataset_address, int(files), int(size), query)


@contextlib.contextmanager
def _local_copy(
    keep: Keep, project: str, dataset: str, path: str, size: int, sha: bytes, mtime: int
) -> Iterator[str]:
    """A local file holding the entry's content: the tree's copy when it is intact
    (quick check), else a good replica spooled to a temporary file."""
    from labkeep.ops.content import open_content, tree_copy

    local = keep.tree.file_path(project, dataset, path)
    if tree_copy(local, size, mtime):
        yield str(local)
        return
    handle = open_content(keep, local, size, sha, mtime)
    with handle, tempfile.NamedTemporaryFile(prefix="labkeep-extract-", suffix=".tmp") as tmp:
        shutil.copyfileobj(handle, tmp, 1 << 20)
        tmp.flush()
        yield tmp.name


def extract(
    keep: Keep,
    address: str,
    *,
    force: bool = False,
    progress: Any = None,
    keep_results: bool = True,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Read the metadata (and make the thumbnails) of the files of
    ``PROJECT/DATASET[/PATH][@VERSION]`` that have no record yet (*force*: all of them).

    One result per file: ``ok`` (read), ``error`` (the reader raised, crashed or hung;
    recorded too, so the job does not try it again; *force* does). Needs the right to
    verify the dataset; the job queued after ingest acts as the keep itself.
    """
    from labkeep.extract.runner import Isolated

    todo = _todo(keep, address, force)
    project, dataset, target = todo.project, todo.dataset, todo.target
    report = Report("extract", keep_all=keep_results)
    report.info.update(dataset=target)
    if progress is not None:
        progress.start(todo.files, todo.bytes)
    settings = keep.config.extract
    pending: list[dict[str, Any]] = []
    with Isolated(settings.plugins, timeout=settings.timeout_seconds) as child:
        for entry_id, path, size, sha, mtime in (r for page in todo.pages(keep) for r in page):
            thumb = str(preview_path(keep, sha.hex())) if settings.previews else None
            try:
                with _local_copy(keep, project, dataset, path, size, sha, mtime) as local:
                    answer = child.extract(local, path.rsplit("/", 1)[-1], thumb=thumb,
                                           max_side=THUMB_SIDE)  # fmt: skip
            except NotFound as exc:
                answer = {"status": "error", "error": exc.message, "fields": {}}
            pending.append(_row(entry_id, sha, answer))
            result = Result(
                "extract",
                "ok" if answer.get("status") == "ok" else "error",
                path=path,
                dataset=target,
                size=size,
                message=answer.get("error") or None,
                extra={"extractor": answer.get("extractor", "generic")},
            )
            report.add(result)
            if on_result is not None:
                on_result(result)
            if len(pending) >= BATCH:
                _write(keep, pending)
                pending = []
            if progress is not None:
                progress.advance(1, size)
        if pending:
            _write(keep, pending)
        report.info["reader_restarts"] = child.restarts
        if child.broken:
            report.info["plugins_not_loaded"] = child.broken
    return report


def _row(entry_id: int, sha: bytes, answer: dict[str, Any]) -> dict[str, Any]:
    fields = answer.get("fields") or {}
    return {
        "entry_id": entry_id,
        "sha256": sha,
        "extractor": str(answer.get("extractor", "generic"))[:64],
        "extractor_version": str(answer.get("version", ""))[:32],
        "status": "ok" if answer.get("status") == "ok" else "error",
        "fields": json.dumps(fields, ensure_ascii=False, default=str),
        "error": str(answer.get("error", "")),
        "preview": str(answer.get("preview", "none")),
        "extracted_at": utcnow(),
    }


def _write(keep: Keep, rows: list[dict[str, Any]]) -> None:
    """Replace the records of these entries and their fields in the search index (one
    transaction: idempotent)."""
    from labkeep.extract.model import search_fields as flat
    from labkeep.ops.search_index import index_file_fields

    ids = [r["entry_id"] for r in rows]
    with keep.catalog.write() as session:
        session.execute(delete(Extraction).where(Extraction.entry_id.in_(ids)))
        session.execute(insert(Extraction), rows)
        current = {
            int(entry_id): (int(dataset_id), str(path))
            for entry_id, dataset_id, path in session.execute(
                select(Entry.id, Entry.dataset_id, Entry.path).where(
                    Entry.id.in_(ids), Entry.valid_to.is_(None)
                )
            )
        }
        for row in rows:
            where = current.get(int(row["entry_id"]))
            if where is not None:  # an older version's file is not in the index
                fields = flat(json.loads(row["fields"]))
                index_file_fields(session, dataset_id=where[0], path=where[1], fields=fields)


# -- reading records ------------------------------------------------------------------------
def _entry(keep: Keep, address: str) -> tuple[Any, int, bool]:
    """(FileInfo, entry id, dataset public) of a file the principal may read."""
    info = keep.stat_file(address)
    addr = parse_address(address, need_dataset=True)
    with keep.catalog.read() as session:
        row = session.execute(
            select(Entry.id, Dataset.public)
            .join(Dataset, Dataset.id == Entry.dataset_id)
            .join(Project, Project.id == Dataset.project_id)
            .where(
                Project.name == addr.project,
                Dataset.name == addr.dataset,
                entries_at(Dataset.id, addr.version),  # type: ignore[arg-type]
                Entry.path == info.path,
            )
        ).first()
    if row is None:  # (removed between the two reads)
        raise NotFound(f"no file {info.path!r} in {info.dataset}")
    return info, int(row[0]), bool(row[1])


def file_metadata(keep: Keep, address: str) -> FileMetadata:
    """The metadata read from ``PROJECT/DATASET/PATH[@VERSION]`` (status ``pending``
    until the extraction job has read it). NotFound for what the caller may not read."""
    info, entry_id, _public = _entry(keep, address)
    with keep.catalog.read() as session:
        record = session.execute(
            select(Extraction).where(Extraction.entry_id == entry_id)
        ).scalar_one_or_none()
        out = FileMetadata(info.dataset, info.path, info.version, info.sha256, info.size, "pending")
        if record is not None:
            out.status = record.status
            out.extractor = record.extractor
            out.extractor_version = record.extractor_version
            out.fields = json.loads(record.fields or "{}")
            out.error = record.error
            out.preview = record.preview
            out.extracted_at = record.extracted_at
    return out


def search_fields(keep: Keep, address: str) -> dict[str, str]:
    """Flat text fields of one file for search (``objective="63x"``, ``date=...``,
    ``channels="DAPI,GFP"``, ``instrument``, ``format`` ...); empty until extracted."""
    return search_text_fields(file_metadata(keep, address).fields)


def iter_search_fields(keep: Keep, dataset_id: int | None = None) -> Iterator[
    tuple[int, dict[str, str]]
]:  # fmt: skip
    """(entry id, flat fields) of every extraction record, for building a search index
    (no access check: the index checks access when it is queried)."""
    query = select(Extraction.entry_id, Extraction.fields).order_by(Extraction.entry_id)
    if dataset_id is not None:
        query = query.join(Entry, Entry.id == Extraction.entry_id).where(
            Entry.dataset_id == dataset_id
        )
    with keep.catalog.read() as session:
        for entry_id, text in session.execute(query).yield_per(1000):
            yield int(entry_id), search_text_fields(json.loads(text or "{}"))


#: how many files, in path order, a dataset page's gallery looks through for thumbnails
GALLERY_SCAN = 5000


def dataset_previews(keep: Keep, address: str, *, limit: int = 12) -> dict[str, str]:
    """``path -> sha256`` of the first *limit* files of ``P/D[@V]`` that have a
    thumbnail, among its first :data:`GALLERY_SCAN` files in path order, for a caller who
    may read it: a dataset page's gallery. Bounded, so that a dataset of 10^6 files none
    of which is an image costs a page no more than one of a thousand."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(
            keep, session, addr.project, addr.dataset, "dataset.read", version=addr.version
        )
        first = (
            select(Entry.id, Entry.path, Entry.sha256)
            .where(entries_at(dataset.id, addr.version))
            .order_by(Entry.path)
            .limit(GALLERY_SCAN)
            .subquery()
        )
        rows = session.execute(
            select(first.c.path, first.c.sha256)
            .join(Extraction, Extraction.entry_id == first.c.id)
            .where(Extraction.preview == "ok")
            .order_by(first.c.path)
            .limit(limit)
        ).all()
    return {str(p): bytes(h).hex() for p, h in rows}


@dataclass
class Preview:
    path: Path
    sha256: str
    public: bool
    #: the ETag: the content's SHA-256 and the thumbnail's size (a new size, a new tag)
    etag: str


def preview(keep: Keep, address: str) -> Preview:
    """The thumbnail of a file the principal may read (NotFound otherwise, and when none
    was made)."""
    info, _entry_id, public = _entry(keep, address)
    path = preview_path(keep, info.sha256)
    if not os.path.isfile(path):
        raise NotFound(
            f"no preview of {info.dataset}/{info.path}",
            hint="previews are made for images by the extraction job after ingest",
        )
    return Preview(path, info.sha256, public, f'"{info.sha256}-{THUMB_SIDE}"')
