"""A BioImage Archive submission package (BioStudies PageTab).

The BioImage Archive takes submissions as a PageTab study (``submission.tsv``, or the same
in PageTab JSON) whose Study Component names a *file list*: a TSV whose first column is
``Files`` (paths relative to the uploaded folder) and whose other columns are attributes
of each file (or the same as a JSON array of ``{"path", "attributes"}``), uploaded
together with the files. This writes::

    NAME-bia/
      files/...             the version's files (a release's without raw/)
      file_list.tsv         Files, size, sha256 (one row per file, written as copied)
      file_list.json        the same in PageTab JSON
      submission.tsv        PageTab: Submission, Study, Author, Organization, Funding,
                            Study Component (File List: file_list.tsv); written last
      submission.json       the same in PageTab JSON (no TSV escaping limits)
      README.txt            what labkeep filled in and what the submitter must add

Everything the study section holds comes from the DataCite metadata: title, description,
keywords, licence, authors (ORCID, affiliation with ROR), funding, related publications.
The REMBI sections that describe the biology and the imaging (Biosample, Specimen, Image
acquisition, and Image correlation / Image analysis where relevant) are not known to
labkeep: README.txt lists them, to be completed in the BioImage Archive's submission tool.

File names with a tab, CR or LF cannot be written in a TSV file list: such files are
reported (``impossible``) and the package is not finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.ops._payload import Payload, PayloadCopier
    from labkeep.ops.package import Source

FILES = "files"
REMBI_TODO = (
    ("Study", "Study type, Imaging type (e.g. confocal microscopy)"),
    ("Biosample", "Organism (scientific name, NCBI taxon), Biological entity, "
                  "Description, Intrinsic/Extrinsic variables, Experimental variables"),
    ("Specimen", "Sample preparation protocol, Growth protocol"),
    ("Image acquisition", "Imaging instrument description, Imaging method (FBbi term), "
                          "Image acquisition parameters"),
    ("Image correlation", "only for correlative imaging: spatial and temporal alignment, "
                          "fiducials, transformation matrix"),
    ("Image analysis", "only for analysed data: Image analysis overview, tools"),
    ("Annotations", "only when the files include annotations (masks, labels): "
                    "annotation overview, method, criteria, coverage"),
)  # fmt: skip


def _cell(value: Any) -> str:
    """One TSV cell: tabs and line breaks become spaces."""
    return " ".join(str(value).split())


def _bad_name(rel: str) -> bool:
    return any(c in rel for c in "\t\r\n")


def write_bia(
    source: Source,
    copier: PayloadCopier,
    root: Path,
    report: Report,
    emit: Callable[[Result], None],
) -> bool:
    from labkeep.ops.package import MARKER, _write_text, sync_folder

    parts = {n: root / f".{n}.labkeep-part" for n in ("file_list.tsv", "file_list.json")}
    failed = files = size = 0
    refused: list[Payload] = []

    def usable() -> Iterator[Payload]:
        for item in source.items():
            if _bad_name(item.rel):
                refused.append(item)
                continue
            item.rel = f"{FILES}/{item.rel}"
            yield item

    with (
        open(parts["file_list.tsv"], "w", encoding="utf-8", newline="\n") as tsv,
        open(parts["file_list.json"], "w", encoding="utf-8", newline="\n") as js,
    ):
        tsv.write("Files\tsize\tsha256\n")
        js.write("[")
        sep = "\n"
        for item, result in copier.run(usable()):
            while refused:
                emit(_refusal(refused.pop(0)))
                failed += 1
            emit(result)
            if result.status not in ("ok", "notneeded"):
                failed += 1
                continue
            tsv.write(f"{item.rel}\t{item.size}\t{item.sha256}\n")
            attrs = [{"name": "size", "value": str(item.size)},
                     {"name": "sha256", "value": item.sha256}]  # fmt: skip
            js.write(sep + json.dumps({"path": item.rel, "attributes": attrs},
                                      ensure_ascii=False))  # fmt: skip
            sep = ",\n"
            files += 1
            size += item.size
        js.write("\n]\n")
    for item in refused:
        emit(_refusal(item))
        failed += 1
    report.info.update(files=files, bytes=size)
    if failed:
        report.info["message"] = f"{failed} file(s) could not be packaged; not finished"
        return False
    for name, part in parts.items():
        os.replace(part, root / name)
    pagetab = submission(source.doc, source)
    _write_text(root / "submission.json", json.dumps(pagetab, indent=1, ensure_ascii=False))
    _write_text(root / "README.txt", readme(source))
    sync_folder(root)
    _write_text(root / "submission.tsv", submission_tsv(pagetab))  # last: marks it done
    (root / MARKER).unlink()
    return True


def _refusal(item: Payload) -> Result:
    return Result(
        "package",
        "impossible",
        path=item.path,
        size=item.size,
        message="a tab or line break in the file name cannot be written in a BioImage "
        "Archive file list; rename the file in a new version",
    )


def _attr(name: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": str(value), **extra}


def submission(doc: dict[str, Any], source: Source) -> dict[str, Any]:
    """The PageTab JSON of the study (BioStudies' submission document)."""
    from labkeep.ops._bag_crate import _description, _title

    study: list[dict[str, Any]] = [_attr("Title", _title(doc))]
    if _description(doc):
        study.append(_attr("Description", _description(doc)))
    for s in doc.get("subjects", []):
        if s.get("subject") and not s.get("subjectScheme"):
            study.append(_attr("Keywords", s["subject"]))
    for rights in doc.get("rightsList", []):
        if rights.get("rightsIdentifier"):
            study.append(_attr("License", rights["rightsIdentifier"]))
    authors: list[dict[str, Any]] = []
    organizations: list[dict[str, Any]] = []
    orgs: dict[str, str] = {}
    for person in doc.get("creators", []):
        if person.get("name") == ":unav":
            continue
        attrs = [_attr("Name", person["name"])]
        for ident in person.get("nameIdentifiers", []):
            if ident.get("nameIdentifierScheme") == "ORCID":
                attrs.append(_attr("ORCID", ident["nameIdentifier"].rsplit("/", 1)[-1]))
        for aff in person.get("affiliation", []):
            key = aff.get("affiliationIdentifier") or aff["name"]
            if key not in orgs:
                orgs[key] = f"o{len(orgs) + 1}"
                org = [_attr("Name", aff["name"])]
                if aff.get("affiliationIdentifier"):
                    org.append(_attr("RORID", aff["affiliationIdentifier"]))
                organizations.append({"accno": orgs[key], "type": "Organization",
                                      "attributes": org})  # fmt: skip
            attrs.append(_attr("affiliation", orgs[key], reference=True))
        authors.append({"type": "Author", "attributes": attrs})
    subsections = authors + organizations
    for fund in doc.get("fundingReferences", []):
        attrs = [_attr("Agency", fund["funderName"])]
        if fund.get("awardNumber"):
            attrs.append(_attr("grant_id", fund["awardNumber"]))
        subsections.append({"type": "Funding", "attributes": attrs})
    for rel in doc.get("relatedIdentifiers", []):
        if rel.get("relatedIdentifierType") == "DOI":
            doi = _attr("DOI", rel["relatedIdentifier"])
            subsections.append({"type": "Publication", "attributes": [doi]})
    subsections.append(
        {
            "type": "Study Component",
            "attributes": [
                _attr("Name", source.name),
                _attr("Description", f"{source.address}: {_title(doc)}"),
                _attr("File List", "file_list.tsv"),
            ],
        }
    )
    return {
        "attributes": [_attr("Title", _title(doc)), _attr("AttachTo", "BioImages")],
        "section": {"type": "Study", "attributes": study, "subsections": subsections},
        "type": "submission",
    }


def submission_tsv(pagetab: dict[str, Any]) -> str:
    """PageTab TSV of :func:`submission`'s document: blocks separated by blank lines."""
    lines = ["Submission"]
    lines += [f"{_cell(a['name'])}\t{_cell(a['value'])}" for a in pagetab["attributes"]]
    section = pagetab["section"]
    lines += ["", "Study"]
    lines += [f"{_cell(a['name'])}\t{_cell(a['value'])}" for a in section["attributes"]]
    for sub in section["subsections"]:
        lines.append("")
        lines.append(sub["type"] + (f"\t{sub['accno']}" if sub.get("accno") else ""))
        for a in sub["attributes"]:
            name = f"<{a['name']}>" if a.get("reference") else a["name"]
            lines.append(f"{_cell(name)}\t{_cell(a['value'])}")
    return "\n".join(lines) + "\n"


def readme(source: Source) -> str:
    todo = "\n".join(f"- {section}: {what}" for section, what in REMBI_TODO)
    return (
        f"BioImage Archive submission package of {source.address}, made by labkeep.\n\n"
        "Upload this whole folder (files/, file_list.tsv) to your BioImage Archive upload\n"
        "area, then start a submission in the BioImage Archive's submission tool with\n"
        "submission.tsv (or submission.json) and the file list file_list.tsv.\n\n"
        "Filled in from the dataset's DataCite metadata: title, description, keywords,\n"
        "licence, authors (ORCID, affiliation, ROR), funding, related publications (DOI),\n"
        "one study component with the file list (size and SHA-256 of every file).\n\n"
        "Not known to labkeep; add these REMBI fields in the submission tool:\n"
        f"{todo}\n"
        "- Author: e-mail address of at least the contact author; roles\n"
        "- Release date of the study\n"
    )
