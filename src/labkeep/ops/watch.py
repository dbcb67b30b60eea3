"""Watched instrument buffers: acquisitions found below a folder are imported by jobs.

A watch (table ``watches``) names a buffer folder and how its acquisitions become
datasets. The watcher is a scan-based state machine: each scan lists every acquisition
folder (the folders ``depth`` levels below the buffer) and moves its row of
``buffer_folders`` along (see docs/buffers.md)::

    (new) -> waiting -> queued -> imported -> changed      (files changed after import)
                 \\-> failed     \\-> waiting              (changed before the job ran)
    waiting|queued -> vanished  (folder renamed or deleted before import)
    imported -> cleaned         (buffer copy deleted by ``buffer clean``)

The fingerprint of a folder is the SHA-256 of its sorted (path, size, mtime_ns) listing.
A folder is ready when its marker file is there, or when its fingerprint has not changed
for the quiet period and no file's mtime is newer than that. A ready folder gets one
``buffer-import`` job, queued in the same transaction that moves its row from
``waiting`` to ``queued`` (conditional on the fingerprint), with a unique key naming the
watch, the folder and the fingerprint: several scans or watchers never queue it twice.

inotify (``watchdog``) only wakes the scanner early; polling mode (SMB/NFS, where inotify
sees nothing written by other hosts) rescans every ``poll_seconds``.

Attribution: the job runs as the folder's owner (resolved by the watch's owner rule), so
the dataset, its version and the ingest event carry the owner's name. A project that does
not exist yet is created by the watch's creator (a site admin) and recorded as the
watch's; on the watch's own projects each owner gets a ``write`` grant when first needed.
On other projects the owner needs write access already; otherwise the folder fails with a
message saying who must grant what.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from labkeep.access import Principal, allowed
from labkeep.catalog import BufferFolder, Dataset, Job, Project, Watch, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import (
    AlreadyExists,
    EnvironmentFailure,
    Forbidden,
    LabkeepError,
    NotFound,
    UsageError,
)
from labkeep.names import check_slug
from labkeep.ops._buffer_scan import (
    Listing,
    acquisition_folders,
    check_template,
    is_ready,
    list_folder,
    os_account,
    parse_owner_map,
    parse_owner_rule,
    parse_ready,
    render_name,
    template_values,
)
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

__all__ = [
    "WatchInfo",
    "add_watch",
    "get_watch",
    "list_watches",
    "remove_watch",
    "retry_folders",
    "run_watchers",
    "scan",
]

STATES = (
    "waiting",
    "queued",
    "imported",
    "changed",
    "failed",
    "vanished",
    "cleaning",
    "cleaned",
)


@dataclass
class WatchInfo:
    name: str
    path: str
    project_template: str
    dataset_template: str
    owner_from: str
    owner_map: dict[str, str]
    ready: str
    mode: str
    poll_seconds: int
    depth: int
    link: bool
    seal: bool
    retention_days: int | None
    enabled: bool
    created_at: datetime
    created_by: str
    projects: list[str]
    folders: dict[str, int]

    @classmethod
    def of(cls, w: Watch, folders: dict[str, int] | None = None) -> WatchInfo:
        settings = json.loads(w.settings or "{}")
        return cls(
            w.name,
            w.path,
            w.project_template,
            w.dataset_template,
            w.owner_from,
            json.loads(w.owner_map or "{}"),
            w.ready,
            w.mode,
            w.poll_seconds,
            w.depth,
            w.link,
            w.seal,
            w.retention_days,
            w.enabled,
            w.created_at,
            w.created_by,
            list(settings.get("projects", [])),
            folders or {},
        )

    def to_dict(self) -> dict[str, Any]:
        record = dict(self.__dict__)
        record["created_at"] = isoformat(self.created_at)
        return record


def _admin(keep: Keep, what: str) -> None:
    if not keep.principal.site_admin:
        raise Forbidden(f"only site admins {what}", hint="ask a site admin of this keep")


def find_watch(session: Session, name_or_path: str) -> Watch:
    """A watch by its name, or by its buffer folder."""
    row = session.execute(select(Watch).where(Watch.name == name_or_path)).scalar_one_or_none()
    if row is None and ("/" in name_or_path or os.path.isdir(name_or_path)):
        path = os.path.realpath(name_or_path)
        row = session.execute(select(Watch).where(Watch.path == path)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no watch {name_or_path!r}", hint="'labkeep watch list' shows them")
    return row


# -- configuration ---------------------------------------------------------------------
def add_watch(
    keep: Keep,
    path: str,
    *,
    name: str | None = None,
    project_template: str = "{instrument}-{year}",
    dataset_template: str = "{folder}",
    owner_from: str = "folder-owner",
    owner_map: dict[str, str] | list[str] | None = None,
    ready: str = "quiet:10m",
    link: bool = False,
    seal: bool = False,
    mode: str = "inotify",
    poll_seconds: int = 60,
    depth: int | None = None,
    retention: str | None = None,
) -> WatchInfo:
    """Watch the buffer folder *path* (site admins). With ``owner_from="folder-name"``
    the acquisitions are the folders below each user's folder (depth 2)."""
    from labkeep.clock import parse_duration

    _admin(keep, "configure watched buffers")
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.isdir(real):
        raise UsageError(f"{path} is not a folder", hint="give the instrument's buffer folder")
    tree = os.path.realpath(keep.tree.base)
    if real == tree or real.startswith(tree + "/") or tree.startswith(real + "/"):
        raise UsageError(f"{path} overlaps the keep's tree {tree}")
    name = check_slug(name or _default_name(real), "watch name")
    check_template(project_template, "project")
    check_template(dataset_template, "dataset")
    parse_owner_rule(owner_from)
    mapping = parse_owner_map(owner_map) if isinstance(owner_map, list) else (owner_map or {})
    if owner_from == "map" and not mapping:
        raise UsageError("--owner-from map needs --owner-map ACCOUNT=USER (one or more)")
    rule = parse_ready(ready)
    if mode not in ("inotify", "poll"):
        raise UsageError(f"invalid mode {mode!r}", hint="use inotify or poll (SMB/NFS mounts)")
    if poll_seconds < 1:
        raise UsageError("--poll-seconds must be at least 1")
    if depth is None:
        depth = 2 if owner_from == "folder-name" else 1
    if not 1 <= depth <= 8 or (owner_from == "folder-name" and depth < 2):
        raise UsageError("--depth is 1 to 8 (at least 2 with --owner-from folder-name)")
    days = None
    if retention:
        days = max(1, round(parse_duration(retention).total_seconds() / 86400))
    row = Watch(
        name=name,
        path=real,
        project_template=project_template,
        dataset_template=dataset_template,
        owner_from=owner_from,
        owner_map=json.dumps(mapping, sort_keys=True),
        ready=str(rule),
        mode=mode,
        poll_seconds=poll_seconds,
        depth=depth,
        link=link,
        seal=seal,
        retention_days=days,
        enabled=True,
        settings="{}",
        created_at=utcnow(),
        created_by=keep.actor,
    )
    with keep.catalog.write() as session:
        if not add_unique(session, row):
            raise AlreadyExists(
                f"a watch named {name!r} or on {real} exists", hint="'labkeep watch list'"
            )
        append_event(
            session, keep.actor, "watch.add", f"watch:{name}", {"path": real, "ready": str(rule)}
        )
        return WatchInfo.of(row)


def _default_name(path: str) -> str:
    from labkeep.ops._buffer_scan import sanitise

    return sanitise(os.path.basename(path)) or "buffer"


def list_watches(keep: Keep) -> list[WatchInfo]:
    _admin(keep, "see watched buffers")
    with keep.catalog.read() as session:
        counts: dict[int, dict[str, int]] = {}
        for wid, state, n in session.execute(
            select(BufferFolder.watch_id, BufferFolder.state, func.count()).group_by(
                BufferFolder.watch_id, BufferFolder.state
            )
        ).all():
            counts.setdefault(wid, {})[state] = int(n)
        rows = session.execute(select(Watch).order_by(Watch.name)).scalars()
        return [WatchInfo.of(w, counts.get(w.id)) for w in rows]


def get_watch(keep: Keep, name: str) -> WatchInfo:
    _admin(keep, "see watched buffers")
    with keep.catalog.read() as session:
        w = find_watch(session, name)
        counts = dict(
            session.execute(
                select(BufferFolder.state, func.count())
                .where(BufferFolder.watch_id == w.id)
                .group_by(BufferFolder.state)
            ).all()
        )
        return WatchInfo.of(w, {str(k): int(v) for k, v in counts.items()})


def remove_watch(keep: Keep, name: str) -> WatchInfo:
    """Stop watching a buffer and forget its folders' states (the datasets stay)."""
    _admin(keep, "configure watched buffers")
    with keep.catalog.write() as session:
        w = find_watch(session, name)
        info = WatchInfo.of(w)
        session.execute(delete(BufferFolder).where(BufferFolder.watch_id == w.id))
        session.delete(w)
        append_event(session, keep.actor, "watch.remove", f"watch:{w.name}", {"path": w.path})
    return info


def retry_folders(keep: Keep, name: str, folders: list[str] | None = None) -> list[str]:
    """Put failed, changed or vanished folders (all, or those named) back to waiting: the
    next scan imports them when ready (a changed folder into its dataset again: ingest
    adds what is new, and refuses a sealed dataset)."""
    _admin(keep, "retry buffer folders")
    with keep.catalog.write() as session:
        w = find_watch(session, name)
        query = select(BufferFolder).where(
            BufferFolder.watch_id == w.id,
            BufferFolder.state.in_(("failed", "changed", "vanished")),
        )
        if folders:
            query = query.where(BufferFolder.folder.in_(folders))
        done = []
        for row in session.execute(query).scalars():
            row.state, row.message, row.last_change = "waiting", "", utcnow()
            row.job_id = None
            done.append(row.folder)
        if done:
            append_event(session, keep.actor, "watch.retry", f"watch:{w.name}", {"folders": done})
    return done


# -- scanning -----------------------------------------------------------------------------
def scan(keep: Keep, name: str) -> list[dict[str, Any]]:
    """One pass over a watch's buffer now (site admins): what changed, folder by folder."""
    _admin(keep, "scan watched buffers")
    with keep.catalog.read() as session:
        w = find_watch(session, name)
        session.expunge(w)
    changes, _ = scan_watch(keep, w)
    return changes


def _posix(when: datetime) -> float:
    return when.replace(tzinfo=UTC).timestamp()


#: settled folders (imported, changed, failed) are re-listed by the long-running watcher
#: at most this often, unless inotify saw something change below them
SETTLED_EVERY = 600.0


def scan_watch(
    keep: Keep, w: Watch, *, only: set[str] | None = None, settled: bool = True
) -> tuple[list[dict[str, Any]], float]:
    """Scan one watch: the folders whose state changed, and the seconds until the next
    scan is due (sooner than ``poll_seconds`` when a quiet period ends before).

    New and waiting folders are always listed. A folder whose import is queued is not
    (its job lists it before and after the ingest). Settled folders (imported, changed,
    failed) are listed when *settled*, or when named in *only* (inotify saw a change
    below them): a buffer of many imported acquisitions is not re-read on every event."""
    rule = parse_ready(w.ready)
    marker = rule.marker if rule.kind == "marker" else None
    if not os.path.isdir(w.path):
        raise UsageError(f"the buffer {w.path} of watch {w.name} is not reachable")
    with keep.catalog.read() as session:
        rows = {
            r.folder: r
            for r in session.execute(
                select(BufferFolder).where(BufferFolder.watch_id == w.id)
            ).scalars()
        }
        session.expunge_all()
    changes: list[dict[str, Any]] = []
    next_in = float(w.poll_seconds)
    present = set(acquisition_folders(w.path, w.depth))
    for folder in sorted(present | set(rows)):
        known = rows.get(folder)
        if known is not None and folder in present:
            if known.state == "queued":
                continue
            if known.state != "waiting" and not settled and (only is None or folder not in only):
                continue
        listing = list_folder(os.path.join(w.path, folder), marker)
        change, row = _step(keep, w, folder, rows.get(folder), listing)
        if change:
            changes.append(change)
        if row is not None and row.state == "waiting" and listing is not None:
            if listing.files and is_ready(rule, listing, _posix(row.last_change), time.time()):
                queued = _queue(keep, w, row, listing)
                if queued:
                    changes.append(queued)
            elif rule.kind == "quiet":
                due = max(_posix(row.last_change), listing.newest_ns / 1e9) + rule.seconds
                next_in = min(next_in, max(0.2, due - time.time() + 0.05))
    return changes, next_in


def _change(folder: str, before: str | None, row: BufferFolder, **extra: Any) -> dict[str, Any]:
    return {
        "folder": folder,
        "from": before,
        "state": row.state,
        "files": row.files,
        "bytes": row.bytes,
        "message": row.message,
        **extra,
    }


def _step(
    keep: Keep, w: Watch, folder: str, row: BufferFolder | None, listing: Listing | None
) -> tuple[dict[str, Any] | None, BufferFolder | None]:
    """Move one folder's row along after a fresh listing (None: the folder is gone)."""
    now = utcnow()
    if listing is None:
        if row is None or row.state in ("failed", "vanished", "cleaning", "cleaned"):
            return None, row
        if row.state in ("waiting", "queued"):
            why = "folder gone (renamed or deleted) before it was imported; nothing imported"
        else:
            why = f"folder gone after import ({row.state})"
        return _move(keep, row, "vanished", message=why), row
    fp = listing.fingerprint
    counts = {"files": len(listing.files), "bytes": listing.nbytes}
    if row is None:
        new = BufferFolder(
            watch_id=w.id,
            folder=folder,
            state="waiting",
            first_seen=now,
            last_change=now,
            fingerprint=fp,
            message="",
            **counts,
        )
        with keep.catalog.write() as session:
            if not add_unique(session, new):
                return None, None  # another watcher added it a moment ago
            session.flush()
            session.expunge(new)
        return _change(folder, None, new), new
    if row.state in ("vanished", "cleaned") or (row.state == "failed" and fp != row.fingerprint):
        # a new acquisition of the same name, or a failed one whose files changed
        return _move(
            keep,
            row,
            "waiting",
            first_seen=now if row.state != "failed" else row.first_seen,
            last_change=now,
            fingerprint=fp,
            imported_at=None,
            linked=None,
            cleaned_at=None,
            job_id=None,
            message="",
            **counts,
        ), row
    if row.state == "waiting" and fp != row.fingerprint:
        _move(keep, row, "waiting", last_change=now, fingerprint=fp, **counts)
        return None, row
    if row.state == "queued":
        return _check_job(keep, row), row
    if row.state == "imported" and fp != row.fingerprint:
        why = (
            f"files changed after import ({len(listing.files)} files now, "
            f"{row.files} imported): not imported again; check the acquisition, then "
            f"'labkeep watch retry {w.name} FOLDER' to add what is new"
        )
        change = _move(keep, row, "changed", message=why)
        if change:
            with keep.catalog.write() as session:
                append_event(
                    session,
                    w.created_by,
                    "buffer.changed",
                    f"{row.project}/{row.dataset}",
                    {"watch": w.name, "folder": folder, **counts},
                )
        return change, row
    return None, row


def _move(keep: Keep, row: BufferFolder, state: str, **values: Any) -> dict[str, Any] | None:
    """Change a row's state if nobody else did since it was read (several watchers, the
    import job): conditional on its state and fingerprint."""
    before = row.state
    with keep.catalog.write() as session:
        done = session.execute(
            update(BufferFolder)
            .where(
                BufferFolder.id == row.id,
                BufferFolder.state == row.state,
                BufferFolder.fingerprint == row.fingerprint,
            )
            .values(state=state, **values)
            .execution_options(synchronize_session=False)
        )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row.state = state
    for key, value in values.items():
        setattr(row, key, value)
    return _change(row.folder, before, row) if before != state else None


def _check_job(keep: Keep, row: BufferFolder) -> dict[str, Any] | None:
    """A queued folder whose job ended without recording an outcome fails with the job's
    error (the job records imported/changed/waiting itself)."""
    if row.job_id is None:
        return _move(keep, row, "failed", message="its import job was deleted")
    with keep.catalog.read() as session:
        job = session.get(Job, row.job_id)
        state, error = (job.state, job.last_error) if job else ("failed", "job deleted")
    if state in ("failed", "cancelled"):
        return _move(keep, row, "failed", message=f"import job {row.job_id} {state}: {error}")
    return None


class _Raced(Exception):
    """Another watcher moved the row first: roll this transaction back."""


def _queue(keep: Keep, w: Watch, row: BufferFolder, listing: Listing) -> dict[str, Any] | None:
    """Resolve owner, project and dataset, then queue the import (or fail the folder)."""
    from labkeep.ops.jobs import enqueue

    try:
        owner = resolve_owner(keep, w, row.folder)
        when = datetime.fromtimestamp((listing.oldest_ns or time.time_ns()) / 1e9)
        values = template_values(row.folder, owner.name, w.name, when)
        project = render_name(w.project_template, values, "project")
        dataset = render_name(w.dataset_template, values, "dataset")
        prepare_project(keep, w, project, dataset, owner, row.folder)
    except LabkeepError as exc:
        text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        return _move(keep, row, "failed", message=text)
    args = {
        "watch": w.name,
        "folder": row.folder,
        "fingerprint": row.fingerprint,
        "dataset": f"{project}/{dataset}",
    }
    key = f"buffer-import:{w.id}:{_short(row.folder)}:{row.fingerprint}"
    waiting = (
        (BufferFolder.id == row.id)
        & (BufferFolder.state == "waiting")
        & (BufferFolder.fingerprint == row.fingerprint)
    )
    # the owner first (committed: the job's authorization reads it), then the state
    # change and the job in one transaction
    with keep.catalog.write() as session:
        session.execute(
            update(BufferFolder)
            .where(waiting)
            .values(project=project, dataset=dataset, owner=owner.name)
            .execution_options(synchronize_session=False)
        )
    try:
        with keep.catalog.write() as session:
            done = session.execute(
                update(BufferFolder)
                .where(waiting)
                .values(state="queued")
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise _Raced
            job = enqueue(
                keep.acting_as(owner),
                "buffer-import",
                args,
                target=f"{project}/{dataset}",
                unique_key=key,
                session=session,
            )
            session.execute(
                update(BufferFolder)
                .where(BufferFolder.id == row.id)
                .values(job_id=job.id, message="")
                .execution_options(synchronize_session=False)
            )
    except _Raced:
        return None
    row.state, row.job_id = "queued", job.id
    row.project, row.dataset, row.owner = project, dataset, owner.name
    return _change(
        row.folder, "waiting", row, job=job.id, dataset=f"{project}/{dataset}", owner=owner.name
    )


def _short(folder: str) -> str:
    import hashlib

    return hashlib.sha256(folder.encode("utf-8", "surrogateescape")).hexdigest()[:16]


# -- attribution ----------------------------------------------------------------------
def resolve_owner(keep: Keep, w: Watch, folder: str) -> Principal:
    """The labkeep user an acquisition folder belongs to, by the watch's owner rule;
    the owner map (account or folder name -> user) is consulted first."""
    from labkeep.ops.accounts import local_principal

    mapping: dict[str, str] = json.loads(w.owner_map or "{}")
    rule = w.owner_from
    if rule.startswith("user:"):
        name = rule[5:]
    elif rule == "folder-name":
        top = folder.split("/")[0]
        name = mapping.get(top, top)
    else:
        account = os_account(os.stat(os.path.join(w.path, folder)).st_uid)
        if account in mapping:
            name = mapping[account]
        elif rule == "map":
            raise UsageError(
                f"the folder's OS owner {account!r} is not in the owner map of watch {w.name}",
                hint="add it: 'labkeep watch remove' and 'watch add' with --owner-map "
                f"{account}=USER, or map the account to a user ('labkeep user add USER "
                f"--os-user {account}') and use --owner-from folder-owner",
            )
        else:
            principal = local_principal(keep, account)
            if principal.kind != "user":
                raise UsageError(
                    f"no labkeep user for the folder's OS owner {account!r}",
                    hint=f"'labkeep user add USER --os-user {account}', or an owner map "
                    f"entry {account}=USER; then 'labkeep watch retry {w.name} FOLDER'",
                )
            name = principal.name
    try:
        return keep.principal_for(name)
    except LabkeepError as exc:
        raise UsageError(
            f"the owner {name!r} of {folder} is not a usable labkeep user ({exc.message})",
            hint=f"create the user, or fix the owner rule; then 'labkeep watch retry {w.name}'",
        ) from None


def prepare_project(
    keep: Keep, w: Watch, project: str, dataset: str, owner: Principal, folder: str
) -> None:
    """Make sure *owner* may import into PROJECT/DATASET: create a missing project as the
    watch's creator and grant the owner write on the watch's own projects."""
    from labkeep.ops._access import project_resource

    creator = keep.principal_for(w.created_by)
    if not creator.site_admin:
        raise Forbidden(f"the watch's creator {w.created_by} is no longer a site admin")
    admin = keep.acting_as(creator)
    ours = set(json.loads(w.settings or "{}").get("projects", []))
    with keep.catalog.read() as session:
        proj = session.execute(select(Project).where(Project.name == project)).scalar_one_or_none()
        may = proj is not None and allowed(owner, "dataset.create", project_resource(session, proj))
        if proj is not None:
            ds = session.execute(
                select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == dataset)
            ).scalar_one_or_none()
            if ds is not None and ds.sealed:
                raise UsageError(
                    f"dataset {project}/{dataset} exists and is sealed",
                    hint="a folder of the same name was imported before: rename the folder "
                    "or change the watch's dataset template",
                )
    if proj is None:
        with contextlib.suppress(AlreadyExists):
            admin.create_project(project, title=f"imported from buffer {w.name}")
        ours.add(project)
        with keep.catalog.write() as session:
            row = session.get_one(Watch, w.id)
            settings = json.loads(row.settings or "{}")
            settings["projects"] = sorted(set(settings.get("projects", [])) | {project})
            row.settings = w.settings = json.dumps(settings)
    if not may:
        if project not in ours:
            raise UsageError(
                f"{owner.name} may not add datasets to project {project}, which this watch "
                "did not create",
                hint=f"a manager of {project}: 'labkeep grant {owner.name} write {project}'; "
                f"then 'labkeep watch retry {w.name} {folder}'",
            )
        admin.grant(owner.name, "write", project)


# -- the long-running watcher -------------------------------------------------------------
def run_watchers(
    keep: Keep,
    *,
    stop: threading.Event,
    on_queued: Callable[[], None],
    log: Callable[..., None],
    names: list[str] | None = None,
) -> None:
    """Watch every enabled watch (or those named) until *stop* is set: inotify watches
    are rescanned as soon as something changes below them (and every ``poll_seconds``),
    polling ones every ``poll_seconds``, all of them when a quiet period ends.
    *on_queued* is called after a scan queued imports (to wake idle job runners)."""
    wake = threading.Event()
    #: watch id -> acquisition folders inotify saw change below (None: look at all)
    dirty: dict[int, set[str] | None] = {}
    due: dict[int, float] = {}
    last_settled: dict[int, float] = {}
    watches: dict[int, Watch] = {}
    observers: dict[int, Any] = {}
    next_reload = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_reload:
                try:
                    watches = _load_watches(keep, names)
                except EnvironmentFailure as exc:
                    if not watches:
                        raise
                    log("watch.catalog_unreachable", error=str(exc))  # go on with the last
                _sync_observers(observers, watches, dirty, wake, log)
                next_reload = now + 30.0
            for wid, w in watches.items():
                if wid not in dirty and due.get(wid, 0.0) > now:
                    continue
                only = dirty.pop(wid, None) if wid in dirty else None
                settled = now - last_settled.get(wid, 0.0) >= max(SETTLED_EVERY, w.poll_seconds)
                if settled and only is None:
                    last_settled[wid] = now
                try:
                    changes, next_in = scan_watch(keep, w, only=only, settled=settled)
                except (LabkeepError, OSError) as exc:
                    log("watch.error", watch=w.name, error=str(exc))
                    changes, next_in = [], float(w.poll_seconds)
                for change in changes:
                    log("watch.folder", watch=w.name, **change)
                if any(c["state"] == "queued" for c in changes):
                    on_queued()
                due[wid] = time.monotonic() + next_in
            soonest = min(due.values(), default=now + 1.0)
            if wake.wait(max(0.05, min(soonest - time.monotonic(), 0.5))):
                wake.clear()
                stop.wait(0.1)  # let a burst of events settle into one scan
    finally:
        for observer in observers.values():
            observer.stop()
        for observer in observers.values():
            observer.join(5.0)


def _load_watches(keep: Keep, names: list[str] | None) -> dict[int, Watch]:
    with keep.catalog.read() as session:
        query = select(Watch).where(Watch.enabled.is_(True))
        if names:
            query = query.where(Watch.name.in_(names))
        rows = list(session.execute(query).scalars())
        session.expunge_all()
    if names:
        missing = set(names) - {w.name for w in rows}
        if missing:
            raise NotFound(f"no enabled watch {', '.join(sorted(missing))}")
    return {w.id: w for w in rows}


def _sync_observers(
    observers: dict[int, Any],
    watches: dict[int, Watch],
    dirty: dict[int, set[str] | None],
    wake: threading.Event,
    log: Callable[..., None],
) -> None:
    """One inotify observer per inotify-mode watch; events only mark the watch dirty."""
    import warnings

    from watchdog import events as ev
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    # what the kernel reports: names appearing, moving, going, and files closed after
    # writing. Not attribute changes, opens or reads: an import hard-links every file
    # (its link count changes) and reads it, and thousands of such events per second
    # would only cost the import time. Timed scans still see what inotify does not.
    EVENTS = (
        ev.FileCreatedEvent,
        ev.DirCreatedEvent,
        ev.FileMovedEvent,
        ev.DirMovedEvent,
        ev.FileDeletedEvent,
        ev.DirDeletedEvent,
        ev.FileClosedEvent,
    )

    # watchdog's inotify thread warns when a folder created meanwhile is added twice to
    # its recursive watch (harmless: the callback is replaced); not a problem of ours
    warnings.filterwarnings(
        "ignore", message="Callback with id .* already exists", category=RuntimeWarning
    )

    for wid in list(observers):
        if wid not in watches or watches[wid].mode != "inotify":
            observers.pop(wid).stop()

    class Wake(FileSystemEventHandler):
        def __init__(self, wid: int, base: str, depth: int) -> None:
            self.wid, self.base, self.depth = wid, base, depth

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return  # reads (our own scans and imports) are not changes
            folders = set()
            for path in (event.src_path, getattr(event, "dest_path", "")):
                if not path:
                    continue
                rel = os.path.relpath(os.fsdecode(path), self.base).split(os.sep)
                if rel[0] == ".." or len(rel) <= self.depth:
                    folders.add("")  # at or above the acquisition folders: look at all
                else:
                    folders.add("/".join(rel[: self.depth]))
            current = dirty.get(self.wid, set())
            if "" in folders or (self.wid in dirty and current is None):
                dirty[self.wid] = None
            else:
                dirty[self.wid] = (current or set()) | folders
            wake.set()

    for wid, w in watches.items():
        if w.mode != "inotify" or wid in observers:
            continue
        observer = Observer()
        try:
            observer.schedule(
                Wake(wid, w.path, w.depth), w.path, recursive=True, event_filter=list(EVENTS)
            )
            observer.start()
        except OSError as exc:
            log("watch.inotify_unavailable", watch=w.name, error=str(exc))
            continue
        observers[wid] = observer


# the job kinds buffer-import and buffer-clean: workers import this module (it is in
# labkeep.ops.jobs._BUILTIN), which registers them
from labkeep.ops import _buffer_import, buffers  # noqa: E402, F401
