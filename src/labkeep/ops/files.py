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
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.listing import entries_at

if TYPE_CHECKING:
    from labkeep.keep import Keep


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
    from labkeep.ops.content import open_content

    try:
        handle = open_content(
            keep, info.local_path, info.size, bytes.fromhex(info.sha256), info.mtime_ns
        )
    except NotFound as exc:
        raise NotFound(
            f"{info.dataset}/{info.path}: {exc.message}",
            hint="run 'labkeep verify' and repair it from another copy, or "
            f"'labkeep get {info.dataset}' if its tree copy was dropped",
        ) from None
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
    version = stream.version or 0
    project, name = addr.project, addr.dataset

    def infos() -> Iterator[FileInfo]:
        for e in stream.entries:
            yield FileInfo(
                addr.dataset_address,
                e["path"],
                version,
                e["size"],
                e["sha256"],
                e["mtime_ns"],
                sealed,
                keep.tree.file_path(project, name, e["path"]),
            )

    return infos()


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
    import hashlib

    info, handle = open_file(keep, address)
    target = Path(dest)
    if target.is_dir():
        target = target / info.name
    tmp = target.with_name(f".{target.name}.labkeep-part")
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
