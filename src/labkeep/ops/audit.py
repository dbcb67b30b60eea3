"""The audit log: append-only, hash-chained events.

Each event's hash is SHA-256 over the previous event's hash and the event's own
canonical fields, so changing, removing or reordering any row breaks the chain from
that row on. The database also refuses UPDATE and DELETE on the table (triggers); the
chain is what proves history intact even to someone who doubts the database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labkeep.catalog import Event, KeepState
from labkeep.clock import isoformat, utcnow

if TYPE_CHECKING:
    from labkeep.keep import Keep

GENESIS = "0" * 64
HEAD_KEY = "event_head"


def canonical(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    prev_hash: str, at: datetime, actor: str, action: str, target: str, details: str
) -> str:
    payload = "\x1f".join(
        [prev_hash, at.isoformat(timespec="microseconds"), actor, action, target, details]
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def append_event(
    session: Session, actor: str, action: str, target: str, details: dict[str, Any]
) -> Event:
    """Append one event in the caller's transaction (the caller commits).

    The head of the chain lives in ``keep_state`` and is locked for update, so two
    writers on PostgreSQL append one after the other instead of forking the chain.
    """
    head = session.execute(
        select(KeepState).where(KeepState.key == HEAD_KEY).with_for_update()
    ).scalar_one_or_none()
    prev = head.value if head is not None else GENESIS
    at = utcnow()
    text = canonical(details)
    digest = event_hash(prev, at, actor, action, target, text)
    row = Event(
        at=at, actor=actor, action=action, target=target, details=text, prev_hash=prev, hash=digest
    )
    session.add(row)
    if head is None:
        session.add(KeepState(key=HEAD_KEY, value=digest))
    else:
        head.value = digest
    session.flush()
    return row


def event_record(row: Event) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": isoformat(row.at),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "details": json.loads(row.details),
        "hash": row.hash,
    }


def events(
    keep: Keep,
    *,
    target: str | None = None,
    action: str | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """The newest events first, optionally only those on *target* (and below it)."""
    _check_events_access(keep, target)
    query = select(Event).order_by(Event.id.desc())
    if target:
        # what is on *target* and below it: an exact prefix comparison (not LIKE, whose
        # "_" and "%" match other names; not a range, which depends on collations)
        below = target + "/"
        query = query.where(
            (Event.target == target) | (func.substr(Event.target, 1, len(below)) == below)
        )
    if action:
        query = query.where(Event.action == action)
    if limit:
        query = query.limit(limit)
    with keep.catalog.read() as session:
        return [event_record(row) for row in session.execute(query).scalars()]


def _check_events_access(keep: Keep, target: str | None) -> None:
    """Everyone's events are for site admins; a project's or dataset's for its readers."""
    from labkeep.access import check
    from labkeep.names import parse_address
    from labkeep.ops._access import find_dataset, find_project, project_resource

    if not target:
        check(keep.principal, "events.all")
        return
    addr = parse_address(target)
    with keep.catalog.read() as session:
        if addr.dataset:
            find_dataset(keep, session, addr.project, addr.dataset, "events.read")
        else:
            project = find_project(keep, session, addr.project)
            check(keep.principal, "events.read", project_resource(session, project))


@dataclass
class ChainCheck:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "events-check",
            "status": "ok" if self.ok else "error",
            "checked": self.checked,
            "first_bad_id": self.first_bad_id,
            "message": self.message,
        }


def check_events(keep: Keep, *, batch: int = 5000) -> ChainCheck:
    """Recompute the whole chain; report the first row where it breaks."""
    from labkeep.access import check

    check(keep.principal, "events.all")
    prev = GENESIS
    checked = 0
    last_id = 0
    with keep.catalog.read() as session:
        while True:
            rows = (
                session.execute(
                    select(Event).where(Event.id > last_id).order_by(Event.id).limit(batch)
                )
                .scalars()
                .all()
            )
            if not rows:
                break
            for row in rows:
                expected = event_hash(prev, row.at, row.actor, row.action, row.target, row.details)
                if row.prev_hash != prev or row.hash != expected:
                    return ChainCheck(
                        False,
                        checked,
                        row.id,
                        f"event {row.id} does not match the chain: it or an earlier event "
                        "was altered, removed or inserted",
                    )
                prev = row.hash
                checked += 1
                last_id = row.id
            session.expunge_all()
        head = session.execute(
            select(KeepState.value).where(KeepState.key == HEAD_KEY)
        ).scalar_one_or_none()
    if head is not None and head != prev:
        return ChainCheck(
            False, checked, None, "the newest events were removed (chain head does not match)"
        )
    return ChainCheck(True, checked, None, f"{checked} events, chain intact")
