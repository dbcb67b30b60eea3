"""schema.org JSON-LD for landing pages: Project, Dataset (with its downloads), DataDownload.

Search engines and data catalogues (Google Dataset Search, DataCite harvesters) read
these blocks; pages embed them with the ``json_ld`` filter, which keeps them inert.
"""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING, Any

from labkeep.web.pages import Links, iso

if TYPE_CHECKING:
    from labkeep.ops.files import FileInfo
    from labkeep.ops.projects import DatasetInfo, ProjectInfo

# file types that instruments and pipelines write and that mimetypes does not know
_EXTRA_TYPES = {
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".czi": "application/octet-stream",
    ".nd2": "application/octet-stream",
    ".lif": "application/octet-stream",
    ".fastq": "text/plain",
    ".fq": "text/plain",
    ".fasta": "text/plain",
    ".bam": "application/octet-stream",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".md": "text/markdown",
    ".sha256": "text/plain",
    ".zarr": "application/octet-stream",
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
}


def encoding_format(name: str) -> str:
    """A media type guessed from a file name's extension."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def project(links: Links, project: ProjectInfo, datasets: list[DatasetInfo]) -> dict[str, Any]:
    url = links.absolute(links.project(project.name))
    return {
        "@context": "https://schema.org",
        "@type": "Project",
        "@id": url,
        "url": url,
        "identifier": url,
        "name": project.title or project.name,
        "alternateName": project.name,
        "description": project.description,
        "dateCreated": iso(project.created_at),
        "hasPart": [
            {
                "@type": "Dataset",
                "@id": links.absolute(links.dataset(d.project, d.name)),
                "name": d.title or d.name,
                "url": links.absolute(links.dataset(d.project, d.name)),
            }
            for d in datasets
        ],
    }


def dataset(
    links: Links,
    dataset: DatasetInfo,
    version: int,
    modified: str | None,
    *,
    current: bool,
    run: dict[str, Any] | None = None,
    datacite: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Dataset; with *run* (the record of the run that made this version), its inputs
    as ``isBasedOn`` and the run as the ``CreateAction`` whose ``result`` it is; with
    *datacite* (its DataCite JSON), creators, licence, keywords, funding and its DOI."""
    pinned = None if current else version
    url = links.absolute(links.dataset(dataset.project, dataset.name, pinned))
    distribution = [
        {
            "@type": "DataDownload",
            "name": f"{dataset.name}.zip",
            "encodingFormat": "application/zip",
            "contentUrl": links.absolute(links.zip(dataset.project, dataset.name, pinned)),
        }
    ]
    if current:
        distribution.append(
            {
                "@type": "DataDownload",
                "name": "MANIFEST.sha256",
                "encodingFormat": "text/plain",
                "contentUrl": links.absolute(links.manifest(dataset.project, dataset.name)),
            }
        )
    data: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Dataset",
        "@id": url,
        "url": url,
        "identifier": url,
        "name": dataset.title or dataset.name,
        "alternateName": dataset.address,
        "description": dataset.description or dataset.title or dataset.address,
        "version": str(version),
        "dateCreated": iso(dataset.created_at),
        "dateModified": modified or iso(dataset.created_at),
        "isPartOf": {
            "@type": "Project",
            "url": links.absolute(links.project(dataset.project)),
            "name": dataset.project,
        },
        "isAccessibleForFree": dataset.public,
        "distribution": distribution,
    }
    if run is not None:
        inputs = [_input(links, i) for i in run["inputs"]]
        if inputs:
            data["isBasedOn"] = inputs
        # schema.org links an action to what it made (Action.result), not the other way:
        # the reverse property says "this Dataset is the result of that CreateAction"
        # (the shape of an RO-Crate Process Run Crate)
        data["@reverse"] = {"result": create_action(links, run, inputs)}
    if datacite:
        data.update(from_datacite(datacite))
    return data


def _person(p: dict[str, Any]) -> dict[str, Any]:
    kind = "Organization" if p.get("nameType") == "Organizational" else "Person"
    person: dict[str, Any] = {"@type": kind, "name": p["name"]}
    for ident in p.get("nameIdentifiers", []):
        if ident.get("nameIdentifierScheme") == "ORCID":
            person["@id"] = person["identifier"] = ident["nameIdentifier"]
    if p.get("givenName"):
        person["givenName"] = p["givenName"]
    if p.get("familyName"):
        person["familyName"] = p["familyName"]
    affiliations = []
    for aff in p.get("affiliation", []):
        org: dict[str, Any] = {"@type": "Organization", "name": aff["name"]}
        if aff.get("affiliationIdentifier"):
            org["@id"] = aff["affiliationIdentifier"]
        affiliations.append(org)
    if affiliations:
        person["affiliation"] = affiliations
    return person


def from_datacite(doc: dict[str, Any]) -> dict[str, Any]:
    """The schema.org properties of a Dataset that its DataCite JSON gives."""
    data: dict[str, Any] = {"name": doc["titles"][0]["title"]}
    creators = [c for c in doc.get("creators", []) if c.get("name") != ":unav"]
    if creators:
        data["creator"] = [_person(c) for c in creators]
    if doc.get("contributors"):
        data["contributor"] = [_person(c) for c in doc["contributors"]]
    for d in doc.get("descriptions", []):
        data["description"] = d["description"]
    if doc.get("rightsList"):
        data["license"] = doc["rightsList"][0].get("rightsUri") or doc["rightsList"][0]["rights"]
    keywords = [s["subject"] for s in doc.get("subjects", [])]
    if keywords:
        data["keywords"] = keywords
    if doc.get("fundingReferences"):
        data["funder"] = [
            {"@type": "Organization", "name": f["funderName"]}
            | ({"@id": f["funderIdentifier"]} if f.get("funderIdentifier") else {})
            for f in doc["fundingReferences"]
        ]
    data["publisher"] = {"@type": "Organization", "name": doc["publisher"]["name"]}
    if doc.get("doi"):
        doi = f"https://doi.org/{doc['doi']}"
        data["identifier"] = doi
        data["sameAs"] = doi
    cited = [
        r["relatedIdentifier"]
        if r["relatedIdentifierType"] != "DOI"
        else f"https://doi.org/{r['relatedIdentifier']}"
        for r in doc.get("relatedIdentifiers", [])
        if r["relationType"] in ("IsSupplementTo", "IsCitedBy", "IsReferencedBy", "IsDescribedBy")
    ]
    if cited:
        data["citation"] = cited
    return data


def _input(links: Links, item: dict[str, Any]) -> dict[str, Any]:
    project, name = str(item["dataset"]).split("/", 1)
    url = links.absolute(links.dataset(project, name, int(item["version"])))
    return {
        "@type": "Dataset",
        "@id": url,
        "url": url,
        "name": str(item["address"]),
        "version": str(item["version"]),
    }


def create_action(
    links: Links, run: dict[str, Any], inputs: list[dict[str, Any]]
) -> dict[str, Any]:
    """A run as a schema.org CreateAction: its command (instrument), inputs (object), who
    ran it (agent), when, and how it ended."""
    import shlex

    url = links.absolute(links.page(f"/runs/{run['id']}"))
    status = {
        "done": "CompletedActionStatus",
        "failed": "FailedActionStatus",
        "cancelled": "FailedActionStatus",
    }.get(str(run["state"]), "ActiveActionStatus")
    action: dict[str, Any] = {
        "@type": "CreateAction",
        "@id": url,
        "url": url,
        "name": f"Run {run['id']}",
        "description": run["message"] or shlex.join(str(a) for a in run["command"])[:500],
        "actionStatus": f"https://schema.org/{status}",
        "agent": {"@type": "Person", "name": run["user"]},
        "instrument": {
            "@type": "SoftwareApplication",
            "name": shlex.join(str(a) for a in run["command"])[:500],
        },
        "object": inputs,
    }
    if run.get("started_at"):
        action["startTime"] = run["started_at"]
    if run.get("finished_at"):
        action["endTime"] = run["finished_at"]
    if run.get("error"):
        action["error"] = {"@type": "Thing", "name": str(run["error"])[:500]}
    return action


def file(
    links: Links, project: str, dataset: str, info: FileInfo, pinned: int | None
) -> dict[str, Any]:
    url = links.absolute(links.file(project, dataset, info.path, pinned))
    return {
        "@context": "https://schema.org",
        "@type": "DataDownload",
        "@id": url,
        "url": url,
        "identifier": url,
        "name": info.name,
        "contentUrl": links.absolute(links.download(project, dataset, info.path, pinned)),
        "contentSize": f"{info.size} B",
        "sha256": info.sha256,
        "encodingFormat": encoding_format(info.name),
        "version": str(info.version),
        "isPartOf": {
            "@type": "Dataset",
            "url": links.absolute(links.dataset(project, dataset, pinned)),
        },
    }
