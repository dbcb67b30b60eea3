"""Stores and copy policies: where a keep's content lives, and how many copies it needs.

A store is a row in the catalog (name, kind, tier, medium, off-site, settings) plus a
backend that reaches it (:mod:`labkeep.storage`). Secrets never enter the catalog: an S3
store names an AWS profile (a section of a credentials file) or relies on the
environment. A policy per project (and a keep default) says how many verified copies
each file needs, on how many kinds of media, how many off site, which stores a sealed
dataset is copied to, and whether a sealed dataset's tree copy may be dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from labkeep.access import check
from labkeep.catalog import Policy, Replica, Store, add_unique
from labkeep.clock import utcnow
from labkeep.errors import AlreadyExists, NotFound, StoreUnavailable, UsageError
from labkeep.names import check_slug
from labkeep.ops._access import find_project, project_resource
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.storage.base import ContentStore

KINDS = ("objects", "s3")
TIERS = ("hot", "warm", "cold")
MEDIA = ("disk", "object", "tape", "optical", "cloud")
LOCK_MODES = ("compliance", "governance")


@dataclass
class StoreInfo:
    name: str
    kind: str
    tier: str
    location: str
    medium: str
    offsite: bool
    settings: dict[str, Any] = field(default_factory=dict)
    #: filled by list_stores(check=True)
    reachable: bool | None = None
    message: str = ""
    lock_mode: str | None = None
    objects: int | None = None
    bytes: int | None = None
    free_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        record = {
            "name": self.name,
            "kind": self.kind,
            "tier": self.tier,
            "location": self.location,
            "medium": self.medium,
            "offsite": self.offsite,
            "lock_mode": self.lock_mode or self.settings.get("lock_mode"),
            "retention_days": self.settings.get("retention_days"),
            "objects": self.objects,
            "bytes": self.bytes,
        }
        if self.reachable is not None:
            record["reachable"] = self.reachable
            if self.message:
                record["message"] = self.message
        if self.free_bytes is not None:
            record["free_bytes"] = self.free_bytes
        return record


def _info(row: Store) -> StoreInfo:
    return StoreInfo(
        row.name,
        row.kind,
        row.tier,
        row.location,
        row.medium,
        bool(row.offsite),
        json.loads(row.settings or "{}"),
    )


def parse_retention(text: str) -> int:
    """``10y``, ``18m`` (months), ``90d`` or a number of days, as days."""
    match = re.fullmatch(r"\s*(\d+)\s*(y|m|d)?\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise UsageError(
            f"invalid retention {text!r}", hint="give years, months or days: 10y, 18m, 90d"
        )
    number = int(match.group(1))
    days = {"y": 366 * number, "m": 31 * number}.get(match.group(2) or "d", number)
    if days > 100 * 366:
        raise UsageError(f"retention {text!r} is over 100 years")
    return days


def backend(row: Store | StoreInfo) -> ContentStore:
    """The backend that reaches a content store (not the tree)."""
    settings = json.loads(row.settings) if isinstance(row, Store) else row.settings
    if row.kind == "objects":
        from labkeep.storage.objects import ObjectsStore

        return ObjectsStore(row.name, row.location)
    if row.kind == "s3":
        try:
            from labkeep.storage.s3 import S3Store
        except ImportError as exc:
            raise StoreUnavailable(
                f"store {row.name!r} is on S3, and boto3 is not installed ({exc})",
                hint="install the S3 extra: pip install 'labkeep[s3]'",
            ) from None
        retention = settings.get("retention_days")
        return S3Store(
            row.name,
            bucket=settings["bucket"],
            endpoint=settings.get("endpoint") or None,
            prefix=settings.get("prefix", ""),
            region=settings.get("region") or "us-east-1",
            profile=settings.get("profile") or None,
            credentials_file=settings.get("credentials_file") or None,
            lock_mode=(settings.get("lock_mode") or "").upper() or None,
            retention_days=int(retention) if retention else None,
            storage_class=settings.get("storage_class") or None,
        )
    raise UsageError(f"store {row.name!r} of kind {row.kind!r} holds no content by key")


def retain_until(info: StoreInfo | Store, now: datetime | None = None) -> datetime | None:
    settings = json.loads(info.settings) if isinstance(info, Store) else info.settings
    days = settings.get("retention_days")
    if not settings.get("lock_mode") or not days:
        return None
    return (now or utcnow()) + timedelta(days=int(days))


def add_store(
    keep: Keep,
    name: str,
    *,
    kind: str,
    path: str | None = None,
    endpoint: str | None = None,
    bucket: str | None = None,
    prefix: str = "",
    region: str | None = None,
    credentials: str | None = None,
    credentials_file: str | None = None,
    tier: str = "warm",
    medium: str | None = None,
    offsite: bool = False,
    object_lock: str | None = None,
    retention: str | None = None,
    storage_class: str | None = None,
    create_bucket: bool = False,
) -> StoreInfo:
    """Register a store after checking that it can be reached and written to.

    Nothing is recorded for a store that cannot be used (a missing folder, an endpoint
    that does not answer, wrong credentials, a missing bucket, a bucket without Object
    Lock when a lock is asked for).
    """
    check(keep.principal, "store.manage")
    check_slug(name, "store name")
    if name == "tree":
        raise UsageError("'tree' is the keep's primary store; pick another name")
    if kind not in KINDS:
        raise UsageError(f"unknown store kind {kind!r}", hint="use one of: " + ", ".join(KINDS))
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}", hint="use one of: " + ", ".join(TIERS))
    medium = medium or ("disk" if kind == "objects" else "object")
    if medium not in MEDIA:
        raise UsageError(f"unknown medium {medium!r}", hint="use one of: " + ", ".join(MEDIA))
    settings: dict[str, Any] = {}
    if object_lock is not None:
        object_lock = object_lock.lower()
        if object_lock not in LOCK_MODES:
            raise UsageError(
                f"unknown Object Lock mode {object_lock!r}", hint="use compliance or governance"
            )
        if kind != "s3":
            raise UsageError("Object Lock is a feature of S3 stores")
        if retention is None:
            raise UsageError("--object-lock needs --retention (e.g. 10y)")
        settings.update(lock_mode=object_lock, retention_days=parse_retention(retention))
    elif retention is not None:
        raise UsageError("--retention needs --object-lock compliance|governance")
    if kind == "objects":
        if not path:
            raise UsageError("an objects store needs --path (a folder, e.g. on a backup disk)")
        folder = Path(path).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise UsageError(
                f"store {name!r}: {folder} is a file, not a folder",
                hint="give a folder (it is created if missing)",
            )
        base, real = keep.tree.base.resolve(), folder.resolve()
        if base in (real, *real.parents):
            raise UsageError(f"{folder} is inside the keep's tree: pick a folder outside it")
        if _nested(str(real), str(keep.config.versions_path.resolve())):
            raise UsageError(
                f"{folder} is where the keep's versions store is (or holds it): "
                f"{keep.config.versions_path}",
                hint="pick a folder of its own for this store",
            )
        if real in base.parents:
            raise UsageError(
                f"{folder} holds the keep's tree ({base}): a store there would mix its "
                "content with the tree's",
                hint="pick a folder of its own, outside the keep's tree",
            )
        if not folder.parent.is_dir():
            raise StoreUnavailable(
                f"{folder.parent} does not exist (is the disk mounted?)",
                hint="mount the disk or create the folder, then run the same command again",
            )
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create {folder}: {exc.strerror}", hint="check the permissions"
            ) from None
        location = str(folder)
    else:
        if not bucket:
            raise UsageError("an S3 store needs --bucket")
        if endpoint and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", endpoint):
            raise UsageError(
                f"store {name!r}: {endpoint!r} is not an endpoint URL",
                hint="give it as http(s)://HOST[:PORT], e.g. https://s3.example.org",
            )
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise UsageError(
                f"store {name!r}: {bucket!r} is not a valid bucket name",
                hint="3-63 characters: lower-case letters, digits, dots and hyphens",
            )
        if path:
            raise UsageError("--path is for objects stores; S3 stores take --endpoint/--bucket")
        settings.update(
            endpoint=endpoint or "",
            bucket=bucket,
            prefix=prefix.strip("/") + "/" if prefix.strip("/") else "",
            region=region or "us-east-1",
            profile=credentials or "",
            credentials_file=str(Path(credentials_file).expanduser().absolute())
            if credentials_file
            else "",
        )
        if storage_class:
            settings["storage_class"] = storage_class
        location = f"{endpoint or 's3'}/{bucket}" + (f"/{settings['prefix']}" if prefix else "")
    info = StoreInfo(name, kind, tier, location, medium, offsite, settings)
    if create_bucket and kind == "s3":
        from labkeep.storage.s3 import S3Store

        S3Store.create_bucket(  # versioned, Object Lock enabled: retention is set per put
            settings["bucket"],
            endpoint=settings["endpoint"] or None,
            region=settings["region"],
            profile=settings["profile"] or None,
            credentials_file=settings["credentials_file"] or None,
            name=name,
        )
    store = backend(info)
    try:
        health = store.check()
    finally:
        store.close()
    if not health.reachable or not health.writable:
        raise StoreUnavailable(
            f"store {name!r} cannot be used: {health.message}",
            hint="fix that, then run the same command again (nothing was recorded)",
        )
    if object_lock and (health.lock_mode or "").lower() not in LOCK_MODES:
        raise UsageError(
            f"bucket {bucket!r} has no Object Lock: WORM retention cannot be enforced there",
            hint="use a bucket created with Object Lock enabled (labkeep store add ... "
            "--create-bucket makes one)",
        )
    with keep.catalog.write() as session:
        _refuse_overlap(session, info)
        row = Store(
            name=name,
            kind=kind,
            tier=tier,
            location=location,
            created_at=utcnow(),
            offsite=offsite,
            medium=medium,
            settings=json.dumps(settings, sort_keys=True),
        )
        if not add_unique(session, row):
            raise AlreadyExists(f"a store named {name!r} exists", hint="pick another name")
        append_event(
            session, keep.actor, "store.add", f"store:{name}", {**info.to_dict(), **settings}
        )
    info.reachable, info.lock_mode, info.free_bytes = True, health.lock_mode, health.free_bytes
    return info


def _where(info: StoreInfo) -> tuple[str, ...]:
    """Where a store's content lives, to compare stores: an objects store's real folder;
    an S3 store's endpoint, bucket and key prefix."""
    if info.kind == "objects":
        return ("objects", str(Path(info.location).resolve()))
    settings = info.settings
    endpoint = str(settings.get("endpoint") or "").lower().rstrip("/")
    return ("s3", endpoint, str(settings.get("bucket")), str(settings.get("prefix") or ""))


def _nested(a: str, b: str) -> bool:
    """Paths or key prefixes *a* and *b* are the same place, or one holds the other
    (the empty prefix, a whole bucket, holds every other)."""
    a, b = (x if x == "" or x.endswith("/") else x + "/" for x in (a, b))
    return a.startswith(b) or b.startswith(a)


def _refuse_overlap(session: Session, info: StoreInfo) -> None:
    """Two stores on the same folder or bucket (or one inside the other) would count one
    physical copy twice, and a drop from one would delete the other's content."""
    mine = _where(info)
    for row in session.execute(select(Store).where(Store.kind == info.kind)).scalars():
        other = _info(row)
        theirs = _where(other)
        if info.kind == "objects":
            same = _nested(mine[1], theirs[1])
        else:
            same = mine[1:3] == theirs[1:3] and _nested(mine[3], theirs[3])
        if same:
            raise AlreadyExists(
                f"store {info.name!r} would hold its content where store {other.name!r} "
                f"does ({other.location}): one copy would count as two",
                hint=f"pick another {'folder' if info.kind == 'objects' else 'bucket or prefix'}"
                f", or use store {other.name!r}",
            )


def list_stores(keep: Keep, *, check_health: bool = True) -> list[StoreInfo]:
    """Every store, with what the catalog says it holds and (with *check_health*) whether
    it can be reached now."""
    check(keep.principal, "keep.admin")
    with keep.catalog.read() as session:
        rows = session.execute(select(Store).order_by(Store.id)).scalars().all()
        held = dict(
            (sid, (int(n), int(b)))
            for sid, n, b in session.execute(
                select(
                    Replica.store_id,
                    func.count(Replica.id),
                    func.coalesce(func.sum(Replica.size), 0),
                ).group_by(Replica.store_id)
            )
        )
        infos = [(_info(r), r.id) for r in rows]
    out = []
    for info, store_id in infos:
        info.objects, info.bytes = held.get(store_id, (0, 0))
        if info.kind == "tree":
            info.reachable = keep.tree.base.is_dir() if check_health else None
            if check_health and not info.reachable:
                info.message = f"{keep.tree.base} is missing (unmounted?)"
        elif check_health:
            try:
                store = backend(info)
                try:
                    health = store.check()
                finally:
                    store.close()
            except StoreUnavailable as exc:
                info.reachable, info.message = False, exc.message
            else:
                info.reachable, info.message = health.reachable, health.message
                info.lock_mode, info.free_bytes = health.lock_mode, health.free_bytes
        out.append(info)
    return out


def get_store(session: Session, name: str) -> Store:
    row = session.execute(select(Store).where(Store.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no store named {name!r}", hint="'labkeep store list' shows the stores")
    return row


def remove_store(keep: Keep, name: str) -> None:
    """Forget a store that holds no recorded replica (drop its content first)."""
    check(keep.principal, "store.manage")
    with keep.catalog.write() as session:
        row = get_store(session, name)
        if row.kind == "tree":
            raise UsageError("the tree is the keep's primary store and cannot be removed")
        n = session.execute(
            select(func.count(Replica.id)).where(Replica.store_id == row.id)
        ).scalar_one()
        if n:
            raise UsageError(
                f"store {name!r} still holds {n:,} recorded copies",
                hint=f"drop them first ('labkeep drop PROJECT --from {name}')",
            )
        from labkeep.catalog import Project

        naming = [
            project or "(the keep's default)"
            for project, rules in session.execute(
                select(Project.name, Policy.on_seal).outerjoin(
                    Project, Project.id == Policy.project_id
                )
            )
            if name in (rules or "").split(",")
        ]
        if naming:
            first = naming[0] if naming[0] != "(the keep's default)" else "--default"
            raise UsageError(
                f"store {name!r} is named by the copy-on-seal rules of: {', '.join(naming)}",
                hint=f"change those rules first ('labkeep policy set {first} --on-seal ...')",
            )
        session.delete(row)
        append_event(session, keep.actor, "store.remove", f"store:{name}", {})


# -- policies --------------------------------------------------------------------------


@dataclass
class PolicyInfo:
    project: str | None
    min_copies: int = 1
    min_media: int = 1
    min_offsite: int = 0
    on_seal: list[str] = field(default_factory=list)
    tree_droppable: bool = False
    #: the project has no policy of its own: this is the keep's default
    inherited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "min_copies": self.min_copies,
            "min_media": self.min_media,
            "min_offsite": self.min_offsite,
            "on_seal": self.on_seal,
            "tree_droppable": self.tree_droppable,
            "inherited": self.inherited,
        }


def _policy_info(row: Policy | None, project: str | None, inherited: bool) -> PolicyInfo:
    if row is None:
        return PolicyInfo(project, inherited=inherited)
    return PolicyInfo(
        project,
        row.min_copies,
        row.min_media,
        row.min_offsite,
        [s for s in row.on_seal.split(",") if s],
        bool(row.tree_droppable),
        inherited,
    )


def policy_for(session: Session, project_id: int, project: str | None = None) -> PolicyInfo:
    """The project's policy, else the keep's default, else one copy."""
    own = session.execute(
        select(Policy).where(Policy.project_id == project_id)
    ).scalar_one_or_none()
    if own is not None:
        return _policy_info(own, project, False)
    default = session.execute(
        select(Policy).where(Policy.project_id.is_(None))
    ).scalar_one_or_none()
    return _policy_info(default, project, True)


def get_policy(keep: Keep, project: str | None = None) -> PolicyInfo:
    with keep.catalog.read() as session:
        if project is None:
            row = session.execute(
                select(Policy).where(Policy.project_id.is_(None))
            ).scalar_one_or_none()
            return _policy_info(row, None, False)
        proj = find_project(keep, session, project)
        return policy_for(session, proj.id, proj.name)


def set_policy(
    keep: Keep,
    project: str | None,
    *,
    min_copies: int | None = None,
    min_media: int | None = None,
    min_offsite: int | None = None,
    on_seal: list[str] | None = None,
    tree_droppable: bool | None = None,
) -> PolicyInfo:
    """Set (part of) a project's policy, or the keep's default (*project* None)."""
    for value, what in ((min_copies, "--min-copies"), (min_media, "--min-media")):
        if value is not None and not 1 <= value <= 20:
            raise UsageError(f"{what} must be between 1 and 20")
    if min_offsite is not None and not 0 <= min_offsite <= 20:
        raise UsageError("--min-offsite must be between 0 and 20")
    with keep.catalog.write() as session:
        if project is None:
            check(keep.principal, "store.manage")
            project_id = None
        else:
            proj = find_project(keep, session, project)
            check(keep.principal, "project.policy", project_resource(session, proj))
            project_id = proj.id
        if on_seal is not None:
            for name in on_seal:
                store = get_store(session, name)
                if store.kind == "tree":
                    raise UsageError("the tree already holds every dataset; name other stores")
        row = session.execute(
            select(Policy).where(
                Policy.project_id.is_(None)
                if project_id is None
                else Policy.project_id == project_id
            )
        ).scalar_one_or_none()
        if row is None:
            base = policy_for(session, project_id) if project_id is not None else PolicyInfo(None)
            row = Policy(
                project_id=project_id,
                min_copies=base.min_copies,
                min_media=base.min_media,
                min_offsite=base.min_offsite,
                on_seal=",".join(base.on_seal),
                tree_droppable=base.tree_droppable,
                updated_at=utcnow(),
                updated_by=keep.actor,
            )
            session.add(row)
        if min_copies is not None:
            row.min_copies = min_copies
        if min_media is not None:
            row.min_media = min_media
        if min_offsite is not None:
            row.min_offsite = min_offsite
        if on_seal is not None:
            row.on_seal = ",".join(dict.fromkeys(on_seal))
        if tree_droppable is not None:
            row.tree_droppable = tree_droppable
        for n, what in ((row.min_media, "kinds of media"), (row.min_offsite, "off-site copies")):
            if n > row.min_copies:  # could never be met: every dataset would stay below it
                raise UsageError(
                    f"{n} {what} cannot be had with {row.min_copies} copies",
                    hint="raise --min-copies to at least that, or lower the other",
                )
        row.updated_at, row.updated_by = utcnow(), keep.actor
        session.flush()
        info = _policy_info(row, project, False)
        append_event(session, keep.actor, "policy.set", project or "(default)", info.to_dict())
        return info


def parse_on_seal(text: str) -> list[str]:
    """``copy:backup,archive`` (or ``backup,archive``; empty: none) as store names."""
    text = text.strip()
    if text.startswith("copy:"):
        text = text[5:]
    elif ":" in text:
        raise UsageError(
            f"unknown rule {text!r}", hint="write --on-seal copy:STORE[,STORE...] (or '' for none)"
        )
    return [s.strip() for s in text.split(",") if s.strip()]
