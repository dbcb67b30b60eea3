"""The tree's fixity (``tree_checks``): what verify, or a hash taken while writing a
tree file, last found of each entry's copy in the tree.

One row per entry that was ever checked, upserted in batches; ``entries`` stay
immutable. A copy that was just restored from a source is "never checked" again until a
verify or a write that hashed it says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete

from labkeep.catalog import TreeCheck

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: rows per statement (3 parameters each: under SQLite's 32,766 variables)
BATCH = 5000
BAD = ("modified", "missing")


def record(session: Session, outcomes: Iterable[tuple[int, str]], at: datetime) -> None:
    """Upsert (entry id, status) outcomes checked at *at*."""
    rows = [{"entry_id": i, "checked_at": at, "status": s} for i, s in outcomes]
    if not rows:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    for start in range(0, len(rows), BATCH):
        stmt = insert(TreeCheck).values(rows[start : start + BATCH])
        stmt = stmt.on_conflict_do_update(
            index_elements=[TreeCheck.entry_id],
            set_={"checked_at": stmt.excluded.checked_at, "status": stmt.excluded.status},
        )
        session.execute(stmt)


def forget(session: Session, entry_ids: list[int]) -> None:
    """The copies of these entries are new and unchecked."""
    for start in range(0, len(entry_ids), BATCH):
        session.execute(
            delete(TreeCheck).where(TreeCheck.entry_id.in_(entry_ids[start : start + BATCH]))
        )
