"""DataCite metadata of projects and datasets: edited in labkeep's form, shown as DataCite.

People edit a short form (YAML or JSON, the web form, ``--set``) whose fields are those of
DataCite 4.5 with plain names::

    title, description, creators, contributors, license, keywords, subjects, funding,
    related, dates, resource_type, language, version, publisher

A project's form is the default of its datasets: a dataset's own field replaces the
project's (creators, funding and licence are usually set once per project). Every edit is
checked field by field first, with messages that name the field and say what a valid value
looks like (an ORCID's check digit, a ROR id, an SPDX licence id, DataCite's vocabularies),
then the DataCite JSON made from it is validated against the official DataCite 4.5 JSON
schema (the ``datacite`` package). Only a form that passes is stored, with an audit event.

:func:`datacite` renders the DataCite JSON of a dataset (at a version), :func:`citation`
its "Cite as" text; the web renders schema.org JSON-LD from the same document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labkeep.clock import utcnow
from labkeep.errors import LabkeepError, MetadataInvalid, UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project
from labkeep.ops._metadata_check import FIELDS, check_form
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.catalog import Dataset, Project
    from labkeep.keep import Keep

SCHEMA_VERSION = "http://datacite.org/schema/kernel-4"
DEFAULT_PUBLISHER = "labkeep"
#: what each field holds, for messages and the editor's template
FIELD_HELP = {
    "title": "the title, one line",
    "description": "an abstract: what the data is, how it was made",
    "creators": "people or groups who made the data: a list of {name, orcid, affiliation, ror}",
    "contributors": "others who helped: a list of {name, type, orcid, affiliation, ror}",
    "license": "an SPDX licence id, e.g. CC-BY-4.0 or CC0-1.0",
    "keywords": "a list of words or phrases",
    "subjects": "a list of subjects: text, or {subject, scheme, uri}",
    "funding": "a list of {funder, funder_id, award, award_title}",
    "related": "a list of {identifier, relation, type}: papers, input datasets, code",
    "dates": "a list of {date, type}, e.g. {date: 2026-03-14, type: Collected}",
    "resource_type": "DataCite's resourceTypeGeneral, e.g. Dataset, Image, Software",
    "language": "the language of the text, e.g. en",
    "version": "a version label, e.g. 1.0",
    "publisher": "who publishes it (your institute or facility)",
}


@dataclass
class MetadataRecord:
    """The metadata of one project or dataset: its own form, the effective one (with the
    project's defaults), and the DataCite JSON made from it."""

    address: str
    own: dict[str, Any]
    effective: dict[str, Any]
    datacite: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "metadata": self.own,
            "effective": self.effective,
            "datacite": self.datacite,
            "problems": self.problems,
        }


# -- rendering -------------------------------------------------------------------------


def _datacite_person(p: Mapping[str, Any], *, contributor: bool) -> dict[str, Any]:
    person: dict[str, Any] = {"name": p["name"]}
    is_org = "given" not in p and "family" not in p and "," not in p["name"] and "orcid" not in p
    person["nameType"] = "Organizational" if is_org else "Personal"
    if "given" in p:
        person["givenName"] = p["given"]
    if "family" in p:
        person["familyName"] = p["family"]
    if "orcid" in p:
        person["nameIdentifiers"] = [
            {
                "nameIdentifier": f"https://orcid.org/{p['orcid']}",
                "nameIdentifierScheme": "ORCID",
                "schemeUri": "https://orcid.org",
            }
        ]
    if "affiliation" in p:
        aff: dict[str, Any] = {"name": p["affiliation"]}
        if "ror" in p:
            aff.update(
                affiliationIdentifier=p["ror"],
                affiliationIdentifierScheme="ROR",
                schemeUri="https://ror.org",
            )
        person["affiliation"] = [aff]
    if contributor:
        person["contributorType"] = p.get("type", "Other")
    return person


def render_datacite(
    form: Mapping[str, Any],
    *,
    title: str,
    publication_year: int,
    url: str | None = None,
    doi: str | None = None,
    version: str | None = None,
    sizes: list[str] | None = None,
    publisher: str = "",
) -> dict[str, Any]:
    """DataCite 4.5 JSON of an effective form. Creators default to ":unav" (DataCite's
    code for "value unavailable") so that an unfinished form still renders."""
    doc: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "titles": [{"title": form.get("title") or title}],
        "creators": [_datacite_person(p, contributor=False) for p in form.get("creators", [])]
        or [{"name": ":unav", "nameType": "Organizational"}],
        "publisher": {"name": form.get("publisher") or publisher or DEFAULT_PUBLISHER},
        "publicationYear": str(publication_year),
        "types": {
            "resourceTypeGeneral": form.get("resource_type", "Dataset"),
            "resourceType": form.get("resource_type", "Dataset"),
        },
    }
    if doi:
        doc["doi"] = doi
        doc["identifiers"] = [{"identifier": doi, "identifierType": "DOI"}]
    if url:
        doc["url"] = url
    if form.get("description"):
        doc["descriptions"] = [{"description": form["description"], "descriptionType": "Abstract"}]
    if form.get("contributors"):
        doc["contributors"] = [_datacite_person(p, contributor=True) for p in form["contributors"]]
    if form.get("license"):
        lic = form["license"]
        doc["rightsList"] = [
            {
                "rights": lic,
                "rightsIdentifier": lic,
                "rightsIdentifierScheme": "SPDX",
                "schemeUri": "https://spdx.org/licenses/",
                "rightsUri": f"https://spdx.org/licenses/{lic}.html",
            }
        ]
    subjects = [{"subject": k} for k in form.get("keywords", [])]
    for s in form.get("subjects", []):
        one = {"subject": s["subject"]}
        if "scheme" in s:
            one["subjectScheme"] = s["scheme"]
        if "uri" in s:
            one["schemeUri"] = s["uri"]
        subjects.append(one)
    if subjects:
        doc["subjects"] = subjects
    if form.get("funding"):
        refs = []
        for f in form["funding"]:
            ref: dict[str, Any] = {"funderName": f["funder"]}
            if "funder_id" in f:
                ref["funderIdentifier"] = f["funder_id"]
                ref["funderIdentifierType"] = (
                    "ROR" if "ror.org" in f["funder_id"] else "Crossref Funder ID"
                )
            if "award" in f:
                ref["awardNumber"] = f["award"]
            if "award_title" in f:
                ref["awardTitle"] = f["award_title"]
            refs.append(ref)
        doc["fundingReferences"] = refs
    if form.get("related"):
        doc["relatedIdentifiers"] = [
            {
                "relatedIdentifier": r["identifier"],
                "relatedIdentifierType": r["type"],
                "relationType": r["relation"],
            }
            for r in form["related"]
        ]
    if form.get("dates"):
        doc["dates"] = [{"date": d["date"], "dateType": d["type"]} for d in form["dates"]]
    if form.get("language"):
        doc["language"] = form["language"]
    if form.get("version") or version:
        doc["version"] = form.get("version") or version
    if sizes:
        doc["sizes"] = sizes
    return doc


def schema_problems(doc: Mapping[str, Any]) -> list[str]:
    """What the official DataCite 4.5 JSON schema says about *doc*, one line each."""
    from datacite.schema45 import validator

    problems = []
    for error in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path) or "the record"
        problems.append(f"DataCite {where}: {error.message}")
    return problems


# -- use cases -------------------------------------------------------------------------


def _load(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def effective_form(project: Project, dataset: Dataset | None) -> dict[str, Any]:
    """The project's form with the dataset's own fields over it; title and description
    default to the catalog's."""
    form = _load(project.meta)
    form.setdefault("title", project.title or project.name)
    if project.description:
        form.setdefault("description", project.description)
    if dataset is not None:
        own = _load(dataset.meta)
        form["title"] = own.get("title") or dataset.title or dataset.name
        if dataset.description:
            form["description"] = dataset.description
        form.update(own)
    return form


def _year(dataset: Dataset | None, project: Project) -> int:
    when: datetime | None = None
    if dataset is not None:
        when = dataset.published_at or dataset.sealed_at or dataset.created_at
    return (when or project.created_at or utcnow()).year


def datacite_of(
    keep: Keep,
    project: Project,
    dataset: Dataset | None,
    *,
    version: int | None = None,
    base_url: str = "",
    derived_from: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """DataCite JSON of a project or dataset (a dataset at *version*: its number is the
    record's version unless the form names one). *base_url* (else ``[web] base_url``)
    makes the landing page's URL; *derived_from* are related identifiers found in the
    provenance (see :func:`provenance_related`)."""
    form = effective_form(project, dataset)
    base = base_url or keep.config.web.base_url
    url = None
    if base:
        url = f"{base}/p/{project.name}" + (f"/{dataset.name}" if dataset is not None else "")
        if dataset is not None and version is not None:
            url += f"/@{version}"
    related = list(form.get("related", []))
    known = {r["identifier"] for r in related}
    related += [r for r in derived_from or [] if r["identifier"] not in known]
    if related:
        form["related"] = related
    return render_datacite(
        form,
        title=dataset.name if dataset is not None else project.name,
        publication_year=_year(dataset, project),
        url=url,
        doi=dataset.doi if dataset is not None else None,
        version=str(version) if version else None,
        publisher=keep.config.publisher,
    )


def provenance_related(
    keep: Keep, project: str, dataset: Dataset, version: int | None, base: str
) -> list[dict[str, str]]:
    """ "IsDerivedFrom" identifiers from what labkeep knows: a release's source version,
    and the inputs of the run that made the version (or the released version): each a DOI
    when that input was published, else its landing page (with a *base* URL). Inputs the
    principal may not see are left out, as everywhere."""
    found: list[dict[str, str]] = []
    source = f"{project}/{dataset.name}@{version or dataset.head_version}"
    if dataset.release_of_id is not None:
        from labkeep.catalog import Dataset as DatasetRow

        with keep.catalog.read() as session:
            origin = session.get(DatasetRow, dataset.release_of_id)
            origin_name = origin.name if origin is not None else None
        if origin_name is None:
            return found
        source = f"{project}/{origin_name}@{dataset.release_version}"
        if base:
            found.append(_landing(base, source))
    try:
        run = keep.run_of_version(source)
    except LabkeepError:  # the source is not visible to this principal
        run = None
    for item in (run or {}).get("inputs", []):
        address = f"{item['dataset']}@{item['version']}"
        doi = _doi_of(keep, str(item["dataset"]))
        if doi:
            found.append({"identifier": doi, "type": "DOI", "relation": "IsDerivedFrom"})
        elif base:
            found.append(_landing(base, address))
    return found


def _landing(base: str, address: str) -> dict[str, str]:
    where, number = address.rsplit("@", 1)
    project, name = where.split("/", 1)
    return {
        "identifier": f"{base}/p/{project}/{name}/@{number}",
        "type": "URL",
        "relation": "IsDerivedFrom",
    }


def _doi_of(keep: Keep, address: str) -> str | None:
    try:
        return keep.get_dataset(address).doi
    except LabkeepError:
        return None


def _target(
    keep: Keep, session: Session, address: str, action: str
) -> tuple[Project, Dataset | None, str]:
    addr = parse_address(address)
    if addr.path:
        raise UsageError(
            f"metadata belongs to a project or a dataset, not to {address!r}",
            hint="use PROJECT or PROJECT/DATASET",
        )
    if addr.dataset is None:
        # a project's metadata is shown to whoever may see the project (as its page is)
        project_action = {"dataset.edit": "project.edit", "dataset.read": None}[action]
        return find_project(keep, session, addr.project, project_action), None, addr.project
    project, dataset = find_dataset(keep, session, addr.project, addr.dataset, action)
    return project, dataset, addr.dataset_address


def may_edit(keep: Keep, address: str) -> None:
    """Forbidden (or NotFound) unless the principal may edit *address*'s metadata."""
    with keep.catalog.read() as session:
        _target(keep, session, address, "dataset.edit")


def get_metadata(keep: Keep, address: str, *, base_url: str = "") -> MetadataRecord:
    """The metadata of a project or ``PROJECT/DATASET[@N]``, with its DataCite JSON
    (landing URLs from *base_url*, else ``[web] base_url``)."""
    version = parse_address(address).version
    with keep.catalog.read() as session:
        project, dataset, target = _target(keep, session, address.split("@", 1)[0], "dataset.read")
        if version is not None:
            if dataset is None:
                raise UsageError("a project has no versions", hint="give PROJECT/DATASET@N")
            from labkeep.ops.listing import _check_version

            _check_version(session, dataset.id, target, version)
        session.expunge_all()
    base = base_url or keep.config.web.base_url
    derived = provenance_related(keep, project.name, dataset, version, base) if dataset else []
    own = _load(dataset.meta if dataset is not None else project.meta)
    effective = effective_form(project, dataset)
    doc = datacite_of(keep, project, dataset, version=version, base_url=base, derived_from=derived)
    return MetadataRecord(target, own, effective, doc, schema_problems(doc))


def datacite(keep: Keep, address: str, *, base_url: str = "") -> dict[str, Any]:
    """The DataCite 4.5 JSON of a project or ``PROJECT/DATASET[@N]``."""
    return get_metadata(keep, address, base_url=base_url).datacite


def set_metadata(
    keep: Keep,
    address: str,
    form: Mapping[str, Any] | None = None,
    *,
    changes: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> MetadataRecord:
    """Store a project's or dataset's metadata form, checked.

    *form* replaces the stored form when *replace*, else its fields are merged over it;
    *changes* sets single fields (a value of None or "" removes the field). Nothing is
    stored unless the whole result passes the field checks and the DataCite schema: a
    :class:`MetadataInvalid` lists every problem.
    """
    if parse_address(address).version is not None:
        raise UsageError("metadata belongs to the dataset, not to one of its versions")
    with keep.catalog.write() as session:
        project, dataset, target = _target(keep, session, address, "dataset.edit")
        row: Project | Dataset = dataset if dataset is not None else project
        current = {} if replace else _load(row.meta)
        merged = {**current, **(form or {}), **(changes or {})}
        merged = {k: v for k, v in merged.items() if v not in (None, "", [])}
        clean, problems = check_form(merged)
        if not problems:
            before = row.meta
            row.meta = json.dumps(clean, ensure_ascii=False, sort_keys=True) if clean else None
            doc = datacite_of(keep, project, dataset)
            problems = schema_problems(doc)
            if problems:
                row.meta = before
        if problems:
            raise MetadataInvalid(target, problems)
        append_event(
            session,
            keep.actor,
            "metadata-edit",
            target,
            {"fields": sorted(k for k in {*current, *clean} if current.get(k) != clean.get(k))},
        )
        effective = effective_form(project, dataset)
    return MetadataRecord(target, clean, effective, doc, [])


def citation(doc: Mapping[str, Any], landing: str | None = None) -> str:
    """DataCite's recommended citation: Creator (Year). Title. Version. Publisher.
    ResourceType. Identifier."""
    names = [c["name"] for c in doc.get("creators", []) if c.get("name") != ":unav"]
    if len(names) > 5:
        names = [*names[:5], "et al."]
    parts = []
    who = "; ".join(names)
    parts.append(f"{who} ({doc['publicationYear']})." if who else f"({doc['publicationYear']}).")
    parts.append(f"{doc['titles'][0]['title']}.")
    if doc.get("version"):
        parts.append(f"Version {doc['version']}.")
    parts.append(f"{doc['publisher']['name']}.")
    parts.append(f"{doc['types'].get('resourceType') or 'Dataset'}.")
    if doc.get("doi"):
        parts.append(f"https://doi.org/{doc['doi']}")
    elif landing or doc.get("url"):
        parts.append(str(landing or doc.get("url")))
    return " ".join(parts)


def template() -> str:
    """The editor's starting text for an empty form (YAML with each field explained)."""
    lines = ["# DataCite metadata; delete a field to leave it unset", ""]
    for key in FIELDS:
        lines.append(f"# {key}: {FIELD_HELP[key]}")
    return "\n".join(lines) + "\n"
