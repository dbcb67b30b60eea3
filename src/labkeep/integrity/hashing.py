"""The hashing engine: one pass per file (read a chunk, hash it, write it).

hashlib's SHA-256 and file I/O release the GIL, so callers run these functions on a
thread pool. Each thread reuses one buffer. Every function checks that the source did
not change while it was read (size and mtime before and after, and bytes read).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass

from labkeep.errors import LabkeepError

CHUNK = 1 << 20
#: bytes of a copy after which its write-back to disk is started (see _start_writeback)
WRITEBACK_BYTES = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_local = threading.local()


class FileChanged(LabkeepError):
    """The file changed (size or mtime) while it was being read."""

    code = "changed"


class NotRegularFile(LabkeepError):
    code = "not-a-file"


@dataclass(frozen=True)
class Hashed:
    sha256: bytes
    size: int
    mtime_ns: int


def _buffer(chunk: int) -> memoryview:
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None or len(buf) != chunk:
        buf = memoryview(bytearray(chunk))
        _local.buf = buf
    return buf


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, start: int, end: int) -> int:
    """Start writing *fd*'s bytes [start, end) to disk, without waiting; returns *end*.

    Only a head start for the ``syncfs`` that later makes the batch durable: the disk
    works while the CPUs go on hashing, instead of after them.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, start, end - start, _SYNC_FILE_RANGE_WRITE)
    return end


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _check_unchanged(path: str, fd: int, before: os.stat_result, read: int) -> None:
    after = os.fstat(fd)
    if after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        raise FileChanged(f"{path!r} changed while it was read (size or mtime differ)")
    if read != before.st_size:
        raise FileChanged(f"{path!r} changed while it was read ({read} of {before.st_size} bytes)")


#: told the number of bytes of each chunk as it is done (from worker threads)
OnBytes = Callable[[int], None] | None


def hash_file(path: str, chunk: int = CHUNK, *, on_bytes: OnBytes = None) -> Hashed:
    """SHA-256 of a regular file, without following symlinks."""
    fd, st = _open_regular(path)
    try:
        if st.st_size > chunk and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        digest = hashlib.sha256()
        buf = _buffer(chunk)
        total = 0
        while n := os.readv(fd, [buf]):
            digest.update(buf[:n])
            total += n
            if on_bytes is not None:
                on_bytes(n)
            if total >= st.st_size:
                break  # no read for the end of file: the fstat below sees any growth
        _check_unchanged(path, fd, st, total)
        return Hashed(digest.digest(), total, st.st_mtime_ns)
    finally:
        os.close(fd)


def copy_hash(
    src: str,
    dst: str,
    *,
    chunk: int = CHUNK,
    fsync: bool = True,
    mtime_ns: int | None = None,
    on_bytes: OnBytes = None,
) -> Hashed:
    """Copy *src* to the new file *dst* in one pass, hashing what was read.

    *dst* must not exist (it is a partial file's unique name). The copy gets the
    source's mtime (or *mtime_ns*). With *fsync* the data is durable when this returns.
    On any error the partial *dst* is removed.
    """
    fd, st = _open_regular(src)
    out = -1
    try:
        if st.st_size > chunk and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        if st.st_size >= CHUNK and hasattr(os, "posix_fallocate"):
            # reserve the space first: a full disk fails here, before any copying
            os.posix_fallocate(out, 0, st.st_size)
        digest = hashlib.sha256()
        buf = _buffer(chunk)
        total = started = 0
        while n := os.readv(fd, [buf]):
            view = buf[:n]
            digest.update(view)
            written = 0
            while written < n:
                written += os.write(out, view[written:])
            total += n
            if on_bytes is not None:
                on_bytes(n)
            if total - started >= WRITEBACK_BYTES:
                started = _start_writeback(out, started, total)
            if total >= st.st_size:
                break  # no read for the end of file: the fstat below sees any growth
        _check_unchanged(src, fd, st, total)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns if mtime_ns is None else mtime_ns))
        if fsync:
            os.fsync(out)
        elif started:  # a big file: start the rest too (small ones wait for the syncfs)
            _start_writeback(out, started, total)
        return Hashed(digest.digest(), total, st.st_mtime_ns)
    except BaseException:
        if out >= 0:
            os.close(out)
            out = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        raise
    finally:
        if out >= 0:
            os.close(out)
        os.close(fd)


def link_hash(src: str, dst: str, *, fsync: bool = True, on_bytes: OnBytes = None) -> Hashed:
    """Hard-link *src* as *dst* and hash it (the same inode: nothing is copied)."""
    hashed = hash_file(src, on_bytes=on_bytes)
    os.link(src, dst, follow_symlinks=False)
    try:
        st = os.lstat(dst)
        if st.st_size != hashed.size or st.st_mtime_ns != hashed.mtime_ns:
            raise FileChanged(f"{src!r} changed while it was linked")
        if fsync:
            fd = os.open(dst, os.O_RDONLY | _O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        os.unlink(dst)
        raise
    return hashed


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_syncfs = _load_syncfs()


def can_syncfs() -> bool:
    """Whether :func:`syncfs` works here (Linux); else callers fsync file by file."""
    return _syncfs is not None


def syncfs(path: str | os.PathLike[str]) -> bool:
    """Flush every dirty page and inode of the filesystem holding *path*.

    One call makes a whole batch of files durable; returns False where syncfs(2) is not
    available (callers then fsync file by file).
    """
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True
