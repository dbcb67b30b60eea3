"""Differences between two versions of a dataset: added, removed and modified files.

An entry of the temporal ``entries`` table changed between versions A < B exactly when
its lifetime starts or ends in (A, B]: the rows alive at A that ended by B (removed or
replaced) and the rows alive at B that started after A (added or replacing). Both are
read in path order a page at a time and merged, so memory does not grow with the size
of the dataset or of the difference, and the first line comes at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from labkeep.catalog import Entry, Version
from labkeep.errors import UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset

if TYPE_CHECKING:
    from labkeep.keep import Keep

PAGE = 2000


@dataclass(frozen=True)
class Change:
    status: str  # added | removed | modified
    path: str
    size: int | None
    sha256: str | None
    old_size: int | None = None
    old_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status, "path": self.path}
        if self.status != "removed":
            record.update(size=self.size, sha256=self.sha256)
        if self.status != "added":
            record.update(old_size=self.old_size, old_sha256=self.old_sha256)
        return record


@dataclass
class Diff:
    dataset: str
    old: int
    new: int
    changes: Iterator[Change]


def diff(keep: Keep, old: str, new: str | None = None) -> Diff:
    """What changed in a dataset from version *old* (``P/D@N``) to *new* (``P/D@M``,
    ``@M``, or None for the newest version). Versions may be given in either order."""
    a = parse_address(old, need_dataset=True)
    if new is None or new.startswith("@"):
        b = parse_address(f"{a.project}/{a.dataset}{new or ''}", need_dataset=True)
    else:
        b = parse_address(new, need_dataset=True)
    if (a.project, a.dataset) != (b.project, b.dataset):
        raise UsageError(
            "diff compares two versions of one dataset",
            hint="e.g. 'labkeep diff P/D@1 P/D@2' (or 'P/D@1 @2')",
        )
    if a.path or b.path:
        raise UsageError("diff compares whole versions of a dataset, not a path in it")
    assert a.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, a.project, a.dataset, "dataset.read")
        committed = set(
            session.execute(
                select(Version.number).where(
                    Version.dataset_id == dataset.id, Version.state == "committed"
                )
            ).scalars()
        )
        head = dataset.head_version
        dataset_id = dataset.id
    numbers = [head if x.version is None else x.version for x in (a, b)]
    for n in numbers:
        if n not in committed:
            raise UsageError(
                f"{a.project}/{a.dataset} has no version {n}",
                hint=f"'labkeep versions {a.project}/{a.dataset}' lists them",
            )
    first, second = numbers
    reverse = first > second
    lo, hi = (second, first) if reverse else (first, second)
    return Diff(
        f"{a.project}/{a.dataset}", first, second, _changes(keep, dataset_id, lo, hi, reverse)
    )


def _pages(keep: Keep, where: Any) -> Iterator[Entry]:
    after: str | None = None
    while True:
        query = select(Entry).where(where).order_by(Entry.path).limit(PAGE)
        if after is not None:
            query = query.where(Entry.path > after)
        with keep.catalog.read() as session:
            rows = list(session.execute(query).scalars())
            session.expunge_all()
        yield from rows
        if len(rows) < PAGE:
            return
        after = rows[-1].path


def _changes(keep: Keep, dataset_id: int, lo: int, hi: int, reverse: bool) -> Iterator[Change]:
    if lo == hi:
        return
    gone = and_(  # alive at lo, ended by hi
        Entry.dataset_id == dataset_id,
        Entry.valid_from <= lo,
        Entry.valid_to.is_not(None),
        Entry.valid_to > lo,
        Entry.valid_to <= hi,
    )
    came = and_(  # alive at hi, started after lo
        Entry.dataset_id == dataset_id,
        Entry.valid_from > lo,
        Entry.valid_from <= hi,
        or_(Entry.valid_to.is_(None), Entry.valid_to > hi),
    )
    olds, news = _pages(keep, gone), _pages(keep, came)
    old, new = next(olds, None), next(news, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old.path < new.path):
            assert old is not None
            change = Change("removed", old.path, None, None, old.size, old.sha256.hex())
            old = next(olds, None)
        elif old is None or new.path < old.path:
            change = Change("added", new.path, new.size, new.sha256.hex())
            new = next(news, None)
        else:
            same = (old.size, old.sha256) == (new.size, new.sha256)
            change = Change(
                "modified", new.path, new.size, new.sha256.hex(), old.size, old.sha256.hex()
            )
            old, new = next(olds, None), next(news, None)
            if same:  # registered again with the same content: no difference
                continue
        yield _reversed(change) if reverse else change


def _reversed(change: Change) -> Change:
    status = {"added": "removed", "removed": "added"}.get(change.status, change.status)
    if change.status == "added":
        return Change(status, change.path, None, None, change.size, change.sha256)
    if change.status == "removed":
        return Change(status, change.path, change.old_size, change.old_sha256)
    return Change(
        status, change.path, change.old_size, change.old_sha256, change.size, change.sha256
    )
