"""Projects and datasets: create, find, list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labkeep.access import Resource, check
from labkeep.catalog import Dataset, Group, Project, Version, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import AlreadyExists, LabkeepError, NameUnavailable, NotFound, UsageError
from labkeep.names import (
    MAX_DESCRIPTION,
    MAX_TITLE,
    check_slug,
    check_text,
    parse_address,
    reserved_name,
)
from labkeep.ops._access import (
    dataset_readable,
    find_dataset,
    find_project,
    project_resource,
    project_visible,
)
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from labkeep.keep import Keep

DATASET_KINDS = ("session", "analysis", "release")


@dataclass
class ProjectInfo:
    name: str
    title: str
    description: str
    created_at: datetime
    created_by: str
    datasets: int = 0
    group: str | None = None
    private: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.name,
            "title": self.title,
            "description": self.description,
            "group": self.group,
            "private": self.private,
            "created_at": isoformat(self.created_at),
            "created_by": self.created_by,
            "datasets": self.datasets,
        }


@dataclass
class DatasetInfo:
    project: str
    name: str
    kind: str
    title: str
    created_at: datetime
    created_by: str
    head_version: int
    sealed: bool
    sealed_at: datetime | None
    files: int = 0
    bytes: int = 0
    public: bool = False
    description: str = ""
    #: a release: the version it was made from (``PROJECT/DATASET@N``)
    release_of: str | None = None
    #: a published release: its DOI, its repository record, when
    doi: str | None = None
    record_url: str | None = None
    published_at: datetime | None = None

    @property
    def address(self) -> str:
        return f"{self.project}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.address,
            "kind": self.kind,
            "title": self.title,
            "created_at": isoformat(self.created_at),
            "created_by": self.created_by,
            "version": self.head_version,
            "sealed": self.sealed,
            "sealed_at": isoformat(self.sealed_at),
            "public": self.public,
            "description": self.description,
            "files": self.files,
            "bytes": self.bytes,
            "release_of": self.release_of,
            "doi": self.doi,
            "record_url": self.record_url,
            "published_at": isoformat(self.published_at),
        }


def _head_counts(session: Session, dataset_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Files and bytes of each dataset's newest committed version (one indexed lookup each,
    not a scan of its entries)."""
    if not dataset_ids:
        return {}
    rows = session.execute(
        select(Version.dataset_id, Version.n_files, Version.n_bytes)
        .join(
            Dataset, (Dataset.id == Version.dataset_id) & (Dataset.head_version == Version.number)
        )
        .where(Version.dataset_id.in_(dataset_ids))
    )
    return {int(d): (int(f), int(b)) for d, f, b in rows}


def _dataset_info(session: Session, project: Project, dataset: Dataset) -> DatasetInfo:
    files, size = _head_counts(session, [dataset.id]).get(dataset.id, (0, 0))
    return DatasetInfo(
        project=project.name,
        name=dataset.name,
        kind=dataset.kind,
        title=dataset.title,
        created_at=dataset.created_at,
        created_by=dataset.created_by,
        head_version=dataset.head_version,
        sealed=dataset.sealed,
        sealed_at=dataset.sealed_at,
        files=int(files),
        bytes=int(size),
        public=dataset.public,
        description=dataset.description,
        release_of=_release_of(session, project, dataset),
        doi=dataset.doi,
        record_url=dataset.record_url,
        published_at=dataset.published_at,
    )


def _release_of(session: Session, project: Project, dataset: Dataset) -> str | None:
    if dataset.release_of_id is None:
        return None
    source = session.get(Dataset, dataset.release_of_id)
    name = source.name if source is not None else "?"
    return f"{project.name}/{name}@{dataset.release_version}"


def _group_names(session: Session) -> dict[int, str]:
    return {int(i): str(n) for i, n in session.execute(select(Group.id, Group.name)).all()}


def create_project(
    keep: Keep,
    name: str,
    *,
    title: str = "",
    description: str = "",
    group: str | None = None,
    private: bool = False,
) -> ProjectInfo:
    """Create a project in *group* (its name is a slug: it becomes a folder and a URL).

    Members of a group may create projects in it (self-service); projects without a group
    are for site admins. The creator gets ``manage`` on a private project.
    """
    check_slug(name, "project name")
    check_text(title, "the title", MAX_TITLE)
    check_text(description, "the description", MAX_DESCRIPTION)
    with keep.catalog.write() as session:
        group_id = None
        if group is not None:
            group_id = session.execute(select(Group.id).where(Group.name == group)).scalar()
            if group_id is None:
                raise NotFound(f"no group {group!r}", hint="see 'labkeep group list'")
        check(keep.principal, "project.create", Resource("group", group_id=group_id))
        if reserved_name(name):
            raise _unavailable("project", name)
        project = Project(
            name=name,
            title=title,
            description=description,
            created_at=utcnow(),
            created_by=keep.actor,
            group_id=group_id,
            private=private,
        )
        if not add_unique(session, project):
            raise _name_taken(keep, session, name)
        if private and keep.principal.user_id is not None:
            from labkeep.catalog import Grant

            session.add(
                Grant(
                    project_id=project.id,
                    user_id=keep.principal.user_id,
                    permission="manage",
                    created_at=utcnow(),
                    created_by=keep.actor,
                )
            )
        append_event(
            session,
            keep.actor,
            "project-create",
            name,
            {"title": title, "group": group, "private": private},
        )
    keep.tree.base.joinpath(name).mkdir(parents=True, exist_ok=True)
    return ProjectInfo(
        name, title, description, project.created_at, project.created_by, 0, group, private
    )


def _check_texts(title: str | None, description: str | None) -> None:
    if title is not None:
        check_text(title, "the title", MAX_TITLE)
    if description is not None:
        check_text(description, "the description", MAX_DESCRIPTION)


def _name_taken(keep: Keep, session: Session, name: str) -> LabkeepError:
    """The answer to creating a project whose name is taken: "already exists" for those
    who may see that project; for everyone else exactly the answer to a reserved name,
    which does not say that a project of that name exists (it may be private)."""
    existing = session.execute(select(Project).where(Project.name == name)).scalar_one()
    if project_visible(session, keep.principal, existing):
        return AlreadyExists(f"project {name!r} already exists", hint=f"see 'labkeep ls {name}'")
    return _unavailable("project", name)


def _unavailable(kind: str, name: str) -> NameUnavailable:
    """The one answer for a reserved name and for one taken by something hidden."""
    return NameUnavailable(
        f"cannot create {kind} {name!r}: the name is not available",
        hint="choose another name (names are unique, and names Windows cannot open, such as "
        "con, nul, com1 or lpt1, are reserved)",
    )


def _visible_datasets(session: Session, keep: Keep, project: Project) -> int:
    """How many of the project's datasets the principal may see (never more)."""
    grants = project_resource(session, project).grants
    datasets = session.execute(select(Dataset).where(Dataset.project_id == project.id)).scalars()
    return sum(dataset_readable(session, keep.principal, project, d, grants) for d in datasets)


def list_projects(keep: Keep) -> list[ProjectInfo]:
    """The projects the principal may see, by name, with the datasets they may see."""
    with keep.catalog.read() as session:
        groups = _group_names(session)
        return [
            ProjectInfo(
                p.name,
                p.title,
                p.description,
                p.created_at,
                p.created_by,
                _visible_datasets(session, keep, p),
                groups.get(p.group_id) if p.group_id else None,
                p.private,
            )
            for p in session.execute(select(Project).order_by(Project.name)).scalars()
            if project_visible(session, keep.principal, p)
        ]


def update_project(
    keep: Keep, name: str, *, title: str | None = None, description: str | None = None
) -> ProjectInfo:
    """Change a project's title or description (those who manage it)."""
    _check_texts(title, description)
    with keep.catalog.write() as session:
        project = find_project(keep, session, name, "project.edit")
        changes = {
            k: v for k, v in (("title", title), ("description", description)) if v is not None
        }
        for key, value in changes.items():
            setattr(project, key, value)
        append_event(session, keep.actor, "project-edit", name, changes)
    return get_project(keep, name)


def update_dataset(
    keep: Keep, address: str, *, title: str | None = None, description: str | None = None
) -> DatasetInfo:
    """Change a dataset's title or description (those who may write to it)."""
    _check_texts(title, description)
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.write() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.edit")
        changes = {
            k: v for k, v in (("title", title), ("description", description)) if v is not None
        }
        for key, value in changes.items():
            setattr(dataset, key, value)
        append_event(session, keep.actor, "dataset-edit", addr.dataset_address, changes)
    return get_dataset(keep, address)


def get_project(keep: Keep, name: str) -> ProjectInfo:
    with keep.catalog.read() as session:
        p = find_project(keep, session, name)
        count = _visible_datasets(session, keep, p)
        group = _group_names(session).get(p.group_id) if p.group_id else None
        return ProjectInfo(
            p.name, p.title, p.description, p.created_at, p.created_by, count, group, p.private
        )


def ensure_dataset(
    keep: Keep,
    session: Session,
    project: str,
    name: str,
    kind: str,
    title: str = "",
    action: str = "dataset.edit",
) -> tuple[Project, Dataset, bool]:
    """The dataset, created (with an event) if it does not exist yet.

    Creating needs ``dataset.create`` on the project; an existing dataset needs *action*.
    """
    if kind not in DATASET_KINDS:
        raise UsageError(f"unknown dataset kind {kind!r}", hint=f"use one of {DATASET_KINDS}")
    check_slug(name, "dataset name")
    check_text(title, "the title", MAX_TITLE)
    proj = find_project(keep, session, project)
    dataset = session.execute(
        select(Dataset).where(Dataset.project_id == proj.id, Dataset.name == name)
    ).scalar_one_or_none()
    if dataset is not None:
        if not dataset_readable(
            session, keep.principal, proj, dataset, project_resource(session, proj).grants
        ):
            check(keep.principal, "dataset.create", project_resource(session, proj))
            raise _unavailable("dataset", f"{project}/{name}")
        find_dataset(keep, session, project, name, action)
        return proj, dataset, False
    check(keep.principal, "dataset.create", project_resource(session, proj))
    if reserved_name(name):
        raise _unavailable("dataset", f"{project}/{name}")
    dataset = Dataset(
        project_id=proj.id,
        name=name,
        kind=kind,
        title=title,
        created_at=utcnow(),
        created_by=keep.actor,
        head_version=0,
        sealed=False,
        public=False,
        description="",
    )
    if not add_unique(session, dataset):
        # created by another writer a moment ago (e.g. two ingests of a new session)
        _, existing = find_dataset(keep, session, project, name, action)
        return proj, existing, False
    append_event(session, keep.actor, "dataset-create", f"{project}/{name}", {"kind": kind})
    return proj, dataset, True


def create_dataset(
    keep: Keep, address: str, *, kind: str = "session", title: str = ""
) -> DatasetInfo:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.write() as session:
        proj, dataset, created = ensure_dataset(
            keep, session, addr.project, addr.dataset, kind, title
        )
        if not created:
            raise AlreadyExists(f"dataset {addr.dataset_address} already exists")
        info = _dataset_info(session, proj, dataset)
    keep.tree.dataset_dir(addr.project, addr.dataset).mkdir(parents=True, exist_ok=True)
    return info


def get_dataset(keep: Keep, address: str) -> DatasetInfo:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        proj, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        return _dataset_info(session, proj, dataset)


def list_datasets(
    keep: Keep, project: str, *, limit: int | None = None, after: str | None = None
) -> list[DatasetInfo]:
    """The datasets of *project* the principal may read, by name; with *limit*, a page of
    them (the next one *after* the last name of this one)."""
    with keep.catalog.read() as session:
        proj = find_project(keep, session, project)
        grants = project_resource(session, proj).grants
        readable: list[Dataset] = []
        batch = max(limit or 0, 500)
        last = after
        while True:  # a page of readable ones (others are skipped), by name
            query = select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
            if last is not None:
                query = query.where(Dataset.name > last)
            if limit is not None:
                query = query.limit(batch)
            rows = list(session.execute(query).scalars())
            readable += [
                d for d in rows if dataset_readable(session, keep.principal, proj, d, grants)
            ]
            if limit is None or len(rows) < batch or len(readable) >= limit:
                break
            last = rows[-1].name
        if limit is not None:
            readable = readable[:limit]
        stats = _head_counts(session, [d.id for d in readable])
        result = []
        for d in readable:
            files, size = stats.get(d.id, (0, 0))
            result.append(
                DatasetInfo(
                    proj.name,
                    d.name,
                    d.kind,
                    d.title,
                    d.created_at,
                    d.created_by,
                    d.head_version,
                    d.sealed,
                    d.sealed_at,
                    files,
                    size,
                    d.public,
                    d.description,
                    doi=d.doi,
                    record_url=d.record_url,
                    published_at=d.published_at,
                )
            )
        return result
