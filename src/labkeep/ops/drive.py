"""The keep as a network drive: folders and files as a WebDAV client sees them.

``/PROJECT/DATASET/PATH`` addresses, listed from the catalog (what the keep vouches
for), never from the tree's folders: a caller sees exactly what ``labkeep ls`` shows
them, and NotFound for the rest. Writes go through the keep's own use cases, never
behind the catalog's back:

- a file written into ``raw/`` is an upload (:mod:`labkeep.ops.upload`): staged, then
  ingested (hash, durability, manifest, version, event); ``raw/`` is append-only, so a
  file there is never replaced nor removed, and a sealed dataset's ``raw/`` is refused;
- a file written anywhere else in a dataset is staged, moved into the working tree under
  the dataset's lock, and recorded by ``save`` as a new version (the old content stays in
  the versions store); removing one is saved the same way.

Folders are not catalogued: a folder exists when files are below it; an empty one made
by a client (``MKCOL``) exists in the tree until a file lands in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sqlalchemy import select

from labkeep.access import allowed
from labkeep.catalog import Entry
from labkeep.errors import Forbidden, NotFound, SealedError, TooLarge, UsageError, from_os_error
from labkeep.names import check_relpath, check_slug
from labkeep.ops._access import find_dataset, project_resource
from labkeep.ops.listing import entries_at
from labkeep.results import Report
from labkeep.storage._tree import PRIVATE_DIR

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.catalog import Dataset
    from labkeep.keep import Keep
    from labkeep.ops.upload import Upload

RAW = "raw"
#: catalog rows read per query when a folder is listed
PAGE = 1000
CHUNK = 1 << 20


@dataclass(frozen=True)
class DriveNode:
    """A folder or a file as the drive shows it."""

    name: str
    folder: bool
    size: int = 0
    sha256: str = ""
    mtime_ns: int = 0
    #: whether the caller may write into it (a folder) or replace/remove it (a file)
    writable: bool = False


@dataclass(frozen=True)
class DrivePath:
    """A checked drive path: ``project``, ``dataset`` and ``path`` (each may be empty)."""

    project: str = ""
    dataset: str = ""
    path: str = ""

    @property
    def address(self) -> str:
        return "/".join(p for p in (self.project, self.dataset, self.path) if p)

    @property
    def in_raw(self) -> bool:
        return self.path == RAW or self.path.startswith(RAW + "/")


def parse_drive_path(text: str) -> DrivePath:
    """``/PROJECT/DATASET/PATH`` checked: slugs for project and dataset, a path that
    cannot escape the dataset (no ``.``, ``..``, empty or NUL components) and never names
    labkeep's private folder. Raises UsageError (a traversal attempt) otherwise."""
    parts = text.strip("/").split("/") if text.strip("/") else []
    if any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise UsageError(f"the path {text[:200]!r} has an empty, '.' or '..' component")
    if not parts:
        return DrivePath()
    project = check_slug(parts[0], "project")
    if len(parts) == 1:
        return DrivePath(project)
    dataset = check_slug(parts[1], "dataset")
    rel = check_relpath("/".join(parts[2:])) if len(parts) > 2 else ""
    if rel.split("/", 1)[0] == PRIVATE_DIR:
        raise NotFound(f"no file or folder {rel!r} in {project}/{dataset}")
    return DrivePath(project, dataset, rel)


# -- reading -----------------------------------------------------------------------------------
def drive_node(keep: Keep, text: str) -> DriveNode | None:
    """The folder or file at *text*, or None when there is none the caller may see."""
    where = parse_drive_path(text)
    if not where.project:
        return DriveNode("", folder=True)
    if not where.dataset:
        from labkeep.ops.projects import get_project

        try:
            get_project(keep, where.project)
        except NotFound:
            return None
        return DriveNode(where.project, folder=True)
    try:
        with keep.catalog.read() as session:
            project, dataset = find_dataset(
                keep, session, where.project, where.dataset, "dataset.read"
            )
            writable = _writable(keep, session, project, dataset, where.path)
            if not where.path:
                return DriveNode(where.dataset, folder=True, writable=writable)
            live = entries_at(dataset.id, None)
            row = session.execute(
                select(Entry.size, Entry.sha256, Entry.mtime_ns).where(
                    live, Entry.path == where.path
                )
            ).first()
            name = where.path.rsplit("/", 1)[-1]
            if row is not None:
                size, digest, mtime = row
                return DriveNode(
                    name, False, int(size), digest.hex(), int(mtime), writable and not where.in_raw
                )
            below = session.execute(
                select(Entry.path)
                .where(live, Entry.path >= where.path + "/", Entry.path < where.path + "0")
                .limit(1)
            ).first()
    except NotFound:
        return None
    if below is not None or _tree_folder(keep, where):
        return DriveNode(name, folder=True, writable=writable)
    return None


def drive_children(keep: Keep, text: str) -> Iterator[DriveNode]:
    """The folders and files directly inside the folder at *text* (NotFound if the caller
    may not see it). Large folders are read a page at a time, and each subfolder costs
    one index seek however many files it holds."""
    where = parse_drive_path(text)
    if not where.project:
        from labkeep.ops.projects import list_projects

        for p in list_projects(keep):
            yield DriveNode(p.name, folder=True)
        return
    if not where.dataset:
        from labkeep.ops.projects import list_datasets

        for d in list_datasets(keep, where.project):
            yield DriveNode(d.name, folder=True)
        return
    prefix = where.path + "/" if where.path else ""
    with keep.catalog.read() as session:
        project, dataset = find_dataset(keep, session, where.project, where.dataset, "dataset.read")
        dataset_id = dataset.id
        writable = _writable(keep, session, project, dataset, where.path)
        raw_writable = where.path or _writable(keep, session, project, dataset, RAW)
    seen: set[str] = set()
    cursor = prefix
    while True:
        with keep.catalog.read() as session:
            query = select(Entry.path, Entry.size, Entry.sha256, Entry.mtime_ns).where(
                entries_at(dataset_id, None), Entry.path >= cursor
            )
            if prefix:
                query = query.where(Entry.path < where.path + "0")
            rows = session.execute(query.order_by(Entry.path).limit(PAGE)).all()
        if not rows:
            break
        jumped = False
        for path, size, digest, mtime in rows:
            rest = path[len(prefix) :]
            name, slash, _ = rest.partition("/")
            if slash:
                if name not in seen:
                    seen.add(name)
                    folder_writable = raw_writable if (not prefix and name == RAW) else writable
                    yield DriveNode(name, folder=True, writable=bool(folder_writable))
                # ('0' follows '/' in byte order: skip everything below this folder)
                cursor = prefix + name + "0"
                jumped = True
                break
            seen.add(name)
            in_raw = (where.path + "/" + name if where.path else name).startswith(RAW + "/") or (
                where.path == RAW
            )
            yield DriveNode(
                name, False, int(size), digest.hex(), int(mtime), writable and not in_raw
            )
        if not jumped:
            if len(rows) < PAGE:
                break
            cursor = rows[-1][0] + "\x00"
    # empty folders a client made (MKCOL) that no file is in yet
    for name in _tree_subfolders(keep, where):
        if name not in seen:
            yield DriveNode(name, folder=True, writable=writable)


def open_drive_file(keep: Keep, text: str) -> BinaryIO:
    """A file's content (from the tree, or a store holding a good copy), as downloads get
    it: the caller closes it."""
    where = parse_drive_path(text)
    if not where.path:
        raise NotFound(f"no file {text!r}")
    _, handle = keep.open_file(where.address)
    return handle


def _writable(keep: Keep, session: Session, project: object, dataset: Dataset, path: str) -> bool:
    """Whether the caller may write at *path* of *dataset*: raw/ takes new files while
    the dataset is not sealed (``dataset.ingest``); the rest of an open session or
    analysis dataset is its working tree (``dataset.save``); releases never change."""
    if dataset.kind == "release" or dataset.tree_state != "present":
        return False
    resource = project_resource(session, project, dataset)  # type: ignore[arg-type]
    if path == RAW or path.startswith(RAW + "/"):
        return not dataset.sealed and allowed(keep.principal, "dataset.ingest", resource)
    return allowed(keep.principal, "dataset.save", resource)


def _tree_folder(keep: Keep, where: DrivePath) -> bool:
    try:
        return keep.tree.file_path(where.project, where.dataset, where.path).is_dir()
    except (UsageError, OSError):
        return False


def _tree_subfolders(keep: Keep, where: DrivePath) -> list[str]:
    folder = (
        keep.tree.file_path(where.project, where.dataset, where.path)
        if where.path
        else keep.tree.dataset_dir(where.project, where.dataset)
    )
    try:
        with os.scandir(folder) as children:
            return sorted(
                c.name
                for c in children
                if c.is_dir(follow_symlinks=False) and c.name != PRIVATE_DIR
            )
    except OSError:
        return []


# -- writing -----------------------------------------------------------------------------------
def _open_dataset_for_write(keep: Keep, where: DrivePath, action: str) -> Dataset:
    if not where.dataset or not where.path:
        raise Forbidden("only files inside a dataset can be written here")
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, where.project, where.dataset, action)
        target = f"{where.project}/{where.dataset}"
        if dataset.kind == "release":
            raise SealedError(f"{target} is a release: its content never changes")
        if where.in_raw and dataset.sealed:
            raise SealedError(
                f"{target} is sealed: its raw data is write-once",
                hint="write results into another folder of the dataset, or a new dataset",
            )
        if dataset.tree_state != "present":
            raise UsageError(
                f"the tree copy of {target} was dropped: it cannot be written to",
                hint=f"bring it back first with 'labkeep get {target}'",
            )
        return dataset


class DriveWrite:
    """One file being written through the drive: ``write`` its bytes, then ``finish``
    (or ``abort``). Into raw/ it is an upload (ingested); elsewhere a staged file that
    ``save`` records. Refused before a byte is read when the caller may not write there,
    or the declared size is above ``[web] max_upload_bytes``."""

    def __init__(self, keep: Keep, text: str, declared_size: int | None = None) -> None:
        self.keep = keep
        self.where = where = parse_drive_path(text)
        self.limit = keep.config.web.max_upload_bytes
        if declared_size is not None and declared_size > self.limit:
            raise TooLarge(
                f"the file is larger than this server accepts ({self.limit:,} bytes)",
                hint="large data goes in with 'labkeep ingest' on the keep's machine",
            )
        self.total = 0
        self._upload: Upload | None = None
        self._staged: Path | None = None
        self._file: BinaryIO | None = None
        if where.in_raw:
            _open_dataset_for_write(keep, where, "dataset.ingest")
            if where.path == RAW:
                raise Forbidden("raw is a folder")
            from labkeep.ops.upload import begin_upload

            self._upload = begin_upload(keep, f"{where.project}/{where.dataset}")
            self._upload.open_part(where.path[len(RAW) + 1 :])
        else:
            _open_dataset_for_write(keep, where, "dataset.save")
            staging = keep.root / "uploads" / uuid.uuid4().hex
            try:
                staging.mkdir(parents=True)
                self._staged = staging / "file"
                self._file = open(self._staged, "xb")  # noqa: SIM115 (closed by finish/abort)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise from_os_error(exc, "stage the file") from exc

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.limit:
            raise TooLarge(
                f"the file is larger than this server accepts ({self.limit:,} bytes)",
                hint="large data goes in with 'labkeep ingest' on the keep's machine",
            )
        if self._upload is not None:
            self._upload.write(data)
        elif self._file is not None:
            try:
                self._file.write(data)
            except OSError as exc:
                raise from_os_error(exc, "stage the file") from exc

    def finish(self) -> Report:
        """Ingest (raw/) or save (elsewhere) the file; errors come as LabkeepError."""
        where = self.where
        dataset = f"{where.project}/{where.dataset}"
        try:
            if self._upload is not None:
                report = self._upload.finish(message=f"webdav: {where.path}"[:200])
                report.info["source"] = "webdav"
            else:
                assert self._file is not None and self._staged is not None
                self._file.close()
                report = _save_into_tree(self.keep, where, dataset, self._staged)
        finally:
            self.abort()
        _raise_first_error(report, f"{dataset}/{where.path}")
        return report

    def abort(self) -> None:
        if self._upload is not None:
            self._upload.close()
        if self._file is not None:
            self._file.close()
        if self._staged is not None:
            shutil.rmtree(self._staged.parent, ignore_errors=True)


def _save_into_tree(keep: Keep, where: DrivePath, dataset: str, staged: Path) -> Report:
    from labkeep.ops.save import dataset_lock, save

    target = keep.tree.file_path(where.project, where.dataset, where.path)
    with dataset_lock(keep, where.project, where.dataset, "save", 60.0):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise UsageError(f"{where.path!r} is a folder")
            # (the staging folder may be on another filesystem than the tree)
            shutil.move(str(staged), str(target))
        except OSError as exc:
            raise from_os_error(exc, "write the file into the dataset") from exc
        return save(
            keep,
            dataset,
            files=[where.path],
            message=f"webdav: {where.path}"[:200],
            _locked=True,
        )


def begin_drive_write(keep: Keep, text: str, *, declared_size: int | None = None) -> DriveWrite:
    """Start writing the file at *text* (see :class:`DriveWrite`)."""
    return DriveWrite(keep, text, declared_size)


def remove_drive_file(keep: Keep, text: str) -> Report:
    """Remove a file of a dataset's working tree and save that as a new version (its
    content stays in the versions store). Files in raw/ are never removed."""
    from labkeep.ops.save import dataset_lock, save

    where = parse_drive_path(text)
    if where.in_raw:
        raise Forbidden(
            "raw/ is append-only: its files are never removed",
            hint="a site admin can unseal and edit with the keep's tools",
        )
    _open_dataset_for_write(keep, where, "dataset.save")
    dataset = f"{where.project}/{where.dataset}"
    node = drive_node(keep, text)
    if node is None:
        raise NotFound(f"no file {where.path!r} in {dataset}")
    if node.folder:
        raise UsageError("remove the files in the folder first")
    target = keep.tree.file_path(where.project, where.dataset, where.path)
    with dataset_lock(keep, where.project, where.dataset, "save", 60.0):
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        report = save(
            keep,
            dataset,
            files=[where.path],
            message=f"webdav: remove {where.path}"[:200],
            _locked=True,
        )
    _raise_first_error(report, f"{dataset}/{where.path}")
    return report


def make_drive_folder(keep: Keep, text: str) -> None:
    """An empty folder in a dataset the caller may write (folders are not catalogued:
    it shows until a file lands in it, and costs no version)."""
    where = parse_drive_path(text)
    action = "dataset.ingest" if where.in_raw else "dataset.save"
    _open_dataset_for_write(keep, where, action)
    if drive_node(keep, text) is not None:
        raise UsageError(f"{where.address} already exists")
    try:
        keep.tree.file_path(where.project, where.dataset, where.path).mkdir(parents=True)
    except FileExistsError:
        raise UsageError(f"{where.address} already exists") from None
    except OSError as exc:
        raise from_os_error(exc, "make the folder") from exc


def _raise_first_error(report: Report, what: str) -> None:
    for result in report.results:
        if result.status in ("error", "impossible"):
            raise Forbidden(f"{what}: {result.message or result.status}")


__all__ = [
    "DriveNode",
    "DrivePath",
    "DriveWrite",
    "begin_drive_write",
    "drive_children",
    "drive_node",
    "make_drive_folder",
    "open_drive_file",
    "parse_drive_path",
    "remove_drive_file",
]
