"""The audit log: append-only, hash-chained events.

Each event's hash is SHA-256 over the previous event's hash and the event's own
canonical fields, so changing, removing or reordering any row breaks the chain from
that row on. The database also refuses UPDATE and DELETE on the table (triggers); the
chain is what proves history intact even to someone who doubts the database.

The chain's head is also checkpointed outside the catalog (see
:mod:`labkeep.integrity.anchor`): after every committed version (ingest, seal, unseal)
and every verify run, ``(event id, hash, time)`` is appended to each anchor, so that
someone who can rewrite the whole database still cannot cut off or re-chain the history
up to the newest checkpoint unseen. The write order is: the event's transaction
commits, then the checkpoint is written (a crash in between leaves an older checkpoint,
which is still true).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labkeep.catalog import Event, KeepState, Version
from labkeep.clock import isoformat, utcnow
from labkeep.errors import StorageError
from labkeep.integrity.anchor import Anchor, Checkpoint, FileAnchor

if TYPE_CHECKING:
    from labkeep.keep import Keep

GENESIS = "0" * 64
HEAD_KEY = "event_head"
#: the anchor file in the tree's private folder (``TREE/.labkeep/``)
ANCHOR_FILE = "audit-anchor.log"


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


def anchors(keep: Keep) -> list[Anchor]:
    """Where the chain's head is checkpointed, outside the catalog.

    So far one append-only file in the tree's private folder (on a facility's NAS, not
    where the catalog's database runs); WORM stores join this list once stores exist.
    """
    from labkeep.storage import PRIVATE_DIR

    return [FileAnchor(keep.tree.base / PRIVATE_DIR / ANCHOR_FILE)]


def checkpoint(keep: Keep, event: Event) -> Checkpoint:
    """Write *event* (appended by a transaction that has committed) to every anchor."""
    point = Checkpoint(int(event.id), event.hash, isoformat(utcnow()) or "")
    for anchor in anchors(keep):
        try:
            anchor.append(point)
        except OSError as exc:
            raise StorageError(
                f"cannot write the audit checkpoint to {anchor.name}: {exc.strerror or exc}",
                hint="what was done is committed and recorded in the audit log; only this "
                "checkpoint of it is missing: free space (or fix permissions) there, and the "
                "next version or verify writes a newer one",
            ) from exc
    return point


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
    #: the newest checkpoint outside the catalog that the chain was compared with
    anchor: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "events-check",
            "status": "ok" if self.ok else "error",
            "checked": self.checked,
            "first_bad_id": self.first_bad_id,
            "message": self.message,
            "anchor": self.anchor,
        }


def _newest_checkpoint(keep: Keep) -> tuple[str, Checkpoint] | None:
    """The checkpoint with the highest event id over all anchors, and where it is."""
    found: list[tuple[str, Checkpoint]] = []
    for anchor in anchors(keep):
        try:
            point = anchor.newest()
        except OSError as exc:
            raise StorageError(
                f"cannot read the audit checkpoints in {anchor.name}: {exc.strerror or exc}"
            ) from exc
        if point is not None:
            found.append((anchor.name, point))
    return max(found, key=lambda item: item[1].event_id, default=None)


def check_events(keep: Keep, *, batch: int = 5000) -> ChainCheck:
    """Recompute the whole chain; report the first row where it breaks.

    Then compare it with the newest checkpoint outside the catalog: that event must be in
    the chain with that hash (else history up to it was rewritten), and the chain must
    reach it (else its newest events were removed). An empty log always fails: every
    keep's log starts with its ``init`` event.
    """
    from labkeep.access import check

    check(keep.principal, "events.all")
    # read the checkpoints first: their events committed before they were written, so
    # the chain read next contains them
    newest = _newest_checkpoint(keep)
    where, point = newest if newest is not None else ("", None)
    anchor = None if point is None else {**point.__dict__, "where": where}
    prev = GENESIS
    checked = 0
    last_id = 0
    met = False
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
                        anchor,
                    )
                if point is not None and not met and row.id >= point.event_id:
                    if row.id != point.event_id or row.hash != point.hash:
                        what = (
                            f"event {point.event_id} is missing"
                            if row.id != point.event_id
                            else f"event {row.id} does not match the checkpoint"
                        )
                        return ChainCheck(
                            False,
                            checked,
                            row.id,
                            f"{what} written at {point.at} in {where}: the history up to it "
                            "was rewritten and its hashes recomputed",
                            anchor,
                        )
                    met = True
                prev = row.hash
                checked += 1
                last_id = row.id
            session.expunge_all()
        head = session.execute(
            select(KeepState.value).where(KeepState.key == HEAD_KEY)
        ).scalar_one_or_none()
        versions = session.execute(
            select(func.count(Version.id)).where(Version.state == "committed")
        ).scalar_one()
    if not checked:
        why = (
            f"the keep has {versions} committed versions"
            if versions
            else "every keep's log starts with its 'init' event"
        )
        return ChainCheck(
            False, 0, None, f"the event log is empty, but {why}: it was wiped", anchor
        )
    if point is not None and not met:
        return ChainCheck(
            False,
            checked,
            None,
            f"events after {last_id} were removed: the checkpoint written at {point.at} in "
            f"{where} names event {point.event_id}",
            anchor,
        )
    if head is not None and head != prev:
        return ChainCheck(
            False,
            checked,
            None,
            "the newest events were removed (chain head does not match)",
            anchor,
        )
    if point is None:
        return ChainCheck(True, checked, None, f"{checked} events, chain intact (no checkpoint)")
    return ChainCheck(
        True,
        checked,
        None,
        f"{checked} events, chain intact, through the checkpoint of event {point.event_id} "
        f"({point.at})",
        anchor,
    )
