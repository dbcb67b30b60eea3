"""Listing: projects, datasets, a dataset's files at any version, and its versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from labkeep.catalog import Entry, Version
from labkeep.clock import isoformat
from labkeep.errors import NotFound
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.projects import list_datasets, list_projects

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep


@dataclass
class Listing:
    """What ``ls`` shows: ``kind`` is projects, datasets or entries."""

    kind: str
    address: str | None
    items: list[dict[str, Any]] = field(default_factory=list)
    version: int | None = None


def entries_at(dataset_id: int, version: int | None) -> Any:
    """The WHERE clause for a dataset's entries at *version* (None: the current state)."""
    if version is None:
        return and_(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
    return and_(
        Entry.dataset_id == dataset_id,
        Entry.valid_from <= version,
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
        query = select(
            Entry.path,
            Entry.size,
            Entry.sha256,
            Entry.mtime_ns,
            Entry.verified_at,
            Entry.verify_status,
        ).where(entries_at(dataset.id, version))
        if addr.path:
            # a file, or a folder: the range [PATH/, PATH0) ('0' follows '/' in byte
            # order), which the (dataset, path) index answers without a scan
            query = query.where(
                or_(
                    Entry.path == addr.path,
                    and_(Entry.path >= addr.path + "/", Entry.path < addr.path + "0"),
                )
            )
        if after is not None:
            query = query.where(Entry.path > after)
        query = query.order_by(Entry.path)
        if limit:
            query = query.limit(limit)
        items = [
            {
                "path": path,
                "size": size,
                "sha256": digest.hex(),
                "mtime_ns": mtime,
                "verified_at": isoformat(verified),
                "verify_status": vstatus,
            }
            for path, size, digest, mtime, verified, vstatus in session.execute(query)
        ]
        if addr.path and not items:
            raise NotFound(f"no file or folder {addr.path!r} in {addr.dataset_address}")
        return Listing(
            "entries", str(addr), items, version if version is not None else dataset.head_version
        )


def versions(keep: Keep, address: str) -> list[dict[str, Any]]:
    """The committed versions of a dataset, oldest first."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        rows = session.execute(
            select(Version)
            .where(Version.dataset_id == dataset.id, Version.state == "committed")
            .order_by(Version.number)
        ).scalars()
        return [
            {
                "dataset": addr.dataset_address,
                "version": v.number,
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
