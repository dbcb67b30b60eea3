"""Zips written as a stream of byte chunks: no temp file, no thread, flat memory.

Files are stored uncompressed (instrument data rarely compresses) in ZIP64 form, each
followed by a data descriptor with its CRC-32 (known only once the bytes went out). The
central directory, which a zip needs at its end and which grows with the number of
files, is spooled to a temporary file (in memory up to 1 MiB) instead of being held as
one object per file. The writer is a plain generator: when the client goes away and the
response drops it, ``close()`` runs its ``finally`` blocks and every file is closed.

Entry names are made safe for every extractor (:class:`ZipNames`): instrument file names
may carry backslashes or drive letters (``raw/..\\..\\evil.bat``, ``C:\\x``) that Windows
tools treat as folder separators or absolute paths.
"""

from __future__ import annotations

import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 20
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_ZIP64 = struct.Struct("<HHQQ")
_DESCRIPTOR = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_CENTRAL_ZIP64 = struct.Struct("<HHQQQ")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_VERSION = 45  # ZIP64
_FLAGS = 0x0808  # sizes and CRC in a data descriptor; names in UTF-8
_REGULAR_FILE = 0o100644 << 16
_MADE_ON_UNIX = 3 << 8

#: characters that Windows refuses in names or reads as separators or drive letters
_UNSAFE = set('\\:<>"|?*') | {chr(c) for c in range(32)} | {"\x7f"}


@dataclass(frozen=True)
class Member:
    """One file of a zip: its name in the zip, size, mtime, and how to open it."""

    name: str
    size: int
    mtime_ns: int
    open: Callable[[], BinaryIO]


def safe_component(part: str) -> str:
    """One path component as every extractor writes it inside its target folder (and
    Windows can open: a device name such as ``CON`` or ``com1.txt`` gets a ``_`` first)."""
    from labkeep.names import reserved_name

    cleaned = "".join("_" if ch in _UNSAFE else ch for ch in part).rstrip(" .")
    if cleaned in ("", ".", ".."):
        return "_"
    return "_" + cleaned if reserved_name(cleaned) else cleaned


class ZipNames:
    """Names in a zip for paths of a dataset: a path whose components are all safe keeps
    its name; another one gets its unsafe characters replaced by ``_``, and ``~2``,
    ``~3``... before its extension if that name is taken by another file (*exists* tells
    whether the dataset has a file at that path; the names given here are remembered).
    Memory grows only with the number of names that had to change.
    """

    def __init__(self, exists: Callable[[str], bool] = lambda _path: False) -> None:
        self.exists = exists
        self.given: set[str] = set()

    def __call__(self, path: str) -> str:
        parts = [safe_component(part) for part in path.split("/")]
        name = "/".join(parts)
        if name == path:
            return name
        stem, dot, ext = parts[-1].rpartition(".")
        if not stem:
            stem, dot, ext = ext, "", ""
        number = 1
        while name in self.given or self.exists(name):
            number += 1
            parts[-1] = f"{stem}~{number}{dot}{ext}"
            name = "/".join(parts)
        self.given.add(name)
        return name


def _dos_time(mtime_ns: int) -> tuple[int, int]:
    t = time.localtime(max(mtime_ns // 1_000_000_000, 315532800))  # not before 1980
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2), (
        (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday
    )


def stream_zip(members: Iterable[Member], chunk: int = CHUNK) -> Iterator[bytes]:
    """The zip of *members*, as byte chunks of about *chunk* bytes."""
    offset = 0
    count = 0
    central = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 (closed below)
    try:
        for member in members:
            name = member.name.encode("utf-8")
            dos_time, dos_date = _dos_time(member.mtime_ns)
            header = _LOCAL.pack(
                0x04034B50, _VERSION, _FLAGS, 0, dos_time, dos_date, 0,
                0xFFFFFFFF, 0xFFFFFFFF, len(name), _LOCAL_ZIP64.size,
            )  # fmt: skip
            header += name + _LOCAL_ZIP64.pack(1, 16, member.size, member.size)
            yield header
            crc = 0
            written = 0
            handle = member.open()
            try:
                while written < member.size:
                    data = handle.read(min(chunk, member.size - written))
                    if not data:
                        raise OSError(f"{member.name} is shorter than the catalog says")
                    crc = zlib.crc32(data, crc)
                    written += len(data)
                    yield data
            finally:
                handle.close()
            yield _DESCRIPTOR.pack(0x08074B50, crc, written, written)
            record = _CENTRAL.pack(
                0x02014B50, _MADE_ON_UNIX | _VERSION, _VERSION, _FLAGS, 0,
                dos_time, dos_date, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name),
                _CENTRAL_ZIP64.size, 0, 0, 0, _REGULAR_FILE, 0xFFFFFFFF,
            )  # fmt: skip
            central.write(record + name + _CENTRAL_ZIP64.pack(1, 24, written, written, offset))
            offset += len(header) + written + _DESCRIPTOR.size
            count += 1
        start = offset
        central.seek(0)
        while block := central.read(chunk):
            offset += len(block)
            yield block
        size = offset - start
        end = _END.pack(
            0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
            min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF), 0,
        )  # fmt: skip
        yield (
            _END64.pack(0x06064B50, 44, _VERSION, _VERSION, 0, 0, count, count, size, start)
            + _LOCATOR.pack(0x07064B50, 0, offset, 1)
            + end
        )
    finally:
        central.close()
