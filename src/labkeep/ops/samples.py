"""The samples/subjects registry: what datasets were acquired from.

    keep.add_sample("mouse-42", type="mouse", attrs={"genotype": "WT"})
    keep.link_sample("imaging-2026/s017", "mouse-42")

A sample belongs to a group (by default the creator's only group). Its creator, its
group's members and site admins see and change it; whoever may read a dataset linked to
it sees it too (its page lists only the datasets the reader may see). Linking needs
write on the dataset and the right to change the sample. Every change is an audit event
and updates the search index in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from labkeep.access import check
from labkeep.access.policy import can_edit_sample, can_see_sample, denial
from labkeep.catalog import Dataset, Group, Project, Sample, SampleLink, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import AlreadyExists, Forbidden, NotFound, UsageError
from labkeep.names import MAX_DESCRIPTION, check_slug, check_text, parse_address
from labkeep.ops._access import dataset_readable, find_dataset, project_resource
from labkeep.ops.audit import append_event
from labkeep.ops.keyvalues import MAX_VALUE, check_key
from labkeep.ops.search_index import index_sample, refresh_doc

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

MAX_ATTRS = 100


@dataclass
class SampleInfo:
    name: str
    type: str
    description: str
    attrs: dict[str, str]
    group: str | None
    created_at: datetime
    created_by: str
    #: the datasets linked to it that the caller may see ("PROJECT/DATASET")
    datasets: list[str] = field(default_factory=list)
    editable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample": self.name,
            "type": self.type,
            "description": self.description,
            "attrs": self.attrs,
            "group": self.group,
            "created_at": isoformat(self.created_at),
            "created_by": self.created_by,
            "datasets": self.datasets,
        }


def _check_attrs(attrs: Mapping[str, str]) -> dict[str, str]:
    if len(attrs) > MAX_ATTRS:
        raise UsageError(f"at most {MAX_ATTRS} attributes")
    out = {}
    for key, value in attrs.items():
        check_key(key)
        check_text(value, f"the value of {key}", MAX_VALUE)
        out[key] = value
    return out


def _visible_datasets(keep: Keep, session: Session, sample: Sample) -> list[str]:
    rows = session.execute(
        select(Project, Dataset)
        .join(Dataset, Dataset.project_id == Project.id)
        .join(SampleLink, SampleLink.dataset_id == Dataset.id)
        .where(SampleLink.sample_id == sample.id)
        .order_by(Project.name, Dataset.name)
    ).all()
    grants: dict[int, Any] = {}
    seen = []
    for project, dataset in rows:
        if project.id not in grants:
            grants[project.id] = project_resource(session, project).grants
        if dataset_readable(session, keep.principal, project, dataset, grants[project.id]):
            seen.append(f"{project.name}/{dataset.name}")
    return seen


def _info(keep: Keep, session: Session, sample: Sample, datasets: list[str]) -> SampleInfo:
    group = session.get(Group, sample.group_id).name if sample.group_id else None  # type: ignore[union-attr]
    return SampleInfo(
        sample.name,
        sample.type,
        sample.description,
        json.loads(sample.attrs or "{}"),
        group,
        sample.created_at,
        sample.created_by,
        datasets,
        can_edit_sample(keep.principal, sample.created_by, sample.group_id),
    )


def _find(
    keep: Keep, session: Session, name: str, *, edit: bool = False
) -> tuple[Sample, list[str]]:
    """The sample, if the caller may see it (NotFound otherwise, as for a missing one)."""
    sample = session.execute(select(Sample).where(Sample.name == name)).scalar_one_or_none()
    datasets = _visible_datasets(keep, session, sample) if sample is not None else []
    if sample is None or not can_see_sample(
        keep.principal, sample.created_by, sample.group_id, via_dataset=bool(datasets)
    ):
        raise NotFound(f"no sample {name!r}", hint="see 'labkeep sample list'")
    if edit and not can_edit_sample(keep.principal, sample.created_by, sample.group_id):
        if keep.principal.kind != "user" or keep.principal.read_only:
            raise denial(keep.principal, "sample.create")
        raise Forbidden(
            f"{keep.principal.name} may not change sample {name}",
            hint="its creator, its group's members and site admins may",
        )
    return sample, datasets


def add_sample(
    keep: Keep,
    name: str,
    *,
    type: str = "",
    attrs: Mapping[str, str] | None = None,
    description: str = "",
    group: str | None = None,
) -> SampleInfo:
    """Register a sample (its name is a slug, unique in the keep: ``mouse-42``)."""
    check_slug(name, "sample name")
    check_text(type, "the type", 64)
    check_text(description, "the description", MAX_DESCRIPTION)
    clean = _check_attrs(attrs or {})
    with keep.catalog.write() as session:
        check(keep.principal, "sample.create")
        group_id = None
        if group is not None:
            group_id = session.execute(select(Group.id).where(Group.name == group)).scalar()
            if group_id is None or not (
                keep.principal.site_admin or group_id in keep.principal.groups
            ):
                raise NotFound(f"no group {group!r} of yours", hint="see 'labkeep group list'")
        elif len(keep.principal.groups) == 1:
            group_id = next(iter(keep.principal.groups))
        sample = Sample(
            name=name,
            type=type,
            description=description,
            attrs=json.dumps(clean, sort_keys=True),
            group_id=group_id,
            created_at=utcnow(),
            created_by=keep.actor,
        )
        if not add_unique(session, sample):
            # the same answer whether or not the caller may see the other sample
            raise AlreadyExists(
                f"a sample named {name!r} is already registered",
                hint="sample names are unique in the keep: choose another, or ask its owner",
            )
        index_sample(session, sample)
        append_event(
            session,
            keep.actor,
            "sample-add",
            f"sample:{name}",
            {"type": type, "attrs": clean, "group": group},
        )
        return _info(keep, session, sample, [])


def update_sample(
    keep: Keep,
    name: str,
    *,
    type: str | None = None,
    description: str | None = None,
    attrs: Mapping[str, str] | None = None,
    unset: list[str] | tuple[str, ...] = (),
) -> SampleInfo:
    """Change a sample's type, description or attributes (*unset* removes attributes)."""
    if type is not None:
        check_text(type, "the type", 64)
    if description is not None:
        check_text(description, "the description", MAX_DESCRIPTION)
    clean = _check_attrs(attrs or {})
    with keep.catalog.write() as session:
        sample, datasets = _find(keep, session, name, edit=True)
        current = json.loads(sample.attrs or "{}")
        for key in unset:
            current.pop(key, None)
        current.update(clean)
        _check_attrs(current)
        sample.attrs = json.dumps(current, sort_keys=True)
        if type is not None:
            sample.type = type
        if description is not None:
            sample.description = description
        index_sample(session, sample)
        append_event(
            session,
            keep.actor,
            "sample-edit",
            f"sample:{name}",
            {"type": type, "description": description, "attrs": clean, "unset": list(unset)},
        )
        return _info(keep, session, sample, datasets)


def get_sample(keep: Keep, name: str) -> SampleInfo:
    with keep.catalog.read() as session:
        sample, datasets = _find(keep, session, name)
        return _info(keep, session, sample, datasets)


def list_samples(keep: Keep, *, type: str | None = None) -> list[SampleInfo]:
    """The samples the caller may see, by name."""
    with keep.catalog.read() as session:
        query = select(Sample).order_by(Sample.name)
        if type:
            query = query.where(Sample.type == type)
        result = []
        for sample in session.execute(query).scalars():
            direct = can_see_sample(
                keep.principal, sample.created_by, sample.group_id, via_dataset=False
            )
            datasets = _visible_datasets(keep, session, sample)
            if direct or datasets:
                result.append(_info(keep, session, sample, datasets))
        return result


def _link_target(keep: Keep, session: Session, address: str) -> tuple[Project, Dataset, str]:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path or addr.version is not None:
        raise UsageError("samples are linked to datasets", hint="give PROJECT/DATASET")
    project, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.edit")
    return project, dataset, addr.dataset_address


def link_sample(keep: Keep, address: str, name: str) -> SampleInfo:
    """Record that the dataset at *address* was acquired from sample *name*."""
    with keep.catalog.write() as session:
        project, dataset, target = _link_target(keep, session, address)
        sample, _ = _find(keep, session, name, edit=True)
        link = SampleLink(
            sample_id=sample.id, dataset_id=dataset.id, created_at=utcnow(), created_by=keep.actor
        )
        if add_unique(session, link):
            refresh_doc(session, project.id, dataset.id)
            append_event(session, keep.actor, "sample-link", target, {"sample": name})
        return _info(keep, session, sample, _visible_datasets(keep, session, sample))


def unlink_sample(keep: Keep, address: str, name: str) -> SampleInfo:
    with keep.catalog.write() as session:
        project, dataset, target = _link_target(keep, session, address)
        sample, _ = _find(keep, session, name)
        result: Any = session.execute(
            delete(SampleLink).where(
                SampleLink.sample_id == sample.id, SampleLink.dataset_id == dataset.id
            )
        )
        gone = result.rowcount
        if not gone:
            raise NotFound(f"{target} is not linked to sample {name}")
        refresh_doc(session, project.id, dataset.id)
        append_event(session, keep.actor, "sample-unlink", target, {"sample": name})
        return _info(keep, session, sample, _visible_datasets(keep, session, sample))
