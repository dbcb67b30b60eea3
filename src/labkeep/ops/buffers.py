"""Buffer retention: when the buffer copy of an imported acquisition may be deleted.

The rule is one pure function, :func:`decide`, over a small record (:class:`KeptState`)
that :func:`buffer_status` and :func:`clean` fill from the catalog and the buffer. A
folder's files are deleted only when all of these hold:

- the folder was imported and its files have not changed since (the fingerprint is
  checked again right before deleting, and each file's size and mtime just before its
  unlink);
- every file is in the dataset's current entries with the same size and mtime;
- for a copied import, the keep's copy is verified (every entry's tree check is ``ok``:
  run ``labkeep verify P/D``); a linked import shares the keep's inode, hashed at import;
- the dataset is sealed when the watch seals or the project's policy copies on seal;
- the dataset has at least the policy's ``min_copies`` good copies (counted as
  ``policy check`` and ``drop`` count them: :func:`labkeep.ops.whereis.dataset_copies`);
- the retention age since the import has passed.

Deleting moves the row to ``cleaning`` first (the watcher leaves such folders alone),
unlinks the files, removes the emptied folders, then records ``cleaned`` and a
``buffer.clean`` audit event with the counts.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, update

from labkeep.catalog import BufferFolder, Dataset, Entry, Project, TreeCheck, Watch
from labkeep.clock import isoformat, parse_duration, utcnow
from labkeep.errors import Forbidden
from labkeep.ops._buffer_scan import Listing, list_folder, parse_ready
from labkeep.ops.audit import append_event
from labkeep.ops.jobs import JobContext, JobProblems, handler
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep


@dataclass(frozen=True)
class KeptState:
    """What the retention rule looks at, for one buffer folder."""

    state: str
    #: the buffer's files are those imported (fingerprint, or each file against entries)
    unchanged: bool
    #: buffer files not among the dataset's current entries with the same size and mtime
    files_missing: int
    linked: bool
    #: every current entry's tree copy was verified ok
    tree_verified: bool
    seal_required: bool
    sealed: bool
    copies: int
    min_copies: int
    age_days: float | None
    retention_days: float | None


@dataclass(frozen=True)
class Decision:
    may_delete: bool
    reasons: tuple[str, ...]


def decide(s: KeptState) -> Decision:
    """May the buffer copy go? Every reason it may not (empty when it may)."""
    reasons: list[str] = []
    if s.state not in ("imported", "cleaning"):
        reasons.append(f"not imported ({s.state})")
    if not s.unchanged:
        reasons.append("its files changed since the import")
    if s.files_missing:
        reasons.append(f"{s.files_missing} file(s) not in the dataset with the same size")
    if not s.linked and not s.tree_verified:
        reasons.append("the keep's copy is not verified yet (run 'labkeep verify P/D')")
    if s.seal_required and not s.sealed:
        reasons.append("the dataset is not sealed")
    if s.copies < max(1, s.min_copies):
        reasons.append(f"{s.copies} of {max(1, s.min_copies)} good copies")
    if s.retention_days is None:
        reasons.append("no retention age (give --older-than, or the watch's --retention)")
    elif s.age_days is None or s.age_days < s.retention_days:
        age = 0.0 if s.age_days is None else s.age_days
        reasons.append(f"imported {age:.1f} of {s.retention_days:g} days ago")
    return Decision(not reasons, tuple(reasons))


# -- facts from the catalog and the buffer ----------------------------------------------
def missing_from_dataset(session: Session, dataset_id: int, listing: Listing) -> int:
    """Listed files that are not current entries of ``raw/`` with their size and mtime."""
    entries = {
        path: (size, mtime)
        for path, size, mtime in session.execute(
            select(Entry.path, Entry.size, Entry.mtime_ns).where(
                Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
            )
        ).all()
    }
    return sum(
        1 for rel, size, mtime in listing.files if entries.get(f"raw/{rel}") != (size, mtime)
    )


def _tree_verified(session: Session, dataset_id: int) -> bool:
    current = and_(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
    total = session.execute(select(func.count(Entry.id)).where(current)).scalar_one()
    good = session.execute(
        select(func.count(Entry.id))
        .join(TreeCheck, TreeCheck.entry_id == Entry.id)
        .where(current, TreeCheck.status == "ok")
    ).scalar_one()
    return bool(total) and int(good) == int(total)


def kept_state(
    session: Session,
    w: Watch,
    row: BufferFolder,
    listing: Listing | None,
    retention_days: float | None,
) -> KeptState:
    from labkeep.ops.stores import policy_for
    from labkeep.ops.whereis import dataset_copies

    ds = proj = None
    if row.project and row.dataset:
        found = session.execute(
            select(Project, Dataset)
            .join(Dataset, Dataset.project_id == Project.id)
            .where(Project.name == row.project, Dataset.name == row.dataset)
        ).first()
        if found is not None:
            proj, ds = found
    files = listing.files if listing is not None else []
    missing = len(files)
    verified = sealed = False
    copies, min_copies, on_seal = 0, 1, False
    if ds is not None and proj is not None and listing is not None:
        missing = missing_from_dataset(session, ds.id, listing)
        verified = _tree_verified(session, ds.id)
        sealed = bool(ds.sealed)
        picture = dataset_copies(session, proj, ds)
        copies = int(picture["good_copies"])
        policy = policy_for(session, proj.id, proj.name)
        min_copies, on_seal = policy.min_copies, bool(policy.on_seal)
    unchanged = listing is not None and (
        listing.fingerprint == row.fingerprint or row.state == "cleaning"
    )
    age = None
    if row.imported_at is not None:
        age = (utcnow() - row.imported_at) / timedelta(days=1)
    return KeptState(
        state=row.state,
        unchanged=unchanged,
        files_missing=missing,
        linked=bool(row.linked),
        tree_verified=verified,
        seal_required=bool(w.seal) or on_seal,
        sealed=sealed,
        copies=copies,
        min_copies=min_copies,
        age_days=age,
        retention_days=retention_days,
    )


def _retention(w: Watch, older_than: str | None) -> float | None:
    if older_than:
        return parse_duration(older_than) / timedelta(days=1)
    return float(w.retention_days) if w.retention_days is not None else None


def _marker(w: Watch) -> str | None:
    rule = parse_ready(w.ready)
    return rule.marker if rule.kind == "marker" else None


# -- use cases ------------------------------------------------------------------------
def buffer_status(keep: Keep, name: str, *, older_than: str | None = None) -> list[dict[str, Any]]:
    """Every folder of a watched buffer: its state, and whether its buffer copy may be
    deleted now, with every reason why not (site admins)."""
    from labkeep.ops.watch import find_watch

    if not keep.principal.site_admin:
        raise Forbidden("only site admins see buffers", hint="ask a site admin of this keep")
    out = []
    with keep.catalog.read() as session:
        w = find_watch(session, name)
        retention = _retention(w, older_than)
        rows = session.execute(
            select(BufferFolder).where(BufferFolder.watch_id == w.id).order_by(BufferFolder.folder)
        ).scalars()
        for row in rows:
            listing = None
            if row.state in ("imported", "cleaning", "changed"):
                listing = list_folder(os.path.join(w.path, row.folder), _marker(w))
            decision = decide(kept_state(session, w, row, listing, retention))
            out.append(
                {
                    "watch": w.name,
                    "folder": row.folder,
                    "state": row.state,
                    "files": row.files,
                    "bytes": row.bytes,
                    "dataset": f"{row.project}/{row.dataset}" if row.dataset else None,
                    "owner": row.owner,
                    "job": row.job_id,
                    "first_seen": isoformat(row.first_seen),
                    "last_change": isoformat(row.last_change),
                    "imported_at": isoformat(row.imported_at),
                    "cleaned_at": isoformat(row.cleaned_at),
                    "linked": row.linked,
                    "message": row.message,
                    "may_delete": decision.may_delete,
                    "reasons": [] if row.state == "cleaned" else list(decision.reasons),
                }
            )
    return out


def clean(keep: Keep, name: str, *, older_than: str | None = None, dry_run: bool = False) -> Report:
    """Delete the buffer copies that :func:`decide` allows (site admins); with *dry_run*
    only say what would go. One record per imported folder."""
    from labkeep.ops.watch import find_watch

    if not keep.principal.site_admin:
        raise Forbidden("only site admins clean buffers", hint="ask a site admin of this keep")
    report = Report("buffer.clean", info={"dry_run": dry_run, "files": 0, "bytes": 0})
    with keep.catalog.read() as session:
        w = find_watch(session, name)
        session.expunge(w)
        rows = list(
            session.execute(
                select(BufferFolder)
                .where(
                    BufferFolder.watch_id == w.id,
                    BufferFolder.state.in_(("imported", "cleaning", "changed")),
                )
                .order_by(BufferFolder.folder)
            ).scalars()
        )
        session.expunge_all()
    report.info["watch"] = w.name
    retention = _retention(w, older_than)
    marker = _marker(w)
    for row in rows:
        listing = list_folder(os.path.join(w.path, row.folder), marker)
        with keep.catalog.read() as session:
            decision = decide(kept_state(session, w, row, listing, retention))
        dataset = f"{row.project}/{row.dataset}"
        if not decision.may_delete or listing is None:
            report.add(
                Result(
                    "buffer.clean",
                    "notneeded",
                    path=row.folder,
                    dataset=dataset,
                    message="kept: " + "; ".join(decision.reasons),
                )
            )
            continue
        if dry_run:
            report.add(
                Result(
                    "buffer.clean",
                    "ok",
                    path=row.folder,
                    dataset=dataset,
                    size=listing.nbytes,
                    message=f"would delete {len(listing.files)} file(s)",
                    extra={"files": len(listing.files), "dry_run": True},
                )
            )
            continue
        report.add(_delete(keep, w, row, listing, marker, report))
    return report


def _delete(
    keep: Keep, w: Watch, row: BufferFolder, listing: Listing, marker: str | None, report: Report
) -> Result:
    dataset = f"{row.project}/{row.dataset}"
    with keep.catalog.write() as session:
        moved = session.execute(
            update(BufferFolder)
            .where(
                BufferFolder.id == row.id,
                BufferFolder.state == row.state,
                BufferFolder.fingerprint == row.fingerprint,
            )
            .values(state="cleaning")
            .execution_options(synchronize_session=False)
        )
    if not moved.rowcount:  # type: ignore[attr-defined]
        return Result("buffer.clean", "notneeded", path=row.folder, dataset=dataset,
                      message="kept: its state changed meanwhile")  # fmt: skip
    base = os.path.join(w.path, row.folder)
    deleted, freed, problems = 0, 0, []
    todo = list(listing.files)
    if marker and listing.marker:
        with contextlib.suppress(OSError):
            st = os.lstat(os.path.join(base, marker))
            todo.append((marker, st.st_size, st.st_mtime_ns))
    for rel, size, mtime in todo:
        path = os.path.join(base, rel)
        try:
            st = os.lstat(path)
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                problems.append(f"{rel}: changed just now, kept")
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{rel}: {_why_not(path, exc)}")
            continue
        deleted += 1
        freed += size
    _remove_empty(base)
    rest = list_folder(base, marker)
    now = utcnow()
    done = rest is None or (not rest.files and not rest.odd and not rest.marker)
    values: dict[str, Any] = {"state": "cleaned", "cleaned_at": now} if done else {
        "state": "imported",
        "fingerprint": rest.fingerprint if rest else "",
        "files": len(rest.files) if rest else 0,
        "bytes": rest.nbytes if rest else 0,
    }  # fmt: skip
    message = f"deleted {deleted} file(s), {freed} bytes" + (
        f"; {len(problems)} kept: " + "; ".join(problems[:3]) if problems else ""
    )
    with keep.catalog.write() as session:
        session.execute(
            update(BufferFolder)
            .where(BufferFolder.id == row.id, BufferFolder.state == "cleaning")
            .values(message=message, **values)
            .execution_options(synchronize_session=False)
        )
        append_event(
            session,
            keep.actor,
            "buffer.clean",
            dataset,
            {
                "watch": w.name,
                "folder": row.folder,
                "files": deleted,
                "bytes": freed,
                "kept": len(problems),
            },
        )
    report.info["files"] += deleted
    report.info["bytes"] += freed
    return Result(
        "buffer.clean",
        "ok" if not problems else "error",
        path=row.folder,
        dataset=dataset,
        size=freed,
        message=message,
        extra={"files": deleted},
    )


def _why_not(path: str, exc: OSError) -> str:
    if exc.errno == errno.EPERM:
        from labkeep.integrity.immutable import get_immutable

        with contextlib.suppress(OSError):
            if get_immutable(path):
                return (
                    "immutable: it is the same inode as the sealed copy in the keep (a "
                    "--link import), so deleting it would free no space; left in place "
                    "('chattr -i' would also unprotect the keep's copy)"
                )
        return "not permitted (EPERM): check the buffer's permissions and attributes"
    if exc.errno == errno.EACCES:
        return "permission denied: the watcher's account may not delete in the buffer"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _remove_empty(base: str) -> None:
    """Remove *base* and the folders below it that are empty now."""
    for folder, _dirs, _files in os.walk(base, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


# -- the periodic job ---------------------------------------------------------------------
@handler(
    "buffer-clean",
    admin_only=True,
    describe=lambda a: (
        f"buffer {a.get('watch') or 'of every watch'}"
        + (f" older than {a['older_than']}" if a.get("older_than") else "")
    ),
)
def buffer_clean_job(ctx: JobContext) -> dict[str, Any]:
    """Clean one watch's buffer (``watch``), or every watch that has a retention age."""
    a = ctx.args
    names = [a["watch"]] if a.get("watch") else _watches_with_retention(ctx.keep)
    result: dict[str, Any] = {"watches": {}, "files": 0, "bytes": 0}
    failed = 0
    for name in names:
        report = clean(ctx.keep, name, older_than=a.get("older_than"))
        counts = report.counts()
        result["watches"][name] = counts
        result["files"] += report.info["files"]
        result["bytes"] += report.info["bytes"]
        failed += report.failed
        ctx.progress(watches=len(result["watches"]), files=result["files"])
    if failed:
        raise JobProblems(f"{failed} buffer folder(s) could not be fully deleted", result)
    return result


def _watches_with_retention(keep: Keep) -> list[str]:
    with keep.catalog.read() as session:
        return list(
            session.execute(
                select(Watch.name).where(Watch.retention_days.is_not(None), Watch.enabled.is_(True))
            ).scalars()
        )


__all__ = ["Decision", "KeptState", "buffer_status", "clean", "decide"]
