"""A dataset's ``MANIFEST.sha256``, streamed from the catalog.

The catalog returns the current entries ``ORDER BY path``; the path column compares
bytes on both engines (SQLite's BINARY collation, PostgreSQL's "C"), which is exactly
the manifest's order (:func:`labkeep.integrity.manifest.sort_key`). So the manifest is
written, hashed, compared and served line by line as the rows arrive: memory stays flat
for ten million files. :func:`labkeep.integrity.manifest.format_lines` checks the order as
it goes, so a database with another collation fails loudly instead of writing a manifest
in the wrong order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from labkeep.catalog import Entry
from labkeep.errors import CatalogError
from labkeep.integrity.manifest import OutOfOrder, format_lines
from labkeep.names import parse_address

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: rows fetched from the catalog at a time, and bytes per chunk handed on
ROWS = 5000
CHUNK = 1 << 16


def manifest_lines(session: Session, dataset_id: int) -> Iterator[bytes]:
    """The lines of a dataset's manifest (current entries), in order, as UTF-8."""
    rows = session.execute(
        select(Entry.path, Entry.sha256)
        .where(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
        .order_by(Entry.path)
        .execution_options(yield_per=ROWS)
    )
    try:
        for line in format_lines((path, digest.hex()) for path, digest in rows):
            yield line.encode("utf-8")
    except OutOfOrder as exc:
        raise CatalogError(
            f"the catalog does not return paths in byte order ({exc})",
            hint="the entries.path column must use a byte-order collation "
            "(PostgreSQL: COLLATE \"C\"); run 'labkeep upgrade' or fix the column",
        ) from None
    finally:
        rows.close()


def _chunks(lines: Iterator[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    held = 0
    for line in lines:
        buffer.append(line)
        held += len(line)
        if held >= CHUNK:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


def manifest_digest(session: Session, dataset_id: int) -> str:
    """SHA-256 (hex) of the manifest the catalog describes, without holding it whole."""
    digest = hashlib.sha256()
    for chunk in _chunks(manifest_lines(session, dataset_id)):
        digest.update(chunk)
    return digest.hexdigest()


def manifest_text(session: Session, dataset_id: int) -> str:
    """The whole manifest as text (small datasets and tests; large ones use the stream)."""
    return b"".join(manifest_lines(session, dataset_id)).decode("utf-8")


def store_manifest(
    keep: Keep, session: Session, project: str, dataset: str, dataset_id: int
) -> str:
    """Rewrite the manifest atomically, streaming it; return the SHA-256 of its bytes.

    The caller holds the dataset's lock (the temp file lives in its private folder).
    """
    return keep.tree.write_manifest(project, dataset, _chunks(manifest_lines(session, dataset_id)))


class _Stale(Exception):
    """The manifest on disk is not the one the head version recorded."""


def patch_manifest(
    keep: Keep,
    project: str,
    dataset: str,
    expected_sha256: str | None,
    changes: list[tuple[str, str | None]],
) -> str | None:
    """Rewrite the manifest from the one on disk plus *changes* ((path, new SHA-256 hex)
    or (path, None) for a removal, sorted by path bytes), without reading the catalog:
    a save of 200 changes in 10^5 files reads one file instead of 10^5 rows.

    The old manifest is trusted only if its bytes hash to *expected_sha256* (the head
    version's): it is hashed as it is read and, on a mismatch (changed by hand, a missing
    file), nothing is renamed and None is returned: the caller writes it from the catalog.
    The caller holds the dataset's lock.
    """
    from labkeep.integrity.manifest import format_line, sort_key

    path = keep.tree.manifest_path(project, dataset)
    if not expected_sha256 or not path.is_file():
        return None
    pending = iter(changes)

    def merged() -> Iterator[bytes]:
        old = hashlib.sha256()
        change = next(pending, None)
        with open(path, "rb") as handle:
            for raw in handle:
                old.update(raw)
                line = raw.decode("utf-8", "surrogateescape")
                if line.startswith("\\"):
                    from labkeep.integrity.manifest import parse_manifest

                    name = next(parse_manifest(line))[0]
                else:
                    name = line[66:].rstrip("\n")
                key = sort_key(name)
                while change is not None and sort_key(change[0]) < key:
                    if change[1] is not None:
                        yield format_line(change[1], change[0]).encode("utf-8")
                    change = next(pending, None)
                if change is not None and change[0] == name:
                    if change[1] is not None:
                        yield format_line(change[1], change[0]).encode("utf-8")
                    change = next(pending, None)
                else:
                    yield raw
        while change is not None:
            if change[1] is not None:
                yield format_line(change[1], change[0]).encode("utf-8")
            change = next(pending, None)
        if old.hexdigest() != expected_sha256:
            raise _Stale  # before the rename: the old manifest stays as it was

    try:
        return keep.tree.write_manifest(project, dataset, _chunks(merged()))
    except _Stale:
        return None


def write_manifest(keep: Keep, address: str) -> str:
    """Rewrite ``MANIFEST.sha256`` of *address* from the catalog; return its SHA-256."""
    from labkeep.ops._access import find_dataset

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.edit")
        dataset_id = dataset.id
    with (
        keep.tree.lock(addr.project, addr.dataset, what="manifest"),
        keep.catalog.read() as session,
    ):
        return store_manifest(keep, session, addr.project, addr.dataset, dataset_id)


def iter_manifest(keep: Keep, address: str) -> Iterator[bytes]:
    """The manifest of a dataset's current state as a stream of byte chunks.

    Access is checked now, before the first chunk is asked for (so a caller can answer
    404/403 before it starts a response); the rows are read as the chunks are consumed.
    """
    from labkeep.ops._access import find_dataset

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.download")
        dataset_id = dataset.id
    return _stream(keep, dataset_id)


def _stream(keep: Keep, dataset_id: int) -> Iterator[bytes]:
    with keep.catalog.read() as session:
        yield from _chunks(manifest_lines(session, dataset_id))


def read_manifest(keep: Keep, address: str) -> str:
    """The manifest text of a dataset's current state (for those who may download it)."""
    return b"".join(iter_manifest(keep, address)).decode("utf-8")
