"""Uploads: files sent over HTTP (or given as streams) are written to a private staging
folder, then ingested by the very same ingest use case (hashing, durability, manifest,
version, event).

An upload is refused before a single byte is written: :func:`begin_upload` checks who is
asking and whether they may add files to the dataset (and that it is not sealed), so the
web server can answer 404/403 without reading a request body. Every byte is counted
against the limit as it arrives; the staging folder is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from labkeep.errors import TooLarge, UsageError, from_os_error
from labkeep.names import check_relpath, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.ingest import _refuse_sealed, ingest
from labkeep.results import Report

if TYPE_CHECKING:
    from labkeep.keep import Keep

UPLOADS_DIR = "uploads"
CHUNK = 1 << 20
#: most files in one upload (each is a file in the staging folder and a part to parse)
MAX_FILES = 10_000


class Upload:
    """One upload in progress: ``add`` files (or ``open_part`` and ``write``), ``finish``.

    Use it as a context manager: the staging folder is removed at the end, whatever
    happened. Files are staged under numbers and given their paths at ``finish``, so the
    paths may arrive before or after the files (as form fields of a multipart body do).
    """

    def __init__(self, keep: Keep, address: str, max_bytes: int | None = None) -> None:
        addr = parse_address(address, need_dataset=True)
        if addr.path or addr.version is not None:
            raise UsageError(f"upload into a dataset, not {address!r}", hint="use PROJECT/DATASET")
        with keep.catalog.read() as session:
            _, dataset = find_dataset(
                keep, session, addr.project, str(addr.dataset), "dataset.ingest"
            )
            _refuse_sealed(dataset, addr.dataset_address)
        self.keep = keep
        self.address = addr.dataset_address
        self.limit = max_bytes if max_bytes is not None else keep.config.web.max_upload_bytes
        self.total = 0
        self.names: list[str] = []
        self._staging = keep.root / UPLOADS_DIR / uuid.uuid4().hex
        self._current: BinaryIO | None = None
        _remove_stale(keep.root / UPLOADS_DIR)
        try:
            (self._staging / "parts").mkdir(parents=True)
        except OSError as exc:
            raise from_os_error(exc, "prepare the upload") from exc

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        shutil.rmtree(self._staging, ignore_errors=True)

    # -- receiving ------------------------------------------------------------------------
    def open_part(self, name: str) -> None:
        """Start the next file, sent as *name* (its path unless ``finish`` gets paths)."""
        self.end_part()
        if len(self.names) >= MAX_FILES:
            raise UsageError(f"more than {MAX_FILES} files in one upload", hint=_USE_INGEST)
        self.names.append(name)
        part = self._staging / "parts" / str(len(self.names))
        try:
            self._current = open(part, "xb")  # noqa: SIM115 (closed by end_part or close)
        except OSError as exc:
            raise from_os_error(exc, "store the upload") from exc

    def write(self, data: bytes) -> None:
        if self._current is None:
            raise UsageError("file data before any file in the upload")
        self.total += len(data)
        if self.total > self.limit:
            raise TooLarge(f"the upload is larger than {self.limit:,} bytes", hint=_USE_INGEST)
        try:
            self._current.write(data)
        except OSError as exc:
            raise from_os_error(exc, "store the upload") from exc

    def end_part(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def add(self, name: str, stream: BinaryIO) -> None:
        """One whole file from a readable stream."""
        self.open_part(name)
        while chunk := stream.read(CHUNK):
            self.write(chunk)
        self.end_part()

    # -- finishing -------------------------------------------------------------------------
    def finish(
        self, paths: list[str] | None = None, *, message: str = "upload from the browser"
    ) -> Report:
        """Give each file its path (*paths*, one per file, or the names sent) inside
        ``raw/`` and ingest them all."""
        self.end_part()
        if not self.names:
            raise UsageError("no files in the upload")
        if paths is not None and len(paths) != len(self.names):
            raise UsageError("give one path per file, or none")
        tree = self._staging / "tree"
        seen: set[str] = set()
        for number, name in enumerate(paths if paths is not None else self.names, start=1):
            # a browser sends "C:\fakepath\x" never, and names, not paths, since 2010: a
            # backslash is part of the name, as it is on the instrument's disk (ingest)
            rel = check_relpath(name.lstrip("/"))
            if rel in seen:
                raise UsageError(f"{rel!r} is uploaded twice")
            seen.add(rel)
            target = tree / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                (self._staging / "parts" / str(number)).rename(target)
            except (NotADirectoryError, IsADirectoryError, FileExistsError):
                raise UsageError(f"{rel!r} is both a file and a folder in the upload") from None
            except OSError as exc:
                raise from_os_error(exc, "store the upload") from exc
        report = ingest(self.keep, tree, self.address, message=message)
        report.info["source"] = "upload"  # not the server's staging folder
        return report


_USE_INGEST = "large data goes in with 'labkeep ingest' on the keep's machine"
#: a staging folder untouched this long belongs to an upload whose server died
STALE_SECONDS = 24 * 3600


def _remove_stale(folder: Path) -> None:
    """Remove staging folders that a killed server left behind (a live upload writes
    into its folder at least every few seconds, and none lasts a day)."""
    import time

    try:
        children = list(os.scandir(folder))
    except FileNotFoundError:
        return
    cutoff = time.time() - STALE_SECONDS
    for child in children:
        with contextlib.suppress(OSError):
            if child.is_dir(follow_symlinks=False) and _newest_mtime(child.path) < cutoff:
                shutil.rmtree(child.path, ignore_errors=True)


def _newest_mtime(path: str) -> float:
    """When the staging folder last changed: itself, or a part written into it (one
    level: parts/ holds at most MAX_FILES files; no walk over other uploads' trees)."""
    newest = os.lstat(path).st_mtime
    with contextlib.suppress(OSError), os.scandir(os.path.join(path, "parts")) as parts:
        for part in parts:
            newest = max(newest, part.stat(follow_symlinks=False).st_mtime)
    return newest


def begin_upload(keep: Keep, address: str, *, max_bytes: int | None = None) -> Upload:
    """Start an upload into ``PROJECT/DATASET/raw/`` (refused at once if the caller may
    not add files there)."""
    return Upload(keep, address, max_bytes)


def upload(
    keep: Keep, address: str, files: Iterable[tuple[str, BinaryIO]], *, max_bytes: int | None = None
) -> Report:
    """Add ``(relative path, stream)`` pairs to ``PROJECT/DATASET/raw/``."""
    with Upload(keep, address, max_bytes) as up:
        for name, stream in files:
            up.add(name, stream)
        return up.finish()
