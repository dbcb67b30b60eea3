"""The tree store: the human-readable primary copy at ``data/PROJECT/DATASET/PATH``.

This is what people see through SMB/NFS. Each dataset folder holds ``raw/`` (the
instrument's files), ``MANIFEST.sha256`` and a hidden ``.labkeep/`` folder for the
dataset's lock and for every temporary file labkeep writes (``partial/``: files of an
ingest in progress; ``tmp/``: a manifest being written), never under a final name and
never beside the data. Whoever takes the dataset's lock first removes what a crashed
run left there (and the manifest temp files that labkeep < 0.2 wrote beside the
manifest), so temp files cannot outlive the next run nor be mistaken for data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from labkeep.errors import Busy, StorageError, UsageError
from labkeep.integrity.manifest import MANIFEST_NAME
from labkeep.names import check_relpath

PRIVATE_DIR = ".labkeep"
PARTIAL_DIR = "partial"
TMP_DIR = "tmp"
LOCK_NAME = "lock"
#: names the seal or unseal under way (written before raw/ is touched, removed after the
#: catalog says it is done): whoever finds it knows that one was interrupted
INTENT_NAME = "seal-intent"
INTENTS = ("seal", "unseal")
#: the manifest's temp file as labkeep < 0.2 wrote it, beside the manifest
LEGACY_TEMP = re.compile(r"\.MANIFEST\.sha256\.[0-9a-f]{32}\.part")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, chunks: bytes | Iterable[bytes], *, tmp_dir: Path | None = None
) -> str:
    """Replace *path* with *chunks*: temp file, fsync, rename, fsync of the folder.

    The temp file goes into *tmp_dir* (which must be on the same filesystem; default:
    beside *path*) under a unique name. The bytes are written as they come, so memory
    does not grow with their size. Returns the SHA-256 (hex) of what was written.
    """
    folder = tmp_dir if tmp_dir is not None else path.parent
    tmp = folder / f"{'' if tmp_dir is not None else '.'}{path.name}.{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    try:
        with open(tmp, "xb") as handle:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)
    return digest.hexdigest()


class TreeStore:
    """Paths and safe writes in the primary tree."""

    kind = "tree"

    def __init__(
        self,
        base: Path,
        leases: Callable[[str, str, str], contextlib.AbstractContextManager[object]] | None = None,
    ) -> None:
        self.base = base
        #: takes a named lease in the catalog (name, what, busy message); without it (a
        #: tree opened on its own) the dataset's lock is a flock, good for one host only
        self.leases = leases

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

    def tmp_dir(self, project: str, dataset: str) -> Path:
        return self.dataset_dir(project, dataset) / PRIVATE_DIR / TMP_DIR

    def prepare_dataset(self, project: str, dataset: str) -> Path:
        partial = self.partial_dir(project, dataset)
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def clear_partials(self, project: str, dataset: str) -> int:
        """Remove partial files left by an interrupted ingest (caller holds the lock)."""
        return _empty(self.partial_dir(project, dataset))

    def clean_temporaries(self, project: str, dataset: str) -> int:
        """Remove every temp file a crashed run left in the dataset (caller holds the lock).

        Best effort (a read-only tree must not stop a verify): returns how many were
        removed. Only labkeep's own names are touched: the private folders' contents and,
        beside the manifest, exactly the temp-file name older versions used.
        """
        removed = 0
        for folder in (self.partial_dir(project, dataset), self.tmp_dir(project, dataset)):
            with contextlib.suppress(OSError):
                removed += _empty(folder)
        root = self.dataset_dir(project, dataset)
        with contextlib.suppress(OSError), os.scandir(root) as it:
            for item in it:
                if LEGACY_TEMP.fullmatch(item.name) and not item.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
                        removed += 1
        return removed

    @contextlib.contextmanager
    def lock(self, project: str, dataset: str, *, what: str) -> Iterator[int]:
        """Hold the dataset's exclusive lock, or raise Busy at once if another holds it.

        The lock is a lease in the catalog, so that processes on several hosts sharing
        the keep exclude each other (a holder that died loses it when it expires).
        Nobody else works on the dataset while it is held, so every temp file found
        then is a crashed run's: they are removed first. Yields how many were.
        """
        folder = self.dataset_dir(project, dataset) / PRIVATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        if self.leases is not None:
            busy = (
                f"{project}/{dataset} is busy: another labkeep process ({{holder}}) is "
                f"running {{what}} on it since {{since}}"
            )
            with self.leases(f"tree:{project}/{dataset}", what, busy):
                yield self.clean_temporaries(project, dataset)
            return
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(
                    f"{project}/{dataset} is busy: another labkeep process is running {what} on it",
                    hint=f"wait for it to finish, then run the {what} again",
                ) from None
            yield self.clean_temporaries(project, dataset)
        finally:
            os.close(fd)

    def seal_intent(self, project: str, dataset: str) -> str | None:
        """``seal`` or ``unseal`` when one was started and not finished, else None."""
        path = self.dataset_dir(project, dataset) / PRIVATE_DIR / INTENT_NAME
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError:
            return "seal"  # unreadable: assume the worst (a tree that may be half protected)
        return text if text in INTENTS else "seal"

    def set_seal_intent(self, project: str, dataset: str, operation: str | None) -> None:
        """Record (durably) that *operation* starts, or (None) that it is done."""
        folder = self.dataset_dir(project, dataset) / PRIVATE_DIR
        path = folder / INTENT_NAME
        try:
            if operation is None:
                if path.exists():
                    path.unlink()
                    fsync_dir(folder)
                return
            assert operation in INTENTS
            tmp = self.tmp_dir(project, dataset)
            tmp.mkdir(parents=True, exist_ok=True)
            write_atomic(path, f"{operation}\n".encode(), tmp_dir=tmp)
        except OSError as exc:
            raise StorageError(
                f"cannot write {project}/{dataset}/{PRIVATE_DIR}/{INTENT_NAME}: "
                f"{exc.strerror or exc}",
                hint="free space on the keep's disk (or fix the tree's permissions), then run "
                "the same command again",
            ) from exc

    def write_manifest(self, project: str, dataset: str, chunks: Iterable[bytes]) -> str:
        """Replace the dataset's manifest with *chunks* as they come (caller holds the lock).

        The temp file is written in ``.labkeep/tmp/`` and renamed into place (the same
        filesystem). Returns the SHA-256 (hex) of the manifest's bytes.
        """
        folder = self.dataset_dir(project, dataset)
        tmp = self.tmp_dir(project, dataset)
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            return write_atomic(folder / MANIFEST_NAME, chunks, tmp_dir=tmp)
        except OSError as exc:
            raise StorageError(
                f"cannot write {project}/{dataset}/{MANIFEST_NAME}: {exc.strerror or exc}",
                hint="free space on the keep's disk (or fix the tree's permissions), then run "
                "the same command again: nothing that was done is lost",
            ) from exc

    def walk_sorted(
        self, project: str, dataset: str, *, skip: frozenset[str] = frozenset()
    ) -> Iterator[tuple[str, os.stat_result]]:
        """:meth:`walk_files` in byte-wise path order, one folder's names in memory at a
        time (for a merge with the catalog's rows, which come in the same order); top-level
        names in *skip* (e.g. ``raw``) are not entered."""
        root = self.dataset_dir(project, dataset)
        try:
            top = os.open(root, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return
        # each folder is opened once and its files are looked at relative to it
        # (fstatat): no path lookup from / per file
        try:
            stack = [("", top, iter(_sorted_children(top)))]
        except BaseException:
            os.close(top)
            raise
        lstat = os.stat
        try:
            while stack:
                prefix, fd, children = stack[-1]
                for key in children:
                    if not prefix:
                        name = key[:-1] if key[-1] == "/" else key
                        if (
                            name in (PRIVATE_DIR, MANIFEST_NAME)
                            or name in skip
                            or LEGACY_TEMP.fullmatch(name)
                        ):
                            continue
                    if key[-1] == "/":
                        try:
                            sub = os.open(key[:-1], _DIR_FLAGS, dir_fd=fd)
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        try:
                            stack.append((prefix + key, sub, iter(_sorted_children(sub))))
                        except BaseException:
                            os.close(sub)
                            raise
                        break
                    try:
                        yield prefix + key, lstat(key, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                else:
                    stack.pop()
                    os.close(fd)
        finally:
            for _, fd, _ in stack:
                os.close(fd)

    def walk_files(self, project: str, dataset: str) -> Iterator[tuple[str, os.stat_result]]:
        """Every non-directory below the dataset folder except labkeep's own files (the
        manifest, ``.labkeep/`` and an older version's manifest temp file beside it).

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
                    if not prefix and (
                        item.name in (PRIVATE_DIR, MANIFEST_NAME)
                        or LEGACY_TEMP.fullmatch(item.name)
                    ):
                        continue
                    if item.is_dir(follow_symlinks=False):
                        stack.append((rel + "/", item.path))
                    else:
                        yield rel, item.stat(follow_symlinks=False)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def _sorted_children(folder: int) -> list[str]:
    """The sort keys of an open folder's entries: a folder's name with "/" appended, so
    that a walk in this order yields full paths in byte-wise order (what the catalog's
    indexes use): "a.txt" < "a/b" < "a0"."""
    with os.scandir(folder) as it:
        items = [e.name + "/" if e.is_dir(follow_symlinks=False) else e.name for e in it]
    items.sort()
    return items


def _empty(folder: Path) -> int:
    """Remove everything inside *folder* (if it exists); return how many entries."""
    removed = 0
    if folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            removed += 1
    return removed
