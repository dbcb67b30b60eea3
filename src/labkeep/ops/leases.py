"""Leases: named locks held in the catalog, so that processes on several hosts can share
a keep.

A lease is a row (name, owner, expires_at). Taking it is one write transaction (a row
lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): it succeeds when there is no row or
the row has expired. The holder renews it from a heartbeat thread; a holder that died
(SIGKILL, a lost host) stops renewing and its lease can be taken once it expired, without
anybody removing a lock file by hand. A holder on the same host is checked at once: a
lease whose process is gone (its pid no longer runs with the same start time) is taken
over without waiting. A holder that could not renew in time (the catalog
was unreachable longer than the lease) is told through :attr:`Held.lost`, and checks it
before each commit it makes under the lease.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from labkeep.catalog import Lease, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import Busy, LabkeepError

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: seconds a lease lives without a heartbeat
TTL = 60.0
BUSY = "{what} is under way (by {holder}, since {since})"


@dataclass
class Held:
    name: str
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise Busy if the lease was lost (someone else may hold it now)."""
        if self.lost.is_set():
            raise Busy(
                f"lost the lease {self.name!r}: the catalog could not be reached to renew it",
                hint="run the same command again: what was done is kept",
            )


def owner_id() -> str:
    """``host:pid:start:random``: who holds a lease, and enough to tell, on the same
    host, whether that process is still alive (a pid reused later has another start)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_started(pid)}:{uuid.uuid4().hex[:8]}"


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return ""


def dead_here(owner: str) -> bool:
    """The holder ran on this host and its process is gone (killed, crashed): its lease
    need not be waited out."""
    parts = owner.split(":")
    if len(parts) < 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(start) and _started(pid) not in ("", start)


@contextlib.contextmanager
def lease(
    keep: Keep, name: str, *, what: str, ttl: float = TTL, busy: str = BUSY
) -> Iterator[Held]:
    """Hold the lease *name* while the block runs, or raise Busy at once.

    *busy* is the refusal's message, formatted with ``what`` (the holder's), ``holder``
    (its host and process id) and ``since``.
    """
    held = Held(name, owner_id())
    _acquire(keep, held, what, ttl, busy)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(keep, held, ttl, stop), name="labkeep-lease", daemon=True
    )
    beat.start()
    try:
        yield held
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(LabkeepError), keep.catalog.write() as session:
            session.execute(delete(Lease).where(Lease.name == name, Lease.owner == held.owner))


def _acquire(keep: Keep, held: Held, what: str, ttl: float, busy: str) -> None:
    now = utcnow()
    until = now + timedelta(seconds=ttl)
    with keep.catalog.write() as session:
        row = session.execute(
            select(Lease).where(Lease.name == held.name).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            row = Lease(
                name=held.name, owner=held.owner, what=what, acquired_at=now, expires_at=until
            )
            if add_unique(session, row):
                return
            row = session.execute(select(Lease).where(Lease.name == held.name)).scalar_one()
        if row.expires_at <= now or dead_here(row.owner):
            taken = session.execute(
                update(Lease)
                .where(Lease.name == held.name, Lease.owner == row.owner)
                .values(owner=held.owner, what=what, acquired_at=now, expires_at=until)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return
        host, pid = [*row.owner.split(":"), "", ""][:2]
        raise Busy(
            busy.format(
                what=row.what or held.name,
                holder=f"{host} pid {pid}",
                since=isoformat(row.acquired_at),
            ),
            hint="wait until it has finished, then run the command again (a lease left by a "
            f"process that died expires by itself, at the latest at {isoformat(row.expires_at)})",
        )


def _heartbeat(keep: Keep, held: Held, ttl: float, stop: threading.Event) -> None:
    interval = ttl / 3
    while not stop.wait(interval):
        try:
            with keep.catalog.write() as session:
                renewed = session.execute(
                    update(Lease)
                    .where(Lease.name == held.name, Lease.owner == held.owner)
                    .values(expires_at=utcnow() + timedelta(seconds=ttl))
                )
                if renewed.rowcount != 1:  # type: ignore[attr-defined]
                    held.lost.set()
                    return
        except LabkeepError:
            continue  # the catalog is away: try again, the lease is still valid a while
