"""The byte plumbing of the ``s3`` store: request bodies that report progress, parts cut
from a file or a stream with one part in memory at most, and a ranged reader.

Nothing here imports boto3; :mod:`labkeep.storage.s3` hands in what it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from io import RawIOBase
from typing import Any

from labkeep.errors import TransferCorrupted
from labkeep.storage.base import CHUNK, OnBytes


class Progress:
    """Tells ``on_bytes`` about each byte of one put once, however often it is resent.

    Bodies report the absolute offset they reached in the object; only what goes past the
    highest offset reported so far counts (a retried request re-reads its body from the
    start, a restarted put its source), so the total told is the object's size.
    """

    def __init__(self, on_bytes: OnBytes) -> None:
        self._on_bytes = on_bytes
        self._high = 0
        self._lock = threading.Lock()

    def reached(self, offset: int) -> None:
        if self._on_bytes is None:
            return
        with self._lock:
            grown = offset - self._high
            if grown <= 0:
                return
            self._high = offset
        self._on_bytes(grown)


class Body:
    """A seekable, sized request body over bytes already in memory.

    botocore rewinds it (``seek(0)``) to resend a request; http.client reads it in
    blocks, so progress is reported as bytes leave, not when the request is built.
    """

    def __init__(self, data: memoryview, progress: Progress, offset: int) -> None:
        self._data = data
        self._pos = 0
        self._progress = progress
        self._offset = offset

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        block = self._data[self._pos : end].tobytes()
        self._pos += len(block)
        if block:
            self._progress.reached(self._offset + self._pos)
        return block

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._data))[whence]
        self._pos = min(max(0, base + pos), len(self._data))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._data)


def _size_error(where: str, got: str, size: int) -> TransferCorrupted:
    return TransferCorrupted(
        f"{where}: the source gave {got} where {size} bytes were expected: not stored",
        hint="the source changed or is damaged: verify it, then try again",
    )


def file_parts(handle: RawIOBase, size: int, part_size: int, where: str) -> Iterator[memoryview]:
    """*size* bytes of *handle* as parts of *part_size* (the last one shorter).

    One buffer is reused: a part is valid until the next one is asked for. Raises
    TransferCorrupted when the file is shorter or longer than *size*.
    """
    buffer = bytearray(min(size, part_size))
    view = memoryview(buffer)
    done = 0
    while True:
        want = min(part_size, size - done)
        filled = 0
        while filled < want:
            got = handle.readinto(view[filled:want])
            if not got:
                raise _size_error(where, f"{done + filled} bytes", size)
            filled += got
        done += filled
        if done >= size:
            if handle.read(1):
                raise _size_error(where, "more bytes", size)
            yield view[:filled]
            return
        yield view[:filled]


def stream_parts(
    chunks: Iterable[bytes], size: int, part_size: int, where: str
) -> Iterator[memoryview]:
    """Like :func:`file_parts` for bytes that come as chunks of any size."""
    buffer = bytearray(min(size, part_size))
    view = memoryview(buffer)
    filled = done = 0
    source = iter(chunks)
    while True:
        want = min(part_size, size - done)
        while filled < want:
            chunk = next(source, None)
            if chunk is None:
                raise _size_error(where, f"{done + filled} bytes", size)
            take = min(len(chunk), want - filled)
            view[filled : filled + take] = memoryview(chunk)[:take]
            filled += take
            if take < len(chunk):
                raise _size_error(where, "more bytes", size)
        done += filled
        if done >= size:
            if any(len(rest) for rest in source):
                raise _size_error(where, "more bytes", size)
            yield view[:filled]
            return
        yield view[:filled]
        filled = 0


class RangeReader(Iterator[bytes]):
    """The bytes ``[start, end)`` of one object as chunks of at most :data:`CHUNK`.

    *get(first, last, etag)* opens a GetObject for bytes ``first..last`` (inclusive;
    last None: to the end) and returns ``(body, etag)``; a read that breaks off is
    resumed where it stopped, from the same object (its ETag), up to *attempts* times.
    *get* raises typed errors itself; *translate* turns a failed read into one (or returns
    the exception itself when it is not the network's).
    """

    def __init__(
        self,
        get: Callable[[int, int | None, str | None], tuple[Any, str | None]],
        start: int,
        end: int | None,
        *,
        attempts: int,
        resumable: Callable[[BaseException], bool],
        translate: Callable[[BaseException], Exception],
    ) -> None:
        self._get = get
        self._pos = start
        self._end = end
        self._attempts = attempts
        self._resumable = resumable
        self._translate = translate
        self._failures = 0
        self._body: Any = None
        self._etag: str | None = None
        self._body, self._etag = get(start, None if end is None else end - 1, None)

    def __next__(self) -> bytes:
        while True:
            if self._body is None:
                raise StopIteration
            want = CHUNK if self._end is None else min(CHUNK, self._end - self._pos)
            if want <= 0:
                self.close()
                raise StopIteration
            try:
                block: bytes = self._body.read(want)
            except Exception as exc:
                self.close()
                self._failures += 1
                if not self._resumable(exc) or self._failures >= self._attempts:
                    error = self._translate(exc)
                    if error is exc:
                        raise
                    raise error from exc
                last = None if self._end is None else self._end - 1
                self._body, self._etag = self._get(self._pos, last, self._etag)
                continue
            if not block:
                self.close()
                raise StopIteration
            self._pos += len(block)
            return block

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    def __del__(self) -> None:
        self.close()
