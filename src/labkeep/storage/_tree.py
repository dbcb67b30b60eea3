"""The tree store: the human-readable primary copy at ``data/PROJECT/DATASET/PATH``.

This is what people see through SMB/NFS. Each dataset folder holds ``raw/`` (the
instrument's files), ``MANIFEST.sha256`` and a hidden ``.labkeep/`` folder for the
dataset's lock and partial files of an ingest in progress (never under a final name).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from labkeep.errors import Busy, StorageError, UsageError
from labkeep.integrity.manifest import MANIFEST_NAME
from labkeep.names import check_relpath

PRIVATE_DIR = ".labkeep"
PARTIAL_DIR = "partial"
LOCK_NAME = "lock"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace *path* with *data*: temp file beside it, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


class TreeStore:
    """Paths and safe writes in the primary tree."""

    kind = "tree"

    def __init__(self, base: Path) -> None:
        self.base = base

    def dataset_dir(self, project: str, dataset: str) -> Path:
        return self.base / project / dataset

    def file_path(self, project: str, dataset: str, relpath: str) -> Path:
        """Absolute path of a file inside a dataset; *relpath* may never escape it."""
        check_relpath(relpath)
        if relpath.split("/", 1)[0] == PRIVATE_DIR:
            raise UsageError(f"{relpath!r} is inside labkeep's private folder")
        return self.dataset_dir(project, dataset) / relpath

    def manifest_path(self, project: str, dataset: str) -> Path:
        return self.dataset_dir(project, dataset) / MANIFEST_NAME

    def partial_dir(self, project: str, dataset: str) -> Path:
        return self.dataset_dir(project, dataset) / PRIVATE_DIR / PARTIAL_DIR

    def prepare_dataset(self, project: str, dataset: str) -> Path:
        partial = self.partial_dir(project, dataset)
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def clear_partials(self, project: str, dataset: str) -> int:
        """Remove partial files left by an interrupted ingest (caller holds the lock)."""
        partial = self.partial_dir(project, dataset)
        removed = 0
        if partial.is_dir():
            for child in partial.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
                removed += 1
        return removed

    @contextlib.contextmanager
    def lock(self, project: str, dataset: str, *, what: str) -> Iterator[None]:
        """Hold the dataset's exclusive lock, or raise Busy at once if another holds it."""
        folder = self.dataset_dir(project, dataset) / PRIVATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(
                    f"{project}/{dataset} is busy: another labkeep process is working on it",
                    hint=f"wait for it to finish, then run the {what} again",
                ) from None
            yield
        finally:
            os.close(fd)

    def write_manifest(self, project: str, dataset: str, text: str) -> None:
        folder = self.dataset_dir(project, dataset)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / MANIFEST_NAME, text.encode("utf-8"))
        except OSError as exc:
            raise StorageError(
                f"cannot write {project}/{dataset}/{MANIFEST_NAME}: {exc.strerror or exc}",
                hint="free space on the keep's disk (or fix the tree's permissions), then run "
                "the same command again: nothing that was done is lost",
            ) from exc

    def walk_files(self, project: str, dataset: str) -> Iterator[tuple[str, os.stat_result]]:
        """Every non-directory below the dataset folder except the manifest and .labkeep.

        Yields ``(relpath, lstat)``; symlinks are yielded as themselves, not followed.
        """
        root = self.dataset_dir(project, dataset)
        if not root.is_dir():
            return
        stack = [("", str(root))]
        while stack:
            prefix, folder = stack.pop()
            with os.scandir(folder) as it:
                for item in it:
                    rel = prefix + item.name
                    if not prefix and item.name in (PRIVATE_DIR, MANIFEST_NAME):
                        continue
                    if item.is_dir(follow_symlinks=False):
                        stack.append((rel + "/", item.path))
                    else:
                        yield rel, item.stat(follow_symlinks=False)
