"""The source scan: every regular file below the source, in the catalog's path order.

The catalog compares paths byte-wise (SQLite's BINARY, PostgreSQL's "C"), and the plan
merges the scan with the catalog's entries, so the scan yields files in exactly that
order of their full relative paths: each folder's children are sorted by their name,
with a ``/`` after a folder's name. That makes a depth-first walk sort globally: every
path below folder ``d`` starts with ``d/``, and two different keys of one folder are
never a proper prefix of one another except ``f`` (a file) before ``f...``, which sorts
first either way. (For valid UTF-8 names, Python's code-point order of ``str`` is the
byte order of their UTF-8; names that are not valid UTF-8 are refused, not merged.)

Memory holds the sorted names of the folders on the current path only, never the whole
list. With a progress bar the scan is spooled to an unnamed temporary file instead
(:class:`Spool`): the bar needs the totals before the copying starts, and the files
seen are what is copied, so the source is walked once either way.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labkeep.errors import SourceError, UsageError
from labkeep.names import check_relpath
from labkeep.results import Result

RAW = "raw"


@dataclass(slots=True)
class Item:
    """One source file on its way into the dataset."""

    rel: str  # path below the source root, "/"-separated
    src: str
    size: int
    mtime_ns: int
    #: copy | link | adopt (final file exists uncommitted) | compare (entry exists)
    mode: str = "copy"
    known_sha: bytes | None = None
    #: compare: the entry's row id, size and mtime in the catalog
    entry_id: int | None = None
    known_size: int = 0
    known_mtime: int = 0
    #: compare: the tree copy may be missing or damaged (re-hash it; restore if so)
    tree_suspect: bool = False
    #: bytes of it already shown as progress (counted while it is read)
    counted: int = 0


#: what the scan yields: a file to plan, or a record for something not ingested
Scanned = Item | Result


def scan(source: Path, dataset: str) -> Iterator[Scanned]:
    """Every regular file below *source* in path order; a record for each refusal."""
    if not source.is_dir():
        st = source.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(
                f"{source} is neither a folder nor a regular file",
                hint="give the folder (or the one file) the instrument wrote",
            )
        yield Item(source.name, str(source), st.st_size, st.st_mtime_ns)
        return
    # one frame per open folder: (prefix below the source, its path, sorted keys, next)
    stack: list[tuple[str, str, list[str], int]] = []
    listed = _list(str(source), "", dataset)
    if isinstance(listed, Result):
        yield listed
        return
    stack.append(("", str(source), listed, 0))
    while stack:
        prefix, folder, keys, at = stack[-1]
        if at == len(keys):
            stack.pop()
            continue
        stack[-1] = (prefix, folder, keys, at + 1)
        key = keys[at]
        is_dir = key.endswith("/")
        name = key[:-1] if is_dir else key
        rel = prefix + name
        path = f"{folder}/{name}"
        try:
            check_relpath(rel)
        except UsageError as exc:
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            yield _refused(dataset, shown, "impossible", f"{exc.message}; not ingested")
            continue
        try:
            st = os.lstat(path)
        except OSError as exc:
            yield _refused(dataset, rel, "error", f"cannot stat: {exc.strerror}")
            continue
        mode = st.st_mode
        if stat.S_ISREG(mode):
            yield Item(rel, path, st.st_size, st.st_mtime_ns)
        elif stat.S_ISDIR(mode):
            listed = _list(path, rel + "/", dataset)
            if isinstance(listed, Result):
                yield listed
            else:
                stack.append((rel + "/", path, listed, 0))
        elif stat.S_ISLNK(mode):
            yield _refused(dataset, rel, "impossible", "symbolic link: not followed, not ingested")
        else:
            yield _refused(
                dataset, rel, "impossible", "special file (device, FIFO or socket): not ingested"
            )


def _list(folder: str, prefix: str, dataset: str) -> list[str] | Result:
    """The sort keys of a folder's children: names, with "/" after a folder's name.

    A child that is a folder by its directory entry but something else by the lstat
    that follows (replaced meanwhile) still sorts as listed; the plan tolerates that.
    """
    try:
        with os.scandir(folder) as it:
            keys = [e.name + "/" if e.is_dir(follow_symlinks=False) else e.name for e in it]
    except OSError as exc:
        return _refused(dataset, prefix, "error", f"cannot read folder: {exc.strerror}")
    keys.sort()
    return keys


def _refused(dataset: str, rel: str, status: str, message: str) -> Result:
    return Result("ingest", status, path=f"{RAW}/{rel}", dataset=dataset, message=message)


class Spool:
    """The scan written to an unnamed temporary file, and read back: flat memory.

    Records are ``size mtime_ns rel-as-UTF-8-with-surrogateescape NUL`` (a path never
    holds a NUL byte); refusals are yielded while spooling, not stored.
    """

    def __init__(self, folder: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by close())
        self._root = ""
        self.files = 0
        self.bytes = 0

    def write(self, scanned: Iterator[Scanned], source: Path) -> Iterator[Result]:
        """Spool the files of *scanned*; yield its refusals as they come."""
        self._root = str(source) if source.is_dir() else str(source.parent)
        write = self._file.write
        buffer: list[bytes] = []
        for one in scanned:
            if isinstance(one, Result):
                yield one
                continue
            self.files += 1
            self.bytes += one.size
            buffer.append(
                f"{one.size} {one.mtime_ns} {one.rel}\0".encode("utf-8", "surrogateescape")
            )
            if len(buffer) >= 4096:
                write(b"".join(buffer))
                buffer.clear()
        write(b"".join(buffer))
        self._file.flush()

    def read(self) -> Iterator[Item]:
        """The spooled files, in the order they were scanned."""
        self._file.seek(0)
        root = self._root
        tail = b""
        while chunk := self._file.read(1 << 20):
            records = (tail + chunk).split(b"\0")
            tail = records.pop()
            for record in records:
                size, mtime, rel = record.decode("utf-8", "surrogateescape").split(" ", 2)
                yield Item(rel, f"{root}/{rel}", int(size), int(mtime))

    def close(self) -> None:
        self._file.close()
