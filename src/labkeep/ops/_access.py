"""Loading the facts that access decisions need, and applying them in use cases.

``find_*`` functions raise the same NotFound for "does not exist" and "you may not see
it", so that nobody learns of private projects by guessing names; only once a principal
may see a thing do they get Forbidden for what they may not do to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from labkeep.access import Grant as GrantFact
from labkeep.access import Permission, Principal, Resource, check, permission
from labkeep.access.policy import can_see_dataset, can_see_project
from labkeep.catalog import Dataset, Grant, Membership, Project, User
from labkeep.errors import NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep


def load_principal(session: Session, user: User, *, read_only: bool = False) -> Principal:
    groups = dict(
        session.execute(
            select(Membership.group_id, Membership.role).where(Membership.user_id == user.id)
        ).all()
    )
    return Principal(
        "user",
        name=user.name,
        user_id=user.id,
        site_admin=user.site_admin,
        disabled=user.disabled,
        groups={int(g): str(r) for g, r in groups.items()},
        read_only=read_only,
    )


def _grants(session: Session, project_id: int) -> tuple[GrantFact, ...]:
    return tuple(
        GrantFact(Permission.parse(g.permission), g.user_id, g.group_id, g.dataset_id)
        for g in session.execute(select(Grant).where(Grant.project_id == project_id)).scalars()
    )


def project_resource(
    session: Session,
    project: Project,
    dataset: Dataset | None = None,
    *,
    grants: tuple[GrantFact, ...] | None = None,
    version: int | None = None,
    path: str | None = None,
) -> Resource:
    return Resource(
        "dataset" if dataset is not None else "project",
        project_id=project.id,
        project_group_id=project.group_id,
        project_private=project.private,
        dataset_id=dataset.id if dataset is not None else None,
        dataset_public=dataset.public if dataset is not None else False,
        grants=grants if grants is not None else _grants(session, project.id),
        version=version,
        path=path,
    )


def project_visible(session: Session, principal: Principal, project: Project) -> bool:
    grants = _grants(session, project.id)
    resource = project_resource(session, project, grants=grants)
    if permission(principal, resource) >= Permission.READ:
        return True
    datasets = session.execute(select(Dataset).where(Dataset.project_id == project.id)).scalars()
    return can_see_project(
        principal,
        resource,
        (project_resource(session, project, d, grants=grants) for d in datasets),
    )


def find_project(keep: Keep, session: Session, name: str, action: str | None = None) -> Project:
    """The project, if the principal may see it; then *action* is checked on it."""
    project = session.execute(select(Project).where(Project.name == name)).scalar_one_or_none()
    if project is None or not project_visible(session, keep.principal, project):
        raise NotFound(
            f"no project {name!r}",
            hint=f"create it with 'labkeep project create {name}' or see 'labkeep ls'",
        )
    if action is not None:
        check(keep.principal, action, project_resource(session, project))
    return project


def find_dataset(
    keep: Keep,
    session: Session,
    project: str,
    name: str,
    action: str,
    *,
    for_update: bool = False,
    version: int | None = None,
    path: str | None = None,
) -> tuple[Project, Dataset]:
    """The dataset, if the principal may read it; then *action* is checked on it."""
    proj = session.execute(select(Project).where(Project.name == project)).scalar_one_or_none()
    dataset = None
    if proj is not None:
        query = select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == name)
        if for_update:
            query = query.with_for_update()
        dataset = session.execute(query).scalar_one_or_none()
    if proj is None or dataset is None:
        raise _no_dataset(keep, session, proj, project, name)
    resource = project_resource(session, proj, dataset, version=version, path=path)
    if not can_see_dataset(keep.principal, resource):
        raise _no_dataset(keep, session, proj, project, name)
    check(keep.principal, action, resource)
    return proj, dataset


def _no_dataset(
    keep: Keep, session: Session, proj: Project | None, project: str, name: str
) -> NotFound:
    if proj is None or not project_visible(session, keep.principal, proj):
        return NotFound(f"no project {project!r}", hint="see 'labkeep ls' for the projects")
    return NotFound(
        f"no dataset {project}/{name}", hint=f"see 'labkeep ls {project}' for its datasets"
    )


def dataset_readable(
    session: Session,
    principal: Principal,
    project: Project,
    dataset: Dataset,
    grants: tuple[GrantFact, ...],
) -> bool:
    return can_see_dataset(principal, project_resource(session, project, dataset, grants=grants))
