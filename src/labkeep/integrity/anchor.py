"""Checkpoints of the audit chain's head, kept outside the catalog.

The hash chain proves that no event was changed, inserted or removed *before* the head
the catalog names; alone it cannot prove that this head is the true one: someone with
rights on the database can delete the newest events and point the head at an older one,
wipe the table, or rewrite an event and recompute every hash after it. A checkpoint is
the head at one moment, ``(event id, hash, when)``, written where the catalog's rights do
not reach. ``events --check`` then requires the newest checkpoint's event to be in the
chain with exactly that hash: history up to it can no longer be cut or rewritten unseen.

An :class:`Anchor` is a place that keeps checkpoints. :class:`FileAnchor` is an
append-only text file, one line per checkpoint, each line fsynced::

    <event id><TAB><64 hex digits: the event's hash><TAB><ISO 8601 UTC time written>

Other anchors (a WORM object store with S3 Object Lock, a syslog host) implement the
same two methods.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_LINE = re.compile(r"(\d{1,19})\t([0-9a-f]{64})\t([0-9T:.+\-Z]{1,40})")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Checkpoint:
    event_id: int
    hash: str
    #: when the checkpoint was written (ISO 8601, UTC)
    at: str

    def line(self) -> str:
        return f"{self.event_id}\t{self.hash}\t{self.at}\n"

    @classmethod
    def parse(cls, line: str) -> Checkpoint | None:
        match = _LINE.fullmatch(line.strip("\n"))
        if match is None:
            return None
        return cls(int(match[1]), match[2], match[3])


class Anchor(Protocol):
    """A place outside the catalog that keeps checkpoints of the chain's head."""

    #: where it is, for messages (a path, a URL)
    name: str

    def append(self, checkpoint: Checkpoint) -> None:
        """Keep *checkpoint* durably (raise OSError when that is not possible)."""
        ...

    def newest(self) -> Checkpoint | None:
        """The checkpoint of the highest event id kept here (None: none yet)."""
        ...


class FileAnchor:
    """Checkpoints appended to a text file (``O_APPEND``, fsync per line).

    Reading looks only at the end of the file (the newest lines), so it costs the same
    for ten lines as for ten million. Lines from writers racing each other may land out
    of order; the newest checkpoint is the highest event id among the last lines. A line
    cut short by a crash (no newline) is ignored.
    """

    #: bytes read from the end of the file to find the newest checkpoint
    TAIL = 1 << 16

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def append(self, checkpoint: Checkpoint) -> None:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_CLOEXEC, 0o644)
        try:
            os.write(fd, checkpoint.line().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def newest(self) -> Checkpoint | None:
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - self.TAIL)
                handle.seek(start)
                tail = handle.read()
        except FileNotFoundError:
            return None
        lines = tail.decode("ascii", "replace").split("\n")
        lines.pop()  # after the last newline: empty, or a line a crash cut short
        if start > 0 and lines:
            lines.pop(0)  # may start mid-line
        found = [cp for cp in map(Checkpoint.parse, lines) if cp is not None]
        return max(found, key=lambda cp: cp.event_id, default=None)
