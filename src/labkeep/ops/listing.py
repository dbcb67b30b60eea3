"""Listing: projects, datasets, a dataset's files at any version, and its versions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from labkeep.catalog import Entry, TreeCheck, Version
from labkeep.clock import isoformat
from labkeep.errors import NotFound, UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.projects import DatasetInfo, list_datasets, list_projects
from labkeep.results import EntryStream, Listing

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep


def entries_at(dataset_id: int, version: int | None) -> Any:
    """The WHERE clause for a dataset's entries at *version* (None: the current state).

    Written so that the (dataset, path) index serves it: ``valid_from + 0`` keeps
    SQLite's planner (which has no statistics) from scanning the (dataset, valid_from)
    index instead, which holds every row of the dataset up to that version.
    """
    if version is None:
        return and_(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
    return and_(
        Entry.dataset_id == dataset_id,
        (Entry.valid_from + 0) <= version,
        or_(Entry.valid_to.is_(None), Entry.valid_to > version),
    )


def _check_version(session: Session, dataset_id: int, address: str, number: int) -> None:
    state = session.execute(
        select(Version.state).where(Version.dataset_id == dataset_id, Version.number == number)
    ).scalar_one_or_none()
    if state != "committed":
        raise NotFound(
            f"no version {number} of {address}", hint=f"see 'labkeep versions {address}'"
        )


def ls(
    keep: Keep, address: str | None = None, *, limit: int | None = None, after: str | None = None
) -> Listing:
    """List projects (no address), a project's datasets, or a dataset's files.

    Files are listed in byte order of their paths; pass the last path of a page as
    *after* to get the next page (keyset pagination: fast on any page).
    """
    if not address:
        return Listing("projects", None, [p.to_dict() for p in list_projects(keep)])
    addr = parse_address(address)
    if addr.dataset is None:
        return Listing(
            "datasets", addr.project, [d.to_dict() for d in list_datasets(keep, addr.project)]
        )
    with keep.catalog.read() as session:
        _, dataset = find_dataset(
            keep,
            session,
            addr.project,
            addr.dataset,
            "dataset.read",
            version=addr.version,
            path=addr.path,
        )
        version = addr.version
        if version is not None:
            _check_version(session, dataset.id, addr.dataset_address, version)
        items = entries_page(session, dataset.id, version, addr.path, after, limit)
        if addr.path and not items and after is None:
            raise NotFound(f"no file or folder {addr.path!r} in {addr.dataset_address}")
        return Listing(
            "entries", str(addr), items, version if version is not None else dataset.head_version
        )


def entries_page(
    session: Session,
    dataset_id: int,
    version: int | None,
    path: str | None,
    after: str | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """One page of a dataset's files (below *path*), in byte order of their paths.

    A *path* naming a file is one index lookup; a folder is the range [PATH/, PATH0)
    ('0' follows '/' in byte order) of the (dataset, path) index. (One query with
    ``path = P OR path BETWEEN ...`` made SQLite scan the whole dataset.)
    """
    columns = (
        Entry.path,
        Entry.size,
        Entry.sha256,
        Entry.mtime_ns,
        TreeCheck.checked_at,
        TreeCheck.status,
    )

    def select_() -> Any:
        return select(*columns).outerjoin(TreeCheck, TreeCheck.entry_id == Entry.id)

    where = entries_at(dataset_id, version)
    if path:
        if after is None or path > after:
            exact = session.execute(select_().where(where, Entry.path == path)).all()
            if exact:  # a file: nothing else can be below it
                return [_entry(*row) for row in exact]
        where = and_(where, Entry.path >= path + "/", Entry.path < path + "0")
    query = select_().where(where)
    if after is not None:
        query = query.where(Entry.path > after)
    query = query.order_by(Entry.path)
    if limit:
        query = query.limit(limit)
    return [_entry(*row) for row in session.execute(query)]


def _entry(
    path: str, size: int, digest: bytes, mtime: int, verified: Any, status: str | None
) -> dict[str, Any]:
    return {
        "path": path,
        "size": size,
        "sha256": digest.hex(),
        "mtime_ns": mtime,
        "verified_at": isoformat(verified),
        "verify_status": status,
    }


#: rows fetched per query when a listing is streamed
STREAM_PAGE = 5000


def stream_entries(
    keep: Keep, address: str, *, after: str | None = None, page_size: int = STREAM_PAGE
) -> EntryStream:
    """List a dataset's files (or a folder's) without holding them: memory is one page
    however many files there are, and the first page is read (and access checked, so
    errors come before any output) before this returns."""
    first = ls(keep, address, limit=page_size, after=after)
    if first.kind != "entries":
        raise UsageError(f"{address!r} is not a dataset", hint="use PROJECT/DATASET[/PATH]")

    def pages() -> Iterator[dict[str, Any]]:
        page = first.items
        while True:
            yield from page
            if len(page) < page_size:
                return
            page = ls(keep, address, limit=page_size, after=page[-1]["path"]).items

    return EntryStream(str(first.address), first.version, pages())


def versions(keep: Keep, address: str) -> list[dict[str, Any]]:
    """The committed versions of a dataset, oldest first."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        return version_rows(session, dataset.id, addr.dataset_address)


def version_rows(
    session: Session, dataset_id: int, address: str, newest: int | None = None
) -> list[dict[str, Any]]:
    """Committed versions, oldest first (only the *newest* N of them if given)."""
    query = select(Version).where(Version.dataset_id == dataset_id, Version.state == "committed")
    if newest is not None:
        query = query.order_by(Version.number.desc()).limit(newest)
    rows = list(session.execute(query).scalars())
    rows.sort(key=lambda v: v.number)
    return [
        {
            "dataset": address,
            "version": v.number,
            "run": v.run_id,
            "kind": v.kind,
            "author": v.author,
            "message": v.message,
            "committed_at": isoformat(v.committed_at),
            "files": v.n_files,
            "bytes": v.n_bytes,
            "manifest_sha256": v.manifest_sha256,
        }
        for v in rows
    ]


@dataclass
class DatasetView:
    """Everything a dataset's landing page shows, read in one transaction."""

    info: DatasetInfo
    #: the version shown (the head unless one was asked for)
    version: int
    items: list[dict[str, Any]]
    #: the newest versions (all of them when there are few)
    versions: list[dict[str, Any]]
    n_versions: int
    verification: dict[str, object]
    #: the dataset's share links, for those who may manage them
    shares: list[Any] | None
    #: where its content lives, store by store, against its copy policy
    copies: dict[str, Any] | None = None


def dataset_view(
    keep: Keep,
    address: str,
    *,
    version: int | None = None,
    after: str | None = None,
    limit: int = 200,
    newest_versions: int = 20,
) -> DatasetView:
    """A dataset's landing page: its metadata, one page of its files, its newest versions,
    its verification and (for who manages it) its share links. One access check and one
    read transaction, whatever the dataset's size."""
    from labkeep.access import allowed
    from labkeep.ops._access import project_resource
    from labkeep.ops.projects import _dataset_info
    from labkeep.ops.shares import dataset_shares
    from labkeep.ops.verify import verification_of
    from labkeep.ops.whereis import dataset_copies

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    target = addr.dataset_address
    with keep.catalog.read() as session:
        project, dataset = find_dataset(
            keep, session, addr.project, addr.dataset, "dataset.read", version=version
        )
        if version is not None:
            _check_version(session, dataset.id, target, version)
        n_versions = session.execute(
            select(func.count(Version.id)).where(
                Version.dataset_id == dataset.id, Version.state == "committed"
            )
        ).scalar_one()
        resource = project_resource(session, project, dataset)
        return DatasetView(
            info=_dataset_info(session, project, dataset),
            version=version if version is not None else dataset.head_version,
            items=entries_page(session, dataset.id, version, None, after, limit),
            versions=version_rows(session, dataset.id, target, newest_versions),
            n_versions=int(n_versions),
            verification=verification_of(session, dataset, target),
            shares=(
                dataset_shares(session, dataset.id)
                if allowed(keep.principal, "share.manage", resource)
                else None
            ),
            copies=dataset_copies(session, project, dataset)
            if keep.principal.kind == "user"
            else None,
        )
