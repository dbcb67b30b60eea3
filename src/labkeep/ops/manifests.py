"""Writing a dataset's ``MANIFEST.sha256`` from the catalog."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from labkeep.catalog import Entry
from labkeep.integrity.manifest import format_manifest
from labkeep.names import parse_address

if TYPE_CHECKING:
    from labkeep.keep import Keep


def manifest_text(session: Session, dataset_id: int) -> str:
    """The manifest of a dataset's current entries, exactly as sha256sum writes it."""
    rows = session.execute(
        select(Entry.path, Entry.sha256).where(
            Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
        )
    )
    return format_manifest((path, digest.hex()) for path, digest in rows)


def store_manifest(
    keep: Keep, session: Session, project: str, dataset: str, dataset_id: int
) -> str:
    """Rewrite the manifest atomically; return the SHA-256 of its bytes."""
    data = manifest_text(session, dataset_id)
    keep.tree.write_manifest(project, dataset, data)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def write_manifest(keep: Keep, address: str) -> str:
    """Rewrite ``MANIFEST.sha256`` of *address* from the catalog; return its SHA-256."""
    from labkeep.ops._access import find_dataset

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.edit")
        return store_manifest(keep, session, addr.project, addr.dataset, dataset.id)


def read_manifest(keep: Keep, address: str) -> str:
    """The manifest text of a dataset's current state (for those who may download it)."""
    from labkeep.ops._access import find_dataset

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.download")
        return manifest_text(session, dataset.id)
