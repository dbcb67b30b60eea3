"""The plan: merge the sorted source scan with the dataset's current catalog entries.

Both streams come in the same byte-wise path order (the scan by construction, see
``_scan``; the catalog by its index on ``(dataset_id, path) WHERE valid_to IS NULL``, read
in keyset pages), so one pass classifies every source file while memory holds one page:

- in the catalog, and the source and the tree copy both still have the catalog's size
  and mtime, and no verify found the entry ``modified`` or ``missing``: ``notneeded``,
  a record at once (unless the source is to be deleted: then it is compared);
- in the catalog otherwise: ``compare`` (hash the source; re-hash the tree copy when it
  is suspect, and restore it from the source if it is missing or damaged);
- not in the catalog, with a final file of the same size and mtime in the tree (a crash
  between rename and commit): ``adopt`` (re-hash it in place);
- else ``copy`` (or ``link``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import select

from labkeep.catalog import Entry, TreeCheck
from labkeep.errors import CatalogError
from labkeep.ops.ingest._scan import RAW, Item, Scanned
from labkeep.results import Result

if TYPE_CHECKING:
    from pathlib import Path

    from labkeep.keep import Keep

#: catalog rows read per page
PAGE = 5000
#: a current entry: path, row id, size, mtime, SHA-256
Known = tuple[str, int, int, int, bytes]


def current_entries(keep: Keep, dataset_id: int, page: int = PAGE) -> Iterator[Known]:
    """The dataset's current entries below ``raw/`` in path order, one page at a time.

    Each page is its own short read (keyset: ``path > last``); the caller holds the
    dataset's lock, and the rows it commits meanwhile sort before the next page.
    """
    last = f"{RAW}/"
    end = f"{RAW}0"  # "0" follows "/": the first path past raw/
    while True:
        with keep.catalog.read() as session:
            rows = session.execute(
                select(Entry.path, Entry.id, Entry.size, Entry.mtime_ns, Entry.sha256)
                .where(
                    Entry.dataset_id == dataset_id,
                    Entry.valid_to.is_(None),
                    Entry.path > last,
                    Entry.path < end,
                )
                .order_by(Entry.path)
                .limit(page)
            ).all()
        for row in rows:
            path = row[0]
            if path <= last:
                raise CatalogError(
                    f"the catalog does not return paths in byte order ({path!r} after {last!r})",
                    hint="the entries.path column must use a byte-order collation "
                    "(PostgreSQL: COLLATE \"C\"); run 'labkeep upgrade' or fix the column",
                )
            last = path
            yield (path, row[1], row[2], row[3], row[4])
        if len(rows) < page:
            return


def suspect_paths(keep: Keep, dataset_id: int) -> set[str]:
    """Paths whose last verification found the tree copy ``modified`` or ``missing``.

    One query, separate from the pages (few rows: only damage found and not repaired).
    """
    with keep.catalog.read() as session:
        return set(
            session.execute(
                select(Entry.path)
                .join(TreeCheck, TreeCheck.entry_id == Entry.id)
                .where(
                    Entry.dataset_id == dataset_id,
                    Entry.valid_to.is_(None),
                    TreeCheck.status.in_(("modified", "missing")),
                )
            ).scalars()
        )


class TreeProbe:
    """lstat of tree copies, skipped for a whole folder that does not exist in the tree.

    The scan comes folder by folder, so remembering the last folder looked at spares a
    fresh dataset one failing lstat per file.
    """

    def __init__(self, dataset_dir: Path) -> None:
        self.base = str(dataset_dir)
        self._folder = ""
        self._exists = False

    def lstat(self, dest_rel: str) -> os.stat_result | None:
        folder = dest_rel.rpartition("/")[0]
        if folder != self._folder:
            self._folder = folder
            self._exists = os.path.isdir(f"{self.base}/{folder}")
        if not self._exists:
            return None
        try:
            return os.lstat(f"{self.base}/{dest_rel}")
        except OSError:
            return None

    def has(self, dest_rel: str, size: int, mtime_ns: int) -> bool:
        """A regular file with this size and mtime (the quick check of a tree copy)."""
        st = self.lstat(dest_rel)
        return (
            st is not None
            and stat.S_ISREG(st.st_mode)
            and st.st_size == size
            and st.st_mtime_ns == mtime_ns
        )


def plan(
    scanned: Iterator[Scanned],
    entries: Iterator[Known],
    suspect: set[str],
    probe: TreeProbe,
    *,
    link: bool,
    delete_source: bool,
    dataset: str,
) -> Iterator[Item | Result]:
    """Each source file with its mode set, or its ``notneeded`` record; refusals as is."""
    known = next(entries, None)
    for one in scanned:
        if isinstance(one, Result):
            yield one
            continue
        dest_rel = f"{RAW}/{one.rel}"
        while known is not None and known[0] < dest_rel:
            known = next(entries, None)
        if known is not None and known[0] == dest_rel:
            _, entry_id, size, mtime, digest = known
            tree_same = dest_rel not in suspect and probe.has(dest_rel, size, mtime)
            source_same = size == one.size and mtime == one.mtime_ns
            if source_same and tree_same and not delete_source:
                yield Result(
                    "ingest",
                    "notneeded",
                    path=dest_rel,
                    dataset=dataset,
                    size=one.size,
                    sha256=digest.hex(),
                )
                continue
            one.mode, one.known_sha = "compare", digest
            one.entry_id, one.known_size, one.known_mtime = entry_id, size, mtime
            one.tree_suspect = not tree_same
        elif probe.has(dest_rel, one.size, one.mtime_ns):
            one.mode = "adopt"
        elif link:
            one.mode = "link"
        yield one
