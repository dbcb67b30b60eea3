"""``check``: every inconsistency a data steward must know about, each with its fix.

One pass over the keep, yielding one :class:`Finding` per inconsistency as it is found
(the CLI prints them as they come; nothing is collected):

=========================  ===========================================================
kind                       what
=========================  ===========================================================
dataset-not-in-catalog     a dataset folder in the tree the catalog does not know (e.g.
                           ingested after the backup a restored catalog came from)
entry-without-file         a current entry whose file is not in the tree
file-without-entry         a file in a dataset folder that no current entry names
                           (in ``raw/``: foreign; elsewhere: unsaved work)
manifest-drift             ``MANIFEST.sha256`` is not the manifest of the head version
interrupted-seal           a seal or unseal that did not finish
unfinished-ingest          a version still open (an ingest that did not finish)
stale-partial              ingest temp files left in a dataset's ``.labkeep/`` folders
event-chain-broken         the audit chain does not verify (``events --check``)
below-policy               a dataset with fewer good copies than its policy asks
orphan-run                 a run recorded as running whose process or job is gone
expired-job-lease          a running job whose worker stopped renewing its lease
=========================  ===========================================================

Cost: the catalog is read in keyset pages (:data:`PAGE` rows) and the tree one folder at
a time; files are compared in batches of :data:`PAGE` paths, so memory does not grow with
the size of a dataset. It reads every manifest and stats every file (no hashing:
``labkeep verify`` re-hashes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.catalog import Dataset, Entry, Job, Project, Run, Version
from labkeep.clock import isoformat, utcnow
from labkeep.storage import PRIVATE_DIR

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: rows per catalog page, paths per existence query
PAGE = 1000
#: an ingest temp file older than this (seconds) is stale
STALE_SECONDS = 3600.0


@dataclass(frozen=True)
class Finding:
    """One inconsistency: what, where, and the command that fixes it."""

    kind: str
    target: str
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "check",
            "status": "error",
            "kind": self.kind,
            "target": self.target,
            "message": self.message,
            "fix": self.fix,
        }


def check(keep: Keep, *, stale_seconds: float = STALE_SECONDS) -> Iterator[Finding]:
    """Every inconsistency of the keep (site admins), streamed; see the module doc."""
    from labkeep.access import check as allowed

    allowed(keep.principal, "keep.admin")
    yield from _chain(keep)
    yield from _tree_folders(keep)
    for project, name, dataset_id, kind, is_open in _datasets(keep):
        address = f"{project}/{name}"
        if is_open:
            yield Finding(
                "unfinished-ingest",
                address,
                "a version is still open: an ingest did not finish",
                f"run the same 'labkeep ingest SOURCE {address}' again (it resumes)",
            )
        yield from _entries_without_files(keep, project, name, dataset_id)
        yield from _files_without_entries(keep, project, name, dataset_id, kind)
        yield from _partials(keep, project, name, stale_seconds)
    yield from _backup_leftovers(keep, stale_seconds)
    yield from _manifests(keep)
    yield from _policy(keep)
    yield from _runs(keep)
    yield from _jobs(keep)


# -- the pieces --------------------------------------------------------------------------
def _chain(keep: Keep) -> Iterator[Finding]:
    result = keep.check_events()
    if not result.ok:
        yield Finding(
            "event-chain-broken",
            "events",
            result.message,
            "'labkeep events --check' names the first bad event; investigate, then restore "
            "the catalog from a backup made before it ('labkeep backup list', "
            "'labkeep restore-catalog ID --into URL')",
        )


def _datasets(keep: Keep) -> Iterator[tuple[str, str, int, str, bool]]:
    """Datasets whose tree copy is present, in keyset pages."""
    from sqlalchemy import exists

    last = 0
    opened = exists().where(Version.dataset_id == Dataset.id, Version.state == "open")
    while True:
        with keep.catalog.read() as session:
            rows = session.execute(
                select(Project.name, Dataset.name, Dataset.id, Dataset.kind, opened)
                .join(Project, Project.id == Dataset.project_id)
                .where(Dataset.id > last, Dataset.tree_state == "present")
                .order_by(Dataset.id)
                .limit(PAGE)
            ).all()
        if not rows:
            return
        for project, name, dataset_id, kind, is_open in rows:
            yield project, name, dataset_id, kind, bool(is_open)
        last = rows[-1][2]


def _tree_folders(keep: Keep) -> Iterator[Finding]:
    """Dataset folders in the tree that the catalog does not know."""
    base = keep.tree.base
    try:
        projects = sorted(e.name for e in os.scandir(base) if e.is_dir() and e.name != PRIVATE_DIR)
    except FileNotFoundError:
        yield Finding(
            "entry-without-file", str(base), "the tree's folder is missing (unmounted?)",
            "mount the tree, then run 'labkeep check' again",
        )  # fmt: skip
        return
    for project in projects:
        with os.scandir(base / project) as it:
            names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        for start in range(0, len(names), PAGE):
            chunk = names[start : start + PAGE]
            with keep.catalog.read() as session:
                known = set(
                    session.execute(
                        select(Dataset.name)
                        .join(Project, Project.id == Dataset.project_id)
                        .where(Project.name == project, Dataset.name.in_(chunk))
                    ).scalars()
                )
            for name in chunk:
                if name in known:
                    continue
                folder = base / project / name
                aside = keep.root / "recovered" / project / name
                raw = folder / "raw"
                move = f"mkdir -p {aside.parent} && mv {folder} {aside}"
                fix = (
                    f"{move} && labkeep ingest {aside / 'raw'} {project}/{name}"
                    + " (then 'labkeep seal' it if it was sealed)"
                    if raw.is_dir()
                    else f"{move} && labkeep dataset create {project}/{name} --kind analysis"
                    f", then copy its files back and 'labkeep save {project}/{name}'"
                )
                yield Finding(
                    "dataset-not-in-catalog",
                    f"{project}/{name}",
                    f"{folder} is in the tree but not in the catalog (made after the "
                    "catalog's backup was taken?)",
                    fix,
                )


def _entries_without_files(
    keep: Keep, project: str, name: str, dataset_id: int
) -> Iterator[Finding]:
    last = ""
    first = True
    while True:
        with keep.catalog.read() as session:
            query = select(Entry.path).where(
                Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
            )
            if not first:
                query = query.where(Entry.path > last)
            paths = list(session.execute(query.order_by(Entry.path).limit(PAGE)).scalars())
        if not paths:
            return
        first = False
        for path in paths:
            try:
                os.lstat(keep.tree.file_path(project, name, path))
            except FileNotFoundError:
                yield Finding(
                    "entry-without-file",
                    f"{project}/{name}/{path}",
                    "the catalog lists this file; the tree does not have it",
                    f"labkeep verify {project}/{name} --repair (brings it back from a copy), "
                    f"or 'labkeep restore {project}/{name}' for unsaved removals",
                )
            except OSError:
                continue
        last = paths[-1]


def _files_without_entries(
    keep: Keep, project: str, name: str, dataset_id: int, kind: str
) -> Iterator[Finding]:
    batch: list[str] = []

    def flush() -> Iterator[Finding]:
        with keep.catalog.read() as session:
            known = set(
                session.execute(
                    select(Entry.path).where(
                        Entry.dataset_id == dataset_id,
                        Entry.valid_to.is_(None),
                        Entry.path.in_(batch),
                    )
                ).scalars()
            )
        for path in batch:
            if path in known:
                continue
            address = f"{project}/{name}"
            if path.startswith("raw/") and kind == "session":
                fix = (
                    f"look at it ('labkeep verify {address}' lists it as EXTRA): remove it, "
                    f"or ingest it where it came from with 'labkeep ingest SOURCE {address}'"
                )
                message = "a file in raw/ that no ingest registered"
            else:
                fix = f"labkeep save {address} (records it as a new version)"
                message = "a file that is not in the catalog: unsaved work"
            yield Finding("file-without-entry", f"{address}/{path}", message, fix)
        batch.clear()

    for path, _st in keep.tree.walk_files(project, name):
        batch.append(path)
        if len(batch) >= PAGE:
            yield from flush()
    if batch:
        yield from flush()


def _partials(keep: Keep, project: str, name: str, stale_seconds: float) -> Iterator[Finding]:
    now = time.time()
    for folder in (keep.tree.partial_dir(project, name), keep.tree.tmp_dir(project, name)):
        try:
            items = [e for e in os.scandir(folder) if not e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        old = [e for e in items if now - e.stat(follow_symlinks=False).st_mtime > stale_seconds]
        if old:
            yield Finding(
                "stale-partial",
                f"{project}/{name}",
                f"{len(old)} temp files of an interrupted ingest or save in {folder}",
                f"run the interrupted 'labkeep ingest SOURCE {project}/{name}' again (it "
                f"resumes and clears them), or 'labkeep verify {project}/{name}' (clears them)",
            )


def _backup_leftovers(keep: Keep, stale_seconds: float) -> Iterator[Finding]:
    """Scratch folders and drill databases of a backup or drill that was killed."""
    now = time.time()
    with os.scandir(keep.root) as it:
        for item in it:
            if (
                item.name.startswith(".labkeep-backup-")
                and item.is_dir(follow_symlinks=False)
                and now - item.stat(follow_symlinks=False).st_mtime > stale_seconds
            ):
                yield Finding(
                    "stale-partial",
                    item.path,
                    "the scratch folder of a backup or drill that did not finish",
                    f"rm -r {item.path}",
                )
    if keep.catalog.dialect == "postgresql":
        from sqlalchemy import text

        with keep.catalog.read() as session:
            names = session.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'labkeep\\_drill\\_%'")
            ).scalars()
            for name in names:
                yield Finding(
                    "stale-partial",
                    f"database {name}",
                    "the scratch catalog of a backup drill that did not finish (or is running)",
                    f"psql -c 'DROP DATABASE \"{name}\"' (once no drill runs)",
                )


def _manifests(keep: Keep) -> Iterator[Finding]:
    from labkeep.ops.status import _look_at_the_tree

    drift, interrupted = _look_at_the_tree(keep)
    for item in drift:
        yield Finding(
            "manifest-drift",
            item["dataset"],
            f"MANIFEST.sha256 is {item['state']}: not the manifest of version {item['version']}",
            f"labkeep verify {item['dataset']}, then 'labkeep manifest {item['dataset']}'",
        )
    for item in interrupted:
        yield Finding(
            "interrupted-seal",
            item["dataset"],
            f"a '{item['operation']}' was interrupted",
            f"labkeep seal {item['dataset']} (or 'labkeep unseal --force {item['dataset']}')",
        )


def _policy(keep: Keep) -> Iterator[Finding]:
    from labkeep.ops.whereis import below_policy

    with keep.catalog.read() as session:
        short, count = below_policy(session, 10_000)
    for item in short:
        yield Finding(
            "below-policy",
            item["dataset"],
            f"below its copy policy ({', '.join(item['below'])}; copies: "
            f"{', '.join(item['copies']) or 'none'})",
            str(item["fix"]),
        )
    if count > len(short):
        yield Finding(
            "below-policy",
            "keep",
            f"{count - len(short)} more datasets below their copy policy",
            "labkeep policy apply",
        )


def _runs(keep: Keep) -> Iterator[Finding]:
    """Runs recorded as running whose labkeep process on this host is gone, or whose job
    ended."""
    from labkeep.ops.leases import dead_here

    with keep.catalog.read() as session:
        rows = session.execute(
            select(Run.id, Run.owner, Run.job_id, Job.state)
            .outerjoin(Job, Job.id == Run.job_id)
            .where(Run.state.in_(("running", "saving", "queued")))
            .order_by(Run.id)
        ).all()
    for run_id, owner, job_id, job_state in rows:
        dead = bool(owner) and dead_here(owner)
        ended = job_id is not None and job_state in ("done", "failed", "cancelled", None)
        if dead or ended:
            why = "its labkeep process is gone" if dead else f"its job {job_id} has ended"
            yield Finding(
                "orphan-run",
                f"run {run_id}",
                f"recorded as running, but {why}",
                f"labkeep runs cancel {run_id} (or 'labkeep runs' on the host that ran it, "
                "which marks dead local runs failed)",
            )


def _jobs(keep: Keep) -> Iterator[Finding]:
    now = utcnow()
    with keep.catalog.read() as session:
        rows = session.execute(
            select(Job.id, Job.kind, Job.lease_owner, Job.lease_until)
            .where(Job.state == "running", Job.lease_until < now)
            .order_by(Job.id)
        ).all()
    for job_id, kind, owner, until in rows:
        yield Finding(
            "expired-job-lease",
            f"job {job_id}",
            f"{kind} job running on {owner or 'a worker'} whose lease ran out at "
            f"{isoformat(until)}: the worker stopped (killed, host lost)",
            "start a worker ('labkeep worker'): it takes the job over (or 'labkeep jobs "
            f"cancel {job_id}')",
        )
