"""The ``ro-crate-metadata.json`` of a package: RO-Crate 1.1 made with the ``rocrate``
library, its file entities streamed.

The root dataset (name, description, datePublished, license, author, identifier,
keywords, publisher, version) comes from the version's DataCite metadata; creators are
``Person`` entities whose ``@id`` is their ORCID (``Organization`` for organisational
creators), affiliations ``Organization`` entities with their ROR id. When runs made the
version, their provenance is added as in :mod:`labkeep.ops.provenance_export` (Process
Run Crate 0.5: the root ``conformsTo`` the profile, one ``CreateAction`` per run).

Memory: ``rocrate`` keeps every entity in memory until it writes the document, so the
library builds everything but the payload's ``File`` entities; those are written to a
spool file, one JSON line per file, as the payload is copied, and the document is
assembled from the library's graph and the spool (the root's ``hasPart`` from a second
pass over the spool). Memory is then flat in the number of files (a run's outputs,
which the provenance names, are the exception: the library holds them).
"""

from __future__ import annotations

import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from rocrate.rocrate import ROCrate

METADATA = "ro-crate-metadata.json"


def file_id(rel: str) -> str:
    """A payload file's ``@id``: its path, percent-encoded as a relative URI."""
    return quote(rel, safe="/")


def file_entity(rel: str, size: int, sha256: str) -> dict[str, Any]:
    name = PurePosixPath(rel).name
    return {
        "@id": file_id(rel),
        "@type": "File",
        "name": name,
        "contentSize": str(size),
        "encodingFormat": mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream",
        "sha256": sha256,
    }


class CrateBuilder:
    """Builds the crate's contextual part up front; :meth:`write` adds the spooled files."""

    def __init__(self, doc: dict[str, Any], runs: list[dict[str, Any]], published: str) -> None:
        from rocrate.rocrate import ROCrate

        from labkeep.ops import provenance_export as prov

        crate = ROCrate(version=prov.RO_CRATE_VERSION)
        crate.metadata.extra_terms.update(prov.WFRUN_TERMS)
        root = crate.root_dataset
        root["name"] = _title(doc)
        root["description"] = _description(doc) or _title(doc)
        root["datePublished"] = published
        root["license"] = _license(crate, doc)
        authors = [self._agent(crate, c, f"#creator-{i}") for i, c in
                   enumerate(doc.get("creators", [])) if c.get("name") != ":unav"]  # fmt: skip
        if authors:
            root["author"] = authors[0] if len(authors) == 1 else authors
        if doc.get("doi"):
            root["identifier"] = f"https://doi.org/{doc['doi']}"
        elif doc.get("url"):
            root["identifier"] = doc["url"]
        if doc.get("url"):
            root["url"] = doc["url"]
        keywords = [s["subject"] for s in doc.get("subjects", []) if s.get("subject")]
        if keywords:  # RO-Crate 1.1 prefers a single value to a one-item list
            root["keywords"] = keywords[0] if len(keywords) == 1 else keywords
        if doc.get("version"):
            root["version"] = str(doc["version"])
        publisher = (doc.get("publisher") or {}).get("name")
        if publisher:
            root["publisher"] = crate.add_jsonld(
                {"@id": "#publisher", "@type": "Organization", "name": publisher}
            )
        if runs:
            profile = crate.add_jsonld({"@id": prov.PROFILE, "@type": "CreativeWork",
                                        "name": "Process Run Crate", "version": "0.5"})  # fmt: skip
            root["conformsTo"] = profile
            builder = prov._Builder(crate, None)
            actions = [builder.action(record) for record in runs]
            root["mentions"] = actions[0] if len(actions) == 1 else actions
        self.crate = crate
        self.known_files = {e.id for e in crate.get_entities() if e.type == "File"}

    @staticmethod
    def _agent(crate: ROCrate, creator: dict[str, Any], local: str) -> Any:
        orcid = next((n["nameIdentifier"] for n in creator.get("nameIdentifiers", [])
                      if n.get("nameIdentifierScheme") == "ORCID"), None)  # fmt: skip
        person = creator.get("nameType") != "Organizational"
        jsonld: dict[str, Any] = {
            "@id": orcid or local,
            "@type": "Person" if person else "Organization",
            "name": creator["name"],
        }
        if creator.get("givenName"):
            jsonld["givenName"] = creator["givenName"]
        if creator.get("familyName"):
            jsonld["familyName"] = creator["familyName"]
        affiliations = []
        for j, aff in enumerate(creator.get("affiliation", [])):
            ident = aff.get("affiliationIdentifier") or f"{local}-affiliation-{j}"
            existing = crate.get(ident)
            org = {"@id": ident, "@type": "Organization", "name": aff["name"]}
            if aff.get("affiliationIdentifier", "").startswith("https://"):
                org["url"] = aff["affiliationIdentifier"]
            affiliations.append(existing or crate.add_jsonld(org))
        if affiliations and person:
            jsonld["affiliation"] = affiliations[0] if len(affiliations) == 1 else affiliations
        existing = crate.get(jsonld["@id"])
        return existing or crate.add_jsonld(jsonld)

    def write(self, spool: IO[str], target: Path) -> None:
        """Write the document to *target* (a temporary name the caller renames): the
        library's graph, the root's ``hasPart`` extended with every spooled file."""
        graph = self.crate.metadata.generate()
        entities = graph["@graph"]
        with open(target, "w", encoding="utf-8") as out:
            out.write('{"@context": ' + json.dumps(graph["@context"], ensure_ascii=False))
            out.write(',\n "@graph": [\n')
            first = True
            for entity in entities:
                if not first:
                    out.write(",\n")
                first = False
                if entity.get("@id") == "./":
                    _write_root(out, entity, spool)
                else:
                    out.write(json.dumps(entity, ensure_ascii=False))
            spool.seek(0)
            for line in spool:
                out.write(",\n" + line.rstrip("\n"))
            out.write("\n]}\n")


def _write_root(out: IO[str], root: dict[str, Any], spool: IO[str]) -> None:
    parts = root.pop("hasPart", [])
    parts = parts if isinstance(parts, list) else [parts]
    head = json.dumps(root, ensure_ascii=False)
    out.write(head[:-1] + (', "hasPart": [' if len(root) else '"hasPart": ['))
    sep = ""
    for part in parts:
        out.write(sep + json.dumps(part, ensure_ascii=False))
        sep = ", "
    spool.seek(0)
    for line in spool:
        # every spooled line starts with '{"@id": "<id>"': a percent-encoded id holds no
        # quote or backslash, so it is cut out rather than parsed again
        ident = line[9 : line.index('"', 9)]
        out.write(f'{sep}{{"@id": "{ident}"}}')
        sep = ",\n  "
    out.write("]}")


def _title(doc: dict[str, Any]) -> str:
    titles = doc.get("titles") or [{}]
    return str(titles[0].get("title") or "untitled")


def _description(doc: dict[str, Any]) -> str:
    for d in doc.get("descriptions", []):
        if d.get("description"):
            return str(d["description"])
    return ""


def _license(crate: ROCrate, doc: dict[str, Any]) -> Any:
    from labkeep.ops.provenance_export import NO_LICENSE

    for rights in doc.get("rightsList", []):
        spdx = rights.get("rightsIdentifier")
        if spdx:
            return crate.add_jsonld({"@id": f"https://spdx.org/licenses/{spdx}",
                                     "@type": "CreativeWork", "name": spdx,
                                     "identifier": spdx})  # fmt: skip
    return crate.add_jsonld(
        {
            "@id": NO_LICENSE,
            "@type": "CreativeWork",
            "name": "No licence stated",
            "description": "The dataset's metadata names no licence; ask its owners "
            "before reusing it.",
        }
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
