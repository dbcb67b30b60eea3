"""Reading one file of a dataset (at any version): metadata, and a stream to download."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import select

from labkeep.catalog import Entry
from labkeep.errors import IntegrityError, NotFound, UsageError
from labkeep.names import parse_address, part_name
from labkeep.ops._access import find_dataset
from labkeep.ops.listing import entries_at

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.results import EntryStream


@dataclass
class FileInfo:
    dataset: str
    path: str
    version: int
    size: int
    sha256: str
    mtime_ns: int
    sealed: bool
    local_path: Path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "path": self.path,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "mtime_ns": self.mtime_ns,
            "sealed": self.sealed,
        }


def stat_file(keep: Keep, address: str, *, action: str = "dataset.read") -> FileInfo:
    """The catalog's record of ``PROJECT/DATASET/PATH[@VERSION]``."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path is None:
        raise UsageError(
            f"{address!r} names a dataset, not a file", hint="use PROJECT/DATASET/PATH"
        )
    with keep.catalog.read() as session:
        _, dataset = find_dataset(
            keep, session, addr.project, addr.dataset, action, version=addr.version, path=addr.path
        )
        version = addr.version if addr.version is not None else dataset.head_version
        if addr.version is not None:
            from labkeep.ops.listing import _check_version

            _check_version(session, dataset.id, addr.dataset_address, addr.version)
        row = session.execute(
            select(Entry.size, Entry.sha256, Entry.mtime_ns, Entry.valid_to).where(
                entries_at(dataset.id, addr.version), Entry.path == addr.path
            )
        ).first()
        if row is None:
            raise NotFound(
                f"no file {addr.path!r} in {addr.dataset_address}"
                + (f" at version {addr.version}" if addr.version is not None else "")
            )
        size, digest, mtime, _valid_to = row
        return FileInfo(
            addr.dataset_address,
            addr.path,
            version,
            int(size),
            digest.hex(),
            int(mtime),
            dataset.sealed,
            keep.tree.file_path(addr.project, addr.dataset, addr.path),
        )


def open_file(keep: Keep, address: str, *, resuming: bool = False) -> tuple[FileInfo, BinaryIO]:
    """Open a file for download (counted against a share link's download limit, unless
    *resuming* a download of it that was counted: a later range of the same file).

    The caller closes the returned stream. A file whose size on disk differs from the
    catalog is refused: labkeep never serves content it cannot vouch for.
    """
    info = stat_file(keep, address, action="dataset.download")
    handle = open_entry(keep, info)
    from labkeep.ops.shares import count_download

    try:
        count_download(keep, info, resuming=resuming)
    except BaseException:
        handle.close()
        raise
    return info, handle


def files_for_download(keep: Keep, address: str) -> Iterator[FileInfo]:
    """Every file below ``PROJECT/DATASET[/FOLDER][@VERSION]`` for a zip download, in path
    order, read from the catalog a page at a time (flat memory for any file count).

    Access is checked, and the download counted once against a share link's limit, before
    this returns (so a refusal comes before the first byte of a zip).
    """
    addr = parse_address(address, need_dataset=True)
    stream, sealed = download_stream(keep, address)
    version = stream.version or 0

    def infos() -> Iterator[FileInfo]:
        for e in stream.entries:
            yield entry_info(keep, addr.dataset_address, version, sealed, e)

    return infos()


def download_stream(keep: Keep, address: str) -> tuple[EntryStream, bool]:
    """The entries below ``PROJECT/DATASET[/FOLDER][@VERSION]`` to download (a page at a
    time), and whether the dataset is sealed. Access is checked, and the download counted
    once against a share link's limit, before this returns."""
    from labkeep.ops.listing import stream_entries
    from labkeep.ops.shares import count_download

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(
            keep,
            session,
            addr.project,
            addr.dataset,
            "dataset.download",
            version=addr.version,
            path=addr.path,
        )
        sealed = dataset.sealed
    stream = stream_entries(keep, address)
    count_download(keep)
    return stream, sealed


def entry_info(
    keep: Keep, dataset: str, version: int, sealed: bool, entry: dict[str, Any]
) -> FileInfo:
    """A listed entry of *dataset* (``PROJECT/DATASET``) as a :class:`FileInfo`."""
    project, name = dataset.split("/", 1)
    return FileInfo(
        dataset,
        entry["path"],
        version,
        entry["size"],
        entry["sha256"],
        entry["mtime_ns"],
        sealed,
        keep.tree.file_path(project, name, entry["path"]),
    )


def has_file(keep: Keep, address: str) -> bool:
    """Whether ``PROJECT/DATASET/PATH[@VERSION]`` is a file the principal may read."""
    try:
        stat_file(keep, address)
    except NotFound:
        return False
    return True


def export_file(keep: Keep, address: str, dest: str | os.PathLike[str]) -> FileInfo:
    """Copy one file out of the keep to *dest* (a file or folder), checking its SHA-256.

    Written to a temporary name beside the destination and renamed only when the bytes
    match the catalog, so a partial or damaged copy never carries the final name.
    """
    info, handle = open_file(keep, address)
    target = Path(dest)
    if target.is_dir():
        target = target / info.name
    return write_verified(info, handle, target)


def export_entry(keep: Keep, info: FileInfo, target: Path) -> FileInfo:
    """Copy a file whose entry was listed (access checked with the listing, see
    :func:`download_stream`) to *target*, checking its SHA-256: from the tree, or from a
    store for content the tree no longer holds (an old version's)."""
    return write_verified(info, open_entry(keep, info), target)


def open_entry(keep: Keep, info: FileInfo) -> BinaryIO:
    """The bytes of a file: its tree copy, else a good replica's (an old version's
    content, or a tree copy that was dropped); NotFound says where to look."""
    from labkeep.ops.content import open_content

    try:
        return open_content(
            keep, info.local_path, info.size, bytes.fromhex(info.sha256), info.mtime_ns
        )
    except NotFound as exc:
        raise NotFound(
            f"{info.dataset}/{info.path}: {exc.message}",
            hint="run 'labkeep verify' and repair it from another copy, or "
            f"'labkeep get {info.dataset}' if its tree copy was dropped",
        ) from None


def write_verified(info: FileInfo, handle: BinaryIO, target: Path) -> FileInfo:
    """Write *handle* (closed here) to *target* under a temporary name beside it, renamed
    only when the bytes match ``info.sha256``; *info* then points at *target*."""
    import hashlib

    tmp = target.with_name(part_name(target.name))
    digest = hashlib.sha256()
    try:
        with handle, open(tmp, "wb") as out:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != info.sha256:
            raise IntegrityError(
                f"{info.dataset}/{info.path} does not match its SHA-256 in the catalog",
                hint="run 'labkeep verify' on the dataset; the copy was not kept",
            )
        os.utime(tmp, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    info.local_path = target
    return info
