"""The ``objects`` store: a content-addressed folder (``ab/cd/<sha256>``), write-once.

A put writes to a unique temp file under ``.tmp/`` in the store's root (the same
filesystem), hashing the bytes as they are written; only when they hash to the expected
SHA-256 is the file fsynced, made read-only and renamed to its final name, and the
folder fsynced. A final name therefore always holds exactly its content; a crash leaves
at most a temp file, removed by the next put of the same content or by ``clean``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from labkeep.errors import (
    LabkeepError,
    NotFound,
    StorageError,
    StoreUnavailable,
    TransferCorrupted,
)
from labkeep.integrity.hashing import Hashed, copy_hash
from labkeep.storage._tree import fsync_dir
from labkeep.storage.base import (
    CHUNK,
    Capabilities,
    ContentStore,
    Health,
    OnBytes,
    Stored,
)

TMP = ".tmp"
#: temp files not written to for this long are a crashed put's or save's (see clean)
STALE_TMP_SECONDS = 3600.0
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class ObjectsStore(ContentStore):
    kind = "objects"
    capabilities = Capabilities(content_addressed=True)

    def __init__(self, name: str, root: str | os.PathLike[str]) -> None:
        super().__init__(name)
        self.root = Path(root)
        #: content folders (``ab/cd``) this object made or saw (stage_file)
        self._folders: set[str] = set()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stage_dirs: list[str] = []

    # -- paths ----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.startswith(TMP):
            raise NotFound(f"{key!r} is not a key of {self.describe()}")
        return self.root.joinpath(*parts)

    def _ready(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(
                f"{self.describe()}: its folder {self.root} does not exist or is not mounted",
                hint="mount the disk (or create the folder), then run the same command again",
            )

    def _error(self, exc: OSError, doing: str) -> LabkeepError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageError(
                f"{self.describe()}: no space left on {self.root} while {doing}; "
                "nothing was recorded for what did not fit",
                hint="free space on that disk (or add a store), then run the same command "
                "again: what was copied is kept",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreUnavailable(
                f"{self.describe()}: {exc.strerror} while {doing} ({exc.filename or self.root})",
                hint="check the folder's permissions and mount (read-only?)",
            )
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not self.root.is_dir():
            return StoreUnavailable(
                f"{self.describe()}: its folder {self.root} is gone (unmounted?)",
                hint="mount the disk, then run the same command again",
            )
        return StorageError(
            f"{self.describe()}: {exc.strerror or exc} while {doing}",
            hint="check the disk, then run the same command again",
        )

    # -- writing --------------------------------------------------------------------------
    def put_file(
        self,
        key: str,
        path: str,
        *,
        sha256: bytes,
        size: int,
        on_bytes: OnBytes = None,
        retain_until: datetime | None = None,
        absent: bool = False,
    ) -> Stored:
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise NotFound(f"{path} is gone: nothing to copy from it") from None
        with handle:
            if hasattr(os, "posix_fadvise") and size > CHUNK:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return self.put_stream(
                key,
                iter(lambda: handle.read(CHUNK), b""),
                sha256=sha256,
                size=size,
                on_bytes=on_bytes,
            )

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        sha256: bytes,
        size: int,
        on_bytes: OnBytes = None,
        retain_until: datetime | None = None,
        absent: bool = False,
    ) -> Stored:
        self._ready()
        final = self._path(key)
        existing = self.stat(key)
        if existing is not None and existing.size == size:
            return existing  # content-addressed: the same name holds the same bytes
        tmp_dir = self.root / TMP
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            tmp_dir.mkdir(exist_ok=True)
            digest = hashlib.sha256()
            written = 0
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
            try:
                if size >= CHUNK and hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, size)  # a full disk fails here, at once
                for chunk in chunks:
                    view = memoryview(chunk)
                    digest.update(view)
                    done = 0
                    while done < len(view):
                        done += os.write(fd, view[done:])
                    written += len(view)
                    if on_bytes is not None:
                        on_bytes(len(view))
                if written != size or digest.digest() != sha256:
                    raise TransferCorrupted(
                        f"{self.describe()}: the bytes written for {key} "
                        f"({written} bytes, SHA-256 {digest.hexdigest()[:12]}…) are not the "
                        f"expected content ({size} bytes, {sha256.hex()[:12]}…): not stored",
                        hint="the source changed or is damaged: verify it, then try again",
                    )
                os.fchmod(fd, 0o444)
                os.fsync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except LabkeepError:
            raise  # TransferCorrupted (an OSError too): said as it is
        except OSError as exc:
            raise self._error(exc, f"storing {key}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return Stored(key, written, sha256)

    def put_new_file(self, path: str) -> tuple[Hashed, Stored]:
        """Store a file whose SHA-256 is not known yet, reading it once: copied to a temp
        file while it is hashed (a file that changes meanwhile raises FileChanged), made
        durable and read-only, then renamed to its content's name (or dropped when the
        store holds that content already)."""
        self._ready()
        tmp_dir = self.root / TMP
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            tmp_dir.mkdir(exist_ok=True)
            hashed = copy_hash(path, str(tmp), fsync=True)
            key = self.key_for(hashed.sha256)
            final = self._path(key)
            existing = self.stat(key)
            if existing is not None and existing.size == hashed.size:
                return hashed, existing
            os.chmod(tmp, 0o444)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except LabkeepError:
            raise
        except FileNotFoundError:
            if not self.root.is_dir():
                raise self._error(FileNotFoundError(errno.ENOENT, "gone"), "storing") from None
            raise
        except PermissionError:
            raise
        except OSError as exc:
            raise self._error(exc, f"storing {path}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return hashed, Stored(key, hashed.size, hashed.sha256)

    def stage_file(self, path: str) -> tuple[Path | None, Hashed]:
        """First half of a batched :meth:`put_new_file`: copy *path* into a temp file of
        the store while hashing it, read-only and with its content's folder made; not
        durable yet, and not under its content's name. Hand the temp file to
        :meth:`publish` (or :meth:`discard`). ``None`` instead of a temp file: the store
        holds that content already (the copy was removed).

        Each thread stages into a temp folder of its own (creating a file takes its
        folder's lock: one shared folder made parallel stagers wait on each other), and
        the content folders known to exist are remembered (no ``mkdir`` per file)."""
        self._ready()
        tmp_dir = self._stage_dir()
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}.part"
        try:
            hashed = copy_hash(path, tmp, fsync=False)
            try:
                hexed = hashed.sha256.hex()
                folder = f"{self.root}/{hexed[:2]}/{hexed[2:4]}"
                final = f"{folder}/{hexed}"
                try:
                    held = os.stat(final).st_size == hashed.size
                except FileNotFoundError:
                    held = False
                if held:
                    os.unlink(tmp)
                    return None, hashed
                os.chmod(tmp, 0o444)
                if folder not in self._folders:
                    os.makedirs(folder, exist_ok=True)
                    self._folders.add(folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return Path(tmp), hashed
        except LabkeepError:
            raise
        except (FileNotFoundError, PermissionError):
            if not self.root.is_dir():
                raise self._error(FileNotFoundError(errno.ENOENT, "gone"), "storing") from None
            raise
        except OSError as exc:
            raise self._error(exc, f"storing {path}") from exc

    def _stage_dir(self) -> str:
        """This thread's temp folder under ``.tmp/`` (made on first use)."""
        folder: str | None = getattr(self._local, "stage_dir", None)
        if folder is None or not os.path.isdir(folder):
            folder = f"{self.root}/{TMP}/{threading.get_ident():x}-{uuid.uuid4().hex[:8]}"
            os.makedirs(folder, exist_ok=True)
            self._local.stage_dir = folder
            with self._lock:
                self._stage_dirs.append(folder)
        return folder

    def close(self) -> None:
        """Remove this object's staging folders (those still holding a file are left)."""
        with self._lock:
            folders, self._stage_dirs = self._stage_dirs, []
        for folder in folders:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        super().close()

    def publish(self, staged: list[tuple[Path, Hashed]]) -> list[Stored]:
        """Make staged files durable and give each its content's name, with one
        ``syncfs`` before the renames and one after (an fsync of each file and folder
        where ``syncfs`` is not available): the write order of :meth:`put_new_file` at
        the cost of two system calls for the whole batch. (Another writer may have
        stored the same content meanwhile: the rename replaces it with the same bytes.)"""
        from labkeep.integrity.hashing import syncfs

        if not staged:
            return []
        try:
            if not syncfs(self.root):
                for tmp, _ in staged:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            stored: list[Stored] = []
            folders: set[Path] = set()
            for tmp, hashed in staged:
                key = self.key_for(hashed.sha256)
                final = self._path(key)
                try:
                    os.rename(tmp, final)
                except FileNotFoundError:  # its folder went away since staging
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(tmp, final)
                folders.add(final.parent)
                stored.append(Stored(key, hashed.size, hashed.sha256))
            if folders and not syncfs(self.root):
                for folder in folders:
                    fsync_dir(folder)
            return stored
        except OSError as exc:
            raise self._error(exc, "storing a batch") from exc
        finally:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def discard(self, tmp: Path) -> None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)

    # -- reading --------------------------------------------------------------------------
    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:  # settle now whether it is there; the file is opened when reading starts
            os.stat(path)
        except FileNotFoundError:
            self._ready()
            raise NotFound(f"{self.describe()} does not hold {key}") from None
        except OSError as exc:
            raise self._error(exc, f"reading {key}") from exc
        return self._read(path, key, start, end)

    def _read(self, path: Path, key: str, start: int, end: int | None) -> Iterator[bytes]:
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise NotFound(f"{self.describe()} does not hold {key}") from None
        except OSError as exc:
            raise self._error(exc, f"reading {key}") from exc
        yield from _read_range(handle, start, end)

    def stat(self, key: str) -> Stored | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            self._ready()
            return None
        except NotFound:
            return None
        except OSError as exc:
            raise self._error(exc, f"looking up {key}") from exc
        if not stat.S_ISREG(st.st_mode):
            return None
        name = key.rsplit("/", 1)[-1]
        try:
            sha = bytes.fromhex(name) if len(name) == 64 else None
        except ValueError:
            sha = None
        return Stored(key, st.st_size, sha)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, f"deleting {key}") from exc
        with contextlib.suppress(OSError):
            fsync_dir(path.parent)

    def list(self, prefix: str = "") -> Iterator[Stored]:
        self._ready()

        def walk(folder: Path, rel: str) -> Iterator[Stored]:
            try:
                children = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                return
            for child in children:
                key = f"{rel}{child.name}"
                if not rel and child.name == TMP:
                    continue
                if child.is_dir(follow_symlinks=False):
                    if key.startswith(prefix[: len(key)]):
                        yield from walk(Path(child.path), key + "/")
                elif key.startswith(prefix):
                    name = child.name
                    sha = None
                    if len(name) == 64:
                        with contextlib.suppress(ValueError):
                            sha = bytes.fromhex(name)
                    yield Stored(key, child.stat(follow_symlinks=False).st_size, sha)

        yield from walk(self.root, "")

    def check(self) -> Health:
        if not self.root.is_dir():
            return Health(False, f"its folder {self.root} does not exist or is not mounted")
        probe = self.root / TMP
        try:
            probe.mkdir(exist_ok=True)
            test = probe / f"probe-{uuid.uuid4().hex}"
            test.write_bytes(b"")
            test.unlink()
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            why = f"cannot write to {self.root}: {exc.strerror or exc}"
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and os.access(
                self.root, os.R_OK | os.X_OK
            ):  # readable: restores and audits can still use it
                return Health(True, why, free_bytes=None, writable=False)
            return Health(False, why)
        return Health(True, free_bytes=free)

    def clean(self, older_than: float | None = None) -> int:
        """Remove temp files left by crashed puts and saves; returns how many. With
        *older_than* (seconds), only files not written to for that long: a put or save
        running now (in this process or another) keeps its files."""
        removed = 0
        cutoff = None if older_than is None else time.time() - older_than

        def stale(entry: os.DirEntry[str]) -> bool:
            if cutoff is None:
                return True
            try:
                return entry.stat(follow_symlinks=False).st_mtime < cutoff
            except OSError:
                return False

        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / TMP) as it:
            for item in it:
                if item.is_dir(follow_symlinks=False):  # a stager's own folder
                    idle = stale(item)  # (before its files go: that changes its mtime)
                    with contextlib.suppress(FileNotFoundError), os.scandir(item.path) as sub:
                        for part in sub:
                            if stale(part):
                                with contextlib.suppress(OSError):
                                    os.unlink(part.path)
                                    removed += 1
                    if idle:
                        with contextlib.suppress(OSError):
                            os.rmdir(item.path)  # (only once empty)
                    continue
                if stale(item):
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
                        removed += 1
        return removed


def _read_range(handle: object, start: int, end: int | None) -> Iterator[bytes]:
    from io import FileIO

    assert isinstance(handle, FileIO)
    with handle:
        if start:
            handle.seek(start)
        remaining = None if end is None else max(0, end - start)
        while remaining is None or remaining > 0:
            block = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block
