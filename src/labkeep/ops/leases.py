"""Leases: named locks held in the catalog, so that processes on several hosts can share
a keep.

A lease is a row (name, owner, expires_at). Taking it is one write transaction (a row
lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): it succeeds when there is no row or
the row has expired. The holder renews it from a heartbeat thread; a holder that died
(SIGKILL, a lost host) stops renewing and its lease can be taken once it expired, without
anybody removing a lock file by hand. A holder that could not renew in time (the catalog
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
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def lease(keep: Keep, name: str, *, what: str, ttl: float = TTL) -> Iterator[Held]:
    """Hold the lease *name* while the block runs, or raise Busy at once."""
    held = Held(name, owner_id())
    _acquire(keep, held, what, ttl)
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


def _acquire(keep: Keep, held: Held, what: str, ttl: float) -> None:
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
        if row.expires_at <= now:
            taken = session.execute(
                update(Lease)
                .where(Lease.name == held.name, Lease.owner == row.owner)
                .values(owner=held.owner, what=what, acquired_at=now, expires_at=until)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return
        raise Busy(
            f"{row.what or held.name} is under way (by {row.owner.rsplit(':', 1)[0]}, "
            f"since {isoformat(row.acquired_at)})",
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
