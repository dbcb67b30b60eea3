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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labkeep.clock import utcnow
from labkeep.errors import MetadataInvalid, UsageError
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.catalog import Dataset, Project
    from labkeep.keep import Keep

SCHEMA_VERSION = "http://datacite.org/schema/kernel-4"
DEFAULT_PUBLISHER = "labkeep"
MAX_TEXT = 10_000
MAX_LINE = 1_000
MAX_ITEMS = 500

FIELDS = (
    "title",
    "description",
    "creators",
    "contributors",
    "license",
    "keywords",
    "subjects",
    "funding",
    "related",
    "dates",
    "resource_type",
    "language",
    "version",
    "publisher",
)
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

CONTRIBUTOR_TYPES = [
    "ContactPerson",
    "DataCollector",
    "DataCurator",
    "DataManager",
    "Distributor",
    "Editor",
    "HostingInstitution",
    "Producer",
    "ProjectLeader",
    "ProjectManager",
    "ProjectMember",
    "RegistrationAgency",
    "RegistrationAuthority",
    "RelatedPerson",
    "Researcher",
    "ResearchGroup",
    "RightsHolder",
    "Sponsor",
    "Supervisor",
    "WorkPackageLeader",
    "Other",
]
RELATION_TYPES = [
    "IsCitedBy",
    "Cites",
    "IsSupplementTo",
    "IsSupplementedBy",
    "IsContinuedBy",
    "Continues",
    "IsDescribedBy",
    "Describes",
    "HasMetadata",
    "IsMetadataFor",
    "HasVersion",
    "IsVersionOf",
    "IsNewVersionOf",
    "IsPreviousVersionOf",
    "IsPartOf",
    "HasPart",
    "IsPublishedIn",
    "IsReferencedBy",
    "References",
    "IsDocumentedBy",
    "Documents",
    "IsCompiledBy",
    "Compiles",
    "IsVariantFormOf",
    "IsOriginalFormOf",
    "IsIdenticalTo",
    "IsReviewedBy",
    "Reviews",
    "IsDerivedFrom",
    "IsSourceOf",
    "IsRequiredBy",
    "Requires",
    "IsObsoletedBy",
    "Obsoletes",
    "IsCollectedBy",
    "Collects",
]
IDENTIFIER_TYPES = [
    "ARK",
    "arXiv",
    "bibcode",
    "CSTR",
    "DOI",
    "EAN13",
    "EISSN",
    "Handle",
    "IGSN",
    "ISBN",
    "ISSN",
    "ISTC",
    "LISSN",
    "LSID",
    "PMID",
    "PURL",
    "RRID",
    "UPC",
    "URL",
    "URN",
    "w3id",
]
DATE_TYPES = [
    "Accepted",
    "Available",
    "Copyrighted",
    "Collected",
    "Coverage",
    "Created",
    "Issued",
    "Submitted",
    "Updated",
    "Valid",
    "Withdrawn",
    "Other",
]
RESOURCE_TYPES = [
    "Audiovisual",
    "Award",
    "Book",
    "BookChapter",
    "Collection",
    "ComputationalNotebook",
    "ConferencePaper",
    "ConferenceProceeding",
    "DataPaper",
    "Dataset",
    "Dissertation",
    "Event",
    "Image",
    "Instrument",
    "InteractiveResource",
    "Journal",
    "JournalArticle",
    "Model",
    "OutputManagementPlan",
    "PeerReview",
    "PhysicalObject",
    "Preprint",
    "Project",
    "Report",
    "Service",
    "Software",
    "Sound",
    "Standard",
    "StudyRegistration",
    "Text",
    "Workflow",
    "Other",
]

_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
_ROR = re.compile(r"^(?:https?://ror\.org/)?(0[a-hj-km-np-tv-z0-9]{6}\d{2})$")
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?(/\d{4}(-\d{2}(-\d{2})?)?)?$")
_LANG = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")


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


# -- checking --------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, text: str) -> None:
        # (what was sent may be anything: never echo a character that is not text)
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")
        self.problems.append(f"{where}: {text}")

    def text(self, where: str, value: Any, limit: int = MAX_LINE, *, required: bool = False) -> str:
        if value is None or value == "":
            if required:
                self.fail(where, "is required")
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.fail(where, "must be text")
            return ""
        text = str(value).strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(where, "contains characters that are not text (lone surrogates)")
            return ""
        if len(text) > limit:
            self.fail(where, f"is {len(text):,} characters long; at most {limit:,} are allowed")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            self.fail(where, "contains control characters")
        if limit == MAX_LINE and "\n" in text:
            self.fail(where, "must be one line")
        return text

    def items(self, where: str, value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, str | dict):
            value = [value]
        if not isinstance(value, list):
            self.fail(where, "must be a list")
            return []
        if len(value) > MAX_ITEMS:
            self.fail(where, f"has {len(value):,} items; at most {MAX_ITEMS} are allowed")
            return []
        return value

    def keys(self, where: str, item: Any, allowed: tuple[str, ...], default: str) -> dict[str, Any]:
        """An item as a dict (a bare string fills *default*), unknown keys reported."""
        if isinstance(item, str):
            return {default: item}
        if not isinstance(item, dict):
            self.fail(where, f"must be text or a mapping with {', '.join(allowed)}")
            return {}
        for key in item:
            if key not in allowed:
                self.fail(where, f"unknown field {key!r}; known: {', '.join(allowed)}")
        return item

    def choice(self, where: str, value: str, options: list[str]) -> str:
        if not value:
            return value
        by_lower = {o.lower(): o for o in options}
        if value.lower() in by_lower:
            return by_lower[value.lower()]
        self.fail(where, f"{value!r} is not one of DataCite's values: {', '.join(options)}")
        return value


def _orcid_ok(digits: str) -> bool:
    """ISO 7064 MOD 11-2, the check digit of an ORCID iD."""
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def _person(c: _Checker, where: str, raw: Any, *, contributor: bool) -> dict[str, Any] | None:
    allowed: tuple[str, ...] = ("name", "given", "family", "orcid", "affiliation", "ror")
    if contributor:
        allowed = (*allowed, "type")
    item = c.keys(where, raw, allowed, "name")
    if not item:
        return None
    out: dict[str, Any] = {}
    name = c.text(f"{where}.name", item.get("name"))
    given = c.text(f"{where}.given", item.get("given"))
    family = c.text(f"{where}.family", item.get("family"))
    if not name and family:
        name = f"{family}, {given}" if given else family
    out["name"] = name
    if given:
        out["given"] = given
    if family:
        out["family"] = family
    orcid = c.text(f"{where}.orcid", item.get("orcid"))
    if orcid:
        m = _ORCID.match(orcid)
        if not m:
            c.fail(f"{where}.orcid", f"{orcid!r} is not an ORCID iD (like 0000-0002-1825-0097)")
        elif not _orcid_ok(m.group(1).replace("-", "")):
            c.fail(f"{where}.orcid", f"{orcid!r} is not a valid ORCID iD: its check digit is wrong")
        else:
            out["orcid"] = m.group(1)
    affiliation = c.text(f"{where}.affiliation", item.get("affiliation"))
    if affiliation:
        out["affiliation"] = affiliation
    ror = c.text(f"{where}.ror", item.get("ror"))
    if ror:
        m = _ROR.match(ror)
        if not m:
            c.fail(f"{where}.ror", f"{ror!r} is not a ROR id (like https://ror.org/05dxps055)")
        else:
            out["ror"] = f"https://ror.org/{m.group(1)}"
            if not affiliation:
                c.fail(f"{where}.affiliation", "give the institution's name with its ROR id")
    if contributor:
        kind = c.text(f"{where}.type", item.get("type")) or "Other"
        out["type"] = c.choice(f"{where}.type", kind, CONTRIBUTOR_TYPES)
    if not name:
        c.fail(f"{where}.name", "is required (e.g. 'Curie, Marie' or a group's name)")
        return None
    return out


def _identifier(c: _Checker, where: str, value: str, kind: str) -> tuple[str, str]:
    """(identifier, type): DOIs recognised in any of their usual spellings."""
    m = _DOI.match(value)
    if m and kind in ("", "DOI"):
        return m.group(1), "DOI"
    if kind == "DOI":
        c.fail(where, f"{value!r} is not a DOI (like 10.5281/zenodo.123456)")
    if not kind:
        if value.startswith(("https://", "http://")):
            return value, "URL"
        c.fail(where, f"{value!r}: give its type (DOI, URL, ...) or a full https:// URL")
        return value, "URL"
    return value, c.choice(f"{where}.type", kind, IDENTIFIER_TYPES)


def _license(c: _Checker, value: str) -> str:
    if not value:
        return ""
    from license_expression import get_spdx_licensing

    info = get_spdx_licensing().validate(value)
    if info.errors or not info.normalized_expression:
        c.fail(
            "license",
            f"{value!r} is not an SPDX licence id; for data use e.g. CC-BY-4.0 or CC0-1.0, "
            "for code MIT or Apache-2.0 (see https://spdx.org/licenses/)",
        )
        return value
    return str(info.normalized_expression)


def check_form(form: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A form normalised (empty fields dropped), and what is wrong with it."""
    c = _Checker()
    out: dict[str, Any] = {}
    for key in form:
        if key not in FIELDS:
            c.fail(str(key), f"unknown field; known fields are {', '.join(FIELDS)}")
    for key in ("title", "language", "version", "publisher"):
        if value := c.text(key, form.get(key)):
            out[key] = value
    if out.get("language") and not _LANG.match(out["language"]):
        c.fail("language", f"{out['language']!r} is not a language code (like en or de)")
    if value := c.text("description", form.get("description"), MAX_TEXT):
        out["description"] = value
    if rtype := c.text("resource_type", form.get("resource_type")):
        out["resource_type"] = c.choice("resource_type", rtype, RESOURCE_TYPES)
    if lic := _license(c, c.text("license", form.get("license"))):
        out["license"] = lic
    for key, contributor in (("creators", False), ("contributors", True)):
        people = [
            p
            for i, raw in enumerate(c.items(key, form.get(key)))
            if (p := _person(c, f"{key}[{i + 1}]", raw, contributor=contributor))
        ]
        if people:
            out[key] = people
    keywords = [
        w
        for i, raw in enumerate(c.items("keywords", form.get("keywords")))
        if (w := c.text(f"keywords[{i + 1}]", raw))
    ]
    if keywords:
        out["keywords"] = keywords
    subjects = []
    for i, raw in enumerate(c.items("subjects", form.get("subjects"))):
        where = f"subjects[{i + 1}]"
        item = c.keys(where, raw, ("subject", "scheme", "uri"), "subject")
        subject = c.text(f"{where}.subject", item.get("subject"), required=bool(item))
        if subject:
            one = {"subject": subject}
            for k in ("scheme", "uri"):
                if v := c.text(f"{where}.{k}", item.get(k)):
                    one[k] = v
            subjects.append(one)
    if subjects:
        out["subjects"] = subjects
    funding = []
    for i, raw in enumerate(c.items("funding", form.get("funding"))):
        where = f"funding[{i + 1}]"
        item = c.keys(where, raw, ("funder", "funder_id", "award", "award_title"), "funder")
        funder = c.text(f"{where}.funder", item.get("funder"), required=bool(item))
        if not funder:
            continue
        one = {"funder": funder}
        if fid := c.text(f"{where}.funder_id", item.get("funder_id")):
            m = _ROR.match(fid)
            if m:
                one["funder_id"] = f"https://ror.org/{m.group(1)}"
            elif _DOI.match(fid):
                one["funder_id"] = f"https://doi.org/{_DOI.match(fid).group(1)}"  # type: ignore[union-attr]
            else:
                c.fail(f"{where}.funder_id", f"{fid!r}: give the funder's ROR id or Crossref DOI")
        for k in ("award", "award_title"):
            if v := c.text(f"{where}.{k}", item.get(k)):
                one[k] = v
        funding.append(one)
    if funding:
        out["funding"] = funding
    related = []
    for i, raw in enumerate(c.items("related", form.get("related"))):
        where = f"related[{i + 1}]"
        item = c.keys(where, raw, ("identifier", "relation", "type"), "identifier")
        ident = c.text(f"{where}.identifier", item.get("identifier"), required=bool(item))
        if not ident:
            continue
        relation = c.text(f"{where}.relation", item.get("relation")) or "References"
        value, kind = _identifier(c, f"{where}.identifier", ident, c.text("", item.get("type")))
        related.append(
            {
                "identifier": value,
                "type": kind,
                "relation": c.choice(f"{where}.relation", relation, RELATION_TYPES),
            }
        )
    if related:
        out["related"] = related
    dates = []
    for i, raw in enumerate(c.items("dates", form.get("dates"))):
        where = f"dates[{i + 1}]"
        item = c.keys(where, raw, ("date", "type"), "date")
        date = c.text(f"{where}.date", item.get("date"), required=bool(item))
        if not date:
            continue
        if not _DATE.match(date):
            c.fail(f"{where}.date", f"{date!r} is not a date like 2026-03-14 (or a range a/b)")
        kind = c.text(f"{where}.type", item.get("type")) or "Other"
        dates.append({"date": date, "type": c.choice(f"{where}.type", kind, DATE_TYPES)})
    if dates:
        out["dates"] = dates
    return out, c.problems


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
    url: str | None = None,
) -> dict[str, Any]:
    """DataCite JSON of a project or dataset (a dataset at *version*: its number is the
    record's version unless the form names one)."""
    form = effective_form(project, dataset)
    if url is None and keep.config.web.base_url:
        base = keep.config.web.base_url
        url = f"{base}/p/{project.name}" + (f"/{dataset.name}" if dataset is not None else "")
        if dataset is not None and version is not None:
            url += f"/@{version}"
    related = list(form.get("related", []))
    if dataset is not None and dataset.release_of_id is not None and keep.config.web.base_url:
        from labkeep.catalog import Dataset as DatasetRow

        with keep.catalog.read() as session:
            source = session.get(DatasetRow, dataset.release_of_id)
            if source is not None:
                related.append(
                    {
                        "identifier": f"{keep.config.web.base_url}/p/{project.name}/"
                        f"{source.name}/@{dataset.release_version}",
                        "type": "URL",
                        "relation": "IsDerivedFrom",
                    }
                )
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


def get_metadata(keep: Keep, address: str) -> MetadataRecord:
    """The metadata of a project or ``PROJECT/DATASET[@N]``, with its DataCite JSON."""
    version = parse_address(address).version
    with keep.catalog.read() as session:
        project, dataset, target = _target(keep, session, address.split("@", 1)[0], "dataset.read")
        own = _load(dataset.meta if dataset is not None else project.meta)
        effective = effective_form(project, dataset)
        doc = datacite_of(keep, project, dataset, version=version)
    return MetadataRecord(target, own, effective, doc, schema_problems(doc))


def datacite(keep: Keep, address: str) -> dict[str, Any]:
    """The DataCite 4.5 JSON of a project or ``PROJECT/DATASET[@N]``."""
    return get_metadata(keep, address).datacite


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
