"""The one interface every content store implements (``objects``, ``s3``).

A content store holds bytes under keys. Stores that labkeep writes replicas to are
content-addressed: the key of a content is derived from its SHA-256 (:meth:`key_for`), so
identical content is stored once per store, and adding content already present is a
no-op. Every ``put`` is given the SHA-256 the caller expects and either stores exactly
those bytes (checked while they are written, or by the server) or raises
:class:`~labkeep.errors.TransferCorrupted` and stores nothing under the key.

Write order (docs/formats.md): content is durable in the store and verified before the
caller records a replica row; a replica row is removed before :meth:`delete`.

The primary tree (``labkeep.storage.TreeStore``) is the human-readable copy and is
addressed by path, not by content; :mod:`labkeep.storage.content` gives the use cases one
way to read a file's bytes from whichever store holds them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

#: told the number of bytes of each chunk as it is moved (called from worker threads)
OnBytes = Callable[[int], None] | None
#: the size of the chunks that ``open`` yields and ``put_stream`` is fed
CHUNK = 1 << 20


@dataclass(frozen=True)
class Capabilities:
    #: keys are derived from the content's SHA-256 (:meth:`ContentStore.key_for`)
    content_addressed: bool = True
    #: retention (WORM) can be set on stored objects: they cannot be deleted or changed
    #: before their retain-until date, by anyone
    supports_object_lock: bool = False
    #: nothing can be written (a mounted archive, a store opened for reading)
    read_only: bool = False
    #: the store itself checks the SHA-256 sent with each put (a transfer damaged on
    #: the way is refused by the server, not only by labkeep)
    server_checksum: bool = False


@dataclass(frozen=True)
class Stored:
    """What a store holds under one key."""

    key: str
    size: int
    #: the SHA-256 the store recorded for it, when it keeps one (S3 ``ChecksumSHA256`` of
    #: a single-part upload; an objects folder's name); None when not known
    sha256: bytes | None = None
    #: WORM: the object cannot be deleted or changed before this time (UTC, naive)
    retain_until: datetime | None = None
    #: GOVERNANCE | COMPLIANCE when locked
    lock_mode: str | None = None
    #: storage class (S3) or None
    storage_class: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    objects: int
    bytes: int


@dataclass(frozen=True)
class Health:
    """The answer of :meth:`ContentStore.check`."""

    reachable: bool
    #: why not, for people (names the store and what to do)
    message: str = ""
    #: the retention mode a WORM store applies (None: no lock)
    lock_mode: str | None = None
    #: free bytes where the store can tell
    free_bytes: int | None = None
    #: False: its content can be read but nothing written or deleted (a backup disk
    #: mounted read-only for a restore); *message* says why
    writable: bool = True


class ContentStore(abc.ABC):
    """A place that holds content under keys (see the module docstring)."""

    kind: ClassVar[str]
    #: what this store can do (an instance may narrow or widen its class's, e.g. an S3
    #: bucket with Object Lock)
    capabilities: Capabilities = Capabilities()

    def __init__(self, name: str) -> None:
        self.name = name

    def key_for(self, sha256: bytes) -> str:
        """The key under which content with this SHA-256 is stored (``ab/cd/<hex>``)."""
        h = sha256.hex()
        return f"{h[:2]}/{h[2:4]}/{h}"

    @abc.abstractmethod
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
        """Store the local file *path* under *key*, verified against *sha256*.

        Content already stored under the key with that SHA-256 is a no-op (returns what is
        stored). *absent*: the caller knows the key is not stored (no labkeep process was
        interrupted while storing it), so a store may skip looking (an S3 HEAD per object);
        storing it again would be harmless, only wasteful. Returns only once the bytes are
        durable in the store. Raises TransferCorrupted (nothing stored) when what arrived
        does not hash to *sha256*, and a typed error naming the store for anything else.
        """

    @abc.abstractmethod
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
        """Like :meth:`put_file` for bytes that come as *chunks* (memory stays bounded)."""

    @abc.abstractmethod
    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of the object (to its end without *end*), in chunks.

        Raises NotFound when the key is not held. The iterator must be closed (or run to
        its end) to release the connection or file it holds.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> Stored | None:
        """What is stored under *key*, or None."""

    def has(self, key: str) -> bool:
        return self.stat(key) is not None

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (all of it). Raises RetentionLocked while it is under
        retention; removing a key that is not held is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[Stored]:
        """Every object whose key starts with *prefix*, streamed."""

    def usage(self) -> Usage:
        """Objects and bytes held (walks the store: slow on big stores)."""
        objects = total = 0
        for item in self.list():
            objects += 1
            total += item.size
        return Usage(objects, total)

    @abc.abstractmethod
    def check(self) -> Health:
        """Can the store be reached, with these credentials, and written to?"""

    def close(self) -> None:  # noqa: B027 (optional)
        """Release connections (a no-op where there are none)."""

    def describe(self) -> str:
        return f"{self.kind} store {self.name!r}"
