"""Grants (read < write < manage on a project or a dataset) and public datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from labkeep.access import Permission
from labkeep.catalog import Dataset, Grant, Group, Project, User
from labkeep.clock import isoformat, utcnow
from labkeep.errors import NotFound, UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep


def _grantee(session: Session, spec: str) -> tuple[int | None, int | None]:
    """``alice`` or ``user:alice`` -> (user id, None); ``group:lab-a`` -> (None, group id)."""
    kind, _, name = spec.partition(":") if ":" in spec else ("user", "", spec)
    if kind == "user":
        uid = session.execute(select(User.id).where(User.name == name)).scalar()
        if uid is None:
            raise NotFound(f"no user {name!r}", hint="see 'labkeep user list'")
        return int(uid), None
    if kind == "group":
        gid = session.execute(select(Group.id).where(Group.name == name)).scalar()
        if gid is None:
            raise NotFound(f"no group {name!r}", hint="see 'labkeep group list'")
        return None, int(gid)
    raise UsageError(f"invalid principal {spec!r}", hint="use USER, user:USER or group:GROUP")


def _target(keep: Keep, session: Session, target: str) -> tuple[Project, Dataset | None]:
    addr = parse_address(target)
    if addr.path or addr.version is not None:
        raise UsageError("grants are on a project or a dataset", hint="use PROJECT[/DATASET]")
    if addr.dataset:
        proj, dataset = find_dataset(keep, session, addr.project, addr.dataset, "project.grant")
        return proj, dataset
    proj = find_project(keep, session, addr.project, "project.grant")
    return proj, None


def grant(keep: Keep, grantee: str, permission: str, target: str) -> dict[str, Any]:
    """Give *grantee* (user or ``group:NAME``) *permission* on *target*, replacing any earlier."""
    level = Permission.parse(permission)
    with keep.catalog.write() as session:
        proj, dataset = _target(keep, session, target)
        user_id, group_id = _grantee(session, grantee)
        dataset_id = dataset.id if dataset is not None else None
        session.execute(
            delete(Grant).where(
                Grant.project_id == proj.id,
                Grant.dataset_id.is_(None)
                if dataset_id is None
                else Grant.dataset_id == dataset_id,
                Grant.user_id.is_(None) if user_id is None else Grant.user_id == user_id,
                Grant.group_id.is_(None) if group_id is None else Grant.group_id == group_id,
            )
        )
        session.add(
            Grant(
                project_id=proj.id,
                dataset_id=dataset_id,
                user_id=user_id,
                group_id=group_id,
                permission=level.name.lower(),
                created_at=utcnow(),
                created_by=keep.actor,
            )
        )
        append_event(
            session,
            keep.actor,
            "grant",
            target,
            {"principal": grantee, "permission": level.name.lower()},
        )
    return {
        "action": "grant",
        "status": "ok",
        "principal": grantee,
        "permission": level.name.lower(),
        "target": target,
    }


def revoke(keep: Keep, grantee: str, target: str) -> dict[str, Any]:
    with keep.catalog.write() as session:
        proj, dataset = _target(keep, session, target)
        user_id, group_id = _grantee(session, grantee)
        from labkeep.ops.shares import count_live

        before = count_live(session, project_id=proj.id, working=False)
        result = session.execute(
            delete(Grant).where(
                Grant.project_id == proj.id,
                Grant.dataset_id.is_(None) if dataset is None else Grant.dataset_id == dataset.id,
                Grant.user_id.is_(None) if user_id is None else Grant.user_id == user_id,
                Grant.group_id.is_(None) if group_id is None else Grant.group_id == group_id,
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"{grantee} has no grant on {target}")
        from labkeep.ops.shares import count_live, links_message

        session.flush()
        suspended = count_live(session, project_id=proj.id, working=False) - before
        append_event(
            session, keep.actor, "revoke", target, {"principal": grantee, "suspended": suspended}
        )
    record: dict[str, Any] = {
        "action": "revoke",
        "status": "ok",
        "principal": grantee,
        "target": target,
        "suspended_shares": suspended,
    }
    if suspended:
        creator = grantee.removeprefix("user:") if not grantee.startswith("group:") else None
        record["message"] = links_message(suspended, creator, "suspended", target)
    return record


def list_grants(keep: Keep, target: str) -> list[dict[str, Any]]:
    """Who has what on a project and its datasets (for those who manage it)."""
    addr = parse_address(target)
    with keep.catalog.read() as session:
        proj, dataset = _target(keep, session, str(addr))
        query = (
            select(Grant, User.name, Group.name, Dataset.name)
            .outerjoin(User, User.id == Grant.user_id)
            .outerjoin(Group, Group.id == Grant.group_id)
            .outerjoin(Dataset, Dataset.id == Grant.dataset_id)
            .where(Grant.project_id == proj.id)
        )
        if dataset is not None:
            query = query.where((Grant.dataset_id == dataset.id) | Grant.dataset_id.is_(None))
        return [
            {
                "principal": f"user:{uname}" if uname else f"group:{gname}",
                "permission": g.permission,
                "target": f"{proj.name}/{dname}" if dname else proj.name,
                "created_at": isoformat(g.created_at),
                "created_by": g.created_by,
            }
            for g, uname, gname, dname in session.execute(query.order_by(Grant.id))
        ]


def set_public(keep: Keep, address: str, public: bool = True) -> dict[str, Any]:
    """Make a dataset readable by anyone (or private again)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.write() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.publish")
        dataset.public = public
        append_event(
            session, keep.actor, "public" if public else "private", addr.dataset_address, {}
        )
    return {"action": "public", "status": "ok", "dataset": addr.dataset_address, "public": public}
