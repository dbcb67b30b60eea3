"""Reading a file's content from whichever store holds a good copy.

The tree is tried first (a regular file of the catalog's size); when it has no copy (the
dataset's tree copy was dropped, or the file is missing or damaged there) the bytes come
from the nearest content store whose replica is marked good. Downloads, zips and exports
call :func:`open_content`, so they keep working for cold data.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from sqlalchemy import select

from labkeep.catalog import Replica, Store
from labkeep.errors import LabkeepError, NotFound, StoreUnavailable

if TYPE_CHECKING:
    from pathlib import Path

    from labkeep.keep import Keep
    from labkeep.storage.base import ContentStore

TIER_ORDER = {"hot": 0, "warm": 1, "cold": 2}


class StoreReader(io.RawIOBase):
    """A read-only, forward-only file over a store's object (closed with its store)."""

    def __init__(self, store: ContentStore, key: str, size: int, start: int = 0) -> None:
        super().__init__()
        self.store, self.key, self.size = store, key, size
        self._chunks: Iterator[bytes] = store.open(key, start)
        self._buffer = b""
        self.position = start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._buffer:
            self._buffer = next(self._chunks, b"")
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self.position += n
        return n

    def ranges(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end) in chunks, from the same object."""
        return self.store.open(self.key, start, end)

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self.store.close()
        super().close()


def tree_copy(path: Path, size: int, mtime_ns: int | None = None) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == size
        and (mtime_ns is None or st.st_mtime_ns == mtime_ns)
    )


def open_content(
    keep: Keep, local_path: Path, size: int, sha256: bytes, mtime_ns: int | None = None
) -> BinaryIO:
    """The tree's copy at *local_path*, else a good replica's bytes (see the module doc).

    With *mtime_ns* (the entry's), a tree copy counts only when size and mtime both match
    (the quick check): the working tree of a versioned dataset may hold newer content at
    the path of an old version's file, which then comes from a store. When no store holds
    it, a tree copy of the right size is still served (as before the quick check).
    Raises NotFound naming where to look when no reachable store has a good copy.
    """
    if tree_copy(local_path, size, mtime_ns):
        try:
            return open(local_path, "rb")
        except OSError:
            pass
    try:
        return open_replica(keep, size, sha256)
    except NotFound:
        if mtime_ns is None or not tree_copy(local_path, size):
            raise
    return open(local_path, "rb")


def open_replica(keep: Keep, size: int, sha256: bytes) -> BinaryIO:
    from labkeep.ops.stores import backend

    with keep.catalog.read() as session:
        rows = session.execute(
            select(Replica.key, Store)
            .join(Store, Store.id == Replica.store_id)
            .where(Replica.sha256 == sha256, Replica.status == "ok")
        ).all()
        candidates = []
        for key, row in rows:
            session.expunge(row)
            candidates.append((key, row))
    candidates.sort(key=lambda kr: (TIER_ORDER.get(kr[1].tier, 9), kr[1].id))
    reasons = []
    for key, row in candidates:
        try:
            store = backend(row)
            stored = store.stat(key)
        except (StoreUnavailable, OSError) as exc:
            reasons.append(exc.message if isinstance(exc, LabkeepError) else str(exc))
            continue
        if stored is None or stored.size != size:
            store.close()
            reasons.append(f"store {row.name!r} no longer holds it whole")
            continue
        return io.BufferedReader(StoreReader(store, key, size), 1 << 20)
    raise NotFound(
        "the tree holds no copy of this file"
        + (f" and no store could serve one ({'; '.join(reasons)})" if reasons else ""),
        hint="bring it back with 'labkeep get PROJECT/DATASET', or see 'labkeep whereis'",
    )
