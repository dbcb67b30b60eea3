"""The Linux immutable inode flag (``chattr +i``), set through the FS_IOC_SETFLAGS ioctl.

Setting it needs CAP_LINUX_IMMUTABLE (root, usually) and a filesystem that supports it
(ext4, xfs, btrfs; not NFS or tmpfs). Callers treat failure as "not available here" and
fall back to read-only permission bits, telling the user so.
"""

from __future__ import annotations

import array
import fcntl
import os
import sys

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


def _open_for_flags(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))


def get_immutable(path: str) -> bool:
    """Whether *path* carries the immutable flag (False where flags are unsupported)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fd = _open_for_flags(path)
    except OSError:
        return False
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return bool(buf[0] & FS_IMMUTABLE_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


def set_immutable(path: str, on: bool) -> bool:
    """Set or clear the immutable flag; return whether it changed.

    Raises OSError where that is not possible (no CAP_LINUX_IMMUTABLE, a filesystem
    without inode flags, not Linux).
    """
    if not sys.platform.startswith("linux"):
        raise OSError(95, "immutable flag is only supported on Linux")
    fd = _open_for_flags(path)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        flags = buf[0] | FS_IMMUTABLE_FL if on else buf[0] & ~FS_IMMUTABLE_FL
        if flags == buf[0]:
            return False
        buf[0] = flags
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf, False)
        return True
    finally:
        os.close(fd)
