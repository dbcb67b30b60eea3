"""Share links: a secret URL token that opens one project, dataset, version or file
read-only to anyone holding it, until it expires, runs out of downloads or is revoked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.access import Principal, ShareScope, allowed, check
from labkeep.access.secrets import SHARE_PREFIX, new_secret, secret_hash
from labkeep.catalog import Dataset, Project, ShareDownload, ShareLink, User
from labkeep.clock import isoformat, parse_duration, utcnow
from labkeep.errors import AuthenticationFailed, Forbidden, NotFound, UsageError
from labkeep.names import MAX_LABEL, check_text, parse_address
from labkeep.ops._access import find_dataset, find_project, load_principal, project_resource
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.files import FileInfo

MAX_EXPIRY = "365d"


@dataclass
class ShareInfo:
    id: int
    target: str
    label: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_downloads: int | None
    downloads: int
    revoked_at: datetime | None
    #: its creator may no longer share what it opens (disabled, or lost the access):
    #: the link does not work until they may again
    suspended: bool = False

    @property
    def active(self) -> bool:
        return (
            self.revoked_at is None
            and not self.suspended
            and self.expires_at > utcnow()
            and (self.max_downloads is None or self.downloads < self.max_downloads)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "label": self.label,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.expires_at),
            "max_downloads": self.max_downloads,
            "downloads": self.downloads,
            "revoked_at": isoformat(self.revoked_at),
            "suspended": self.suspended,
            "active": self.active,
            "state": self.state,
        }

    @property
    def state(self) -> str:
        """active, suspended (its creator may no longer share it), revoked, expired or
        used up."""
        if self.revoked_at is not None:
            return "revoked"
        if self.max_downloads is not None and self.downloads >= self.max_downloads:
            return "used up"
        if self.expires_at <= utcnow():
            return "expired"
        return "suspended" if self.suspended else "active"


def _target_text(project: str, dataset: str | None, path: str | None, version: int | None) -> str:
    text = project + (f"/{dataset}" if dataset else "") + (f"/{path}" if path else "")
    return text + (f"@{version}" if version is not None else "")


def _info(
    link: ShareLink, project: str, dataset: str | None, creator: str, suspended: bool = False
) -> ShareInfo:
    return ShareInfo(
        link.id,
        _target_text(project, dataset, link.path, link.version),
        link.label,
        creator,
        link.created_at,
        link.expires_at,
        link.max_downloads,
        link.downloads,
        link.revoked_at,
        suspended,
    )


def creator_may_share(session: Session, link: ShareLink) -> bool:
    """Whether the link's creator still may share what it opens (a link lives no longer
    than the access that made it: disabling the creator or revoking their grant suspends
    it; giving the access back lets it work again)."""
    user = session.get(User, link.created_by)
    if user is None or user.disabled:
        return False
    project = session.get(Project, link.project_id)
    if project is None:
        return False
    dataset = session.get(Dataset, link.dataset_id) if link.dataset_id is not None else None
    resource = project_resource(session, project, dataset)
    return allowed(load_principal(session, user), "share.create", resource)


def links_message(count: int, creator: str | None, state: str, where: str = "") -> str:
    """'2 share links made by alice are suspended' (what disable, enable and revoke say)."""
    links = "1 share link" if count == 1 else f"{count} share links"
    verb = "is" if count == 1 else "are"
    by = f" made by {creator}" if creator else f" on {where}"
    return f"{links}{by} {verb} {state}"


def count_live(
    session: Session,
    *,
    creator_id: int | None = None,
    project_id: int | None = None,
    working: bool | None = None,
) -> int:
    """How many links of a creator (or on a project) are neither revoked, expired nor
    used up; of those, only the ones that work (*working* True) or are suspended (False).
    """
    query = select(ShareLink).where(ShareLink.revoked_at.is_(None), ShareLink.expires_at > utcnow())
    if creator_id is not None:
        query = query.where(ShareLink.created_by == creator_id)
    if project_id is not None:
        query = query.where(ShareLink.project_id == project_id)
    return sum(
        1
        for link in session.execute(query).scalars()
        if (link.max_downloads is None or link.downloads < link.max_downloads)
        and (working is None or creator_may_share(session, link) == working)
    )


def create_share(
    keep: Keep,
    address: str,
    *,
    expires: str = "7d",
    max_downloads: int | None = None,
    label: str = "",
) -> tuple[str, ShareInfo]:
    """Create a link; returns the secret token (shown once, stored only hashed) and its info."""
    delta = parse_duration(expires)
    if delta > parse_duration(MAX_EXPIRY):
        raise UsageError(f"share links expire after at most {MAX_EXPIRY}")
    if max_downloads is not None and max_downloads < 1:
        raise UsageError("--max-downloads must be at least 1")
    check_text(label, "the label", MAX_LABEL)
    addr = parse_address(address)
    with keep.catalog.write() as session:
        dataset: Dataset | None = None
        if addr.dataset:
            proj, dataset = find_dataset(
                keep,
                session,
                addr.project,
                addr.dataset,
                "share.create",
                version=addr.version,
                path=addr.path,
            )
            if addr.path is not None or addr.version is not None:
                from labkeep.ops.listing import ls

                ls(keep, address, limit=1)  # the file or version must exist: NotFound otherwise
        else:
            if addr.version is not None:
                raise UsageError("a version belongs to a dataset: use PROJECT/DATASET@VERSION")
            proj = find_project(keep, session, addr.project, "share.create")
        if keep.principal.user_id is None:
            raise Forbidden("only signed-in users create share links")
        token = new_secret(SHARE_PREFIX)
        now = utcnow()
        link = ShareLink(
            token_hash=secret_hash(token),
            project_id=proj.id,
            dataset_id=dataset.id if dataset else None,
            version=addr.version,
            path=addr.path,
            label=label,
            created_by=keep.principal.user_id,
            created_at=now,
            expires_at=now + delta,
            max_downloads=max_downloads,
            downloads=0,
            revoked_at=None,
        )
        session.add(link)
        session.flush()
        info = _info(link, proj.name, dataset.name if dataset else None, keep.actor)
        append_event(
            session,
            keep.actor,
            "share-create",
            info.target,
            {
                "link": link.id,
                "expires_at": isoformat(link.expires_at),
                "max_downloads": max_downloads,
            },
        )
    return token, info


def _rows(session: Any, query: Any) -> list[ShareInfo]:
    return [
        _info(link, p, d, u, suspended=not creator_may_share(session, link))
        for link, p, d, u in session.execute(
            query.join(Project, Project.id == ShareLink.project_id)
            .outerjoin(Dataset, Dataset.id == ShareLink.dataset_id)
            .join(User, User.id == ShareLink.created_by)
            .order_by(ShareLink.id)
        )
    ]


def dataset_shares(session: Session, dataset_id: int) -> list[ShareInfo]:
    """The links on a dataset (the caller checked ``share.manage`` on it)."""
    query = select(ShareLink, Project.name, Dataset.name, User.name)
    return _rows(session, query.where(ShareLink.dataset_id == dataset_id))


def list_shares(keep: Keep, target: str | None = None) -> list[ShareInfo]:
    """Your own links, or with *target* all links on it (for those who manage it)."""
    query = select(ShareLink, Project.name, Dataset.name, User.name)
    with keep.catalog.read() as session:
        if target is None:
            if keep.principal.user_id is None:
                raise Forbidden("sign in to list your share links")
            return _rows(session, query.where(ShareLink.created_by == keep.principal.user_id))
        addr = parse_address(target)
        if addr.dataset:
            proj, dataset = find_dataset(keep, session, addr.project, addr.dataset, "share.manage")
            query = query.where(ShareLink.dataset_id == dataset.id)
        else:
            proj = find_project(keep, session, addr.project, "share.manage")
        return _rows(session, query.where(ShareLink.project_id == proj.id))


def revoke_share(keep: Keep, link_id: int) -> ShareInfo:
    """Revoke a link: its creator may, and whoever manages what it shares."""
    with keep.catalog.write() as session:
        row = session.execute(
            select(ShareLink, Project, Dataset, User.name)
            .join(Project, Project.id == ShareLink.project_id)
            .outerjoin(Dataset, Dataset.id == ShareLink.dataset_id)
            .join(User, User.id == ShareLink.created_by)
            .where(ShareLink.id == link_id)
        ).first()
        if row is None:
            raise NotFound(f"no share link {link_id}", hint="see 'labkeep share list'")
        link, proj, dataset, creator = row
        own = link.created_by == keep.principal.user_id
        if not own:
            resource = project_resource(session, proj, dataset)
            if not allowed(keep.principal, "project.read", resource):
                raise NotFound(f"no share link {link_id}", hint="see 'labkeep share list'")
            check(keep.principal, "share.manage", resource)
        if link.revoked_at is None:
            link.revoked_at = utcnow()
        info = _info(link, proj.name, dataset.name if dataset else None, creator)
        append_event(session, keep.actor, "share-revoke", info.target, {"link": link.id})
    return info


def open_share(keep: Keep, token: str, *, resuming: bool = False) -> Principal:
    """The principal of a share link's holder; one error for unknown, expired and revoked.

    A link that reached its download limit opens only to *resume* a download it counted
    (a later range of the same file, see :func:`count_download`).
    """
    failed = AuthenticationFailed(
        "this share link is invalid, expired or revoked",
        hint="ask the person who shared it for a new link",
    )
    if not token.startswith(SHARE_PREFIX):
        raise failed
    with keep.catalog.read() as session:
        link = session.execute(
            select(ShareLink).where(ShareLink.token_hash == secret_hash(token))
        ).scalar_one_or_none()
        if link is None or link.revoked_at is not None or link.expires_at <= utcnow():
            raise failed
        used_up = link.max_downloads is not None and link.downloads >= link.max_downloads
        if used_up and not resuming:
            raise failed
        if not creator_may_share(session, link):
            raise failed
        scope = ShareScope(link.id, link.project_id, link.dataset_id, link.version, link.path)
        return Principal("share", name=f"share:{link.id}", share=scope)


def count_download(keep: Keep, file: FileInfo | None = None, *, resuming: bool = False) -> None:
    """Count one download (a file, or a zip when *file* is None) through the acting share
    link; refuse once its limit is reached. A file is remembered, so that *resuming* it
    (fetching the rest in ranges) is allowed and not counted again."""
    scope = keep.principal.share
    if scope is None:
        return
    with keep.catalog.write() as session:
        link = session.execute(
            select(ShareLink).where(ShareLink.id == scope.link_id).with_for_update()
        ).scalar_one()
        if (
            link.revoked_at is not None
            or link.expires_at <= utcnow()
            or not creator_may_share(session, link)
        ):
            # (a holder who opened the link earlier is stopped at the next download)
            raise AuthenticationFailed(
                "this share link is invalid, expired or revoked",
                hint="ask the person who shared it for a new link",
            )
        seen = None
        if file is not None:
            seen = session.execute(
                select(ShareDownload.id).where(
                    ShareDownload.link_id == link.id,
                    ShareDownload.path == file.path,
                    ShareDownload.version == file.version,
                )
            ).first()
        if resuming and seen is not None:
            return
        if link.max_downloads is not None and link.downloads >= link.max_downloads:
            raise AuthenticationFailed("this share link has reached its download limit")
        link.downloads += 1
        if file is not None and seen is None:
            session.add(
                ShareDownload(
                    link_id=link.id, path=file.path, version=file.version, counted_at=utcnow()
                )
            )
