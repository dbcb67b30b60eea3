"""Metadata and releases in the UI: the DataCite form of a project or dataset, "Cite as"
and the publication facts on a dataset's page, and the release form.

The form is plain HTML: one line per person, grant, related identifier or date, with
the parts separated by ``|`` (``Curie, Marie | 0000-0002-1825-0097 | Institut du Radium |
05dxps055``). It is turned into labkeep's metadata form and checked by the Keep; a form
with problems comes back with every problem listed and the text as it was typed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import MetadataInvalid
from labkeep.keep import Keep
from labkeep.ops._datacite_vocab import (
    CONTRIBUTOR_TYPES,
    DATE_TYPES,
    RELATION_TYPES,
    RESOURCE_TYPES,
)
from labkeep.ops.metadata import citation
from labkeep.web import pages
from labkeep.web.deps import WholeForm, csrf_protect, resolve
from labkeep.web.pages import Links, crumbs_for, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form()]
#: releases of a dataset listed on its page
RELEASES_SHOWN = 20

#: the form's line fields: name -> the parts of one line, in order
LINE_FIELDS: dict[str, tuple[str, ...]] = {
    "creators": ("name", "orcid", "affiliation", "ror"),
    "contributors": ("name", "type", "orcid", "affiliation", "ror"),
    "funding": ("funder", "funder_id", "award", "award_title"),
    "related": ("identifier", "relation", "type"),
    "dates": ("date", "type"),
    "subjects": ("subject", "scheme", "uri"),
}
TEXT_FIELDS = ("title", "description", "license", "resource_type", "language", "version")


def _lines(items: list[dict[str, Any]] | None, parts: tuple[str, ...]) -> str:
    """The textarea text of a list field: one item per line, parts joined by " | "."""
    rows = []
    for item in items or []:
        values = [str(item.get(p, "")) for p in parts]
        while values and not values[-1]:
            values.pop()
        rows.append(" | ".join(values))
    return "\n".join(rows)


def form_text(form: dict[str, Any]) -> dict[str, str]:
    """A metadata form as the HTML form's field texts."""
    text = {key: str(form.get(key, "")) for key in (*TEXT_FIELDS, "publisher")}
    text["keywords"] = ", ".join(form.get("keywords", []))
    for key, parts in LINE_FIELDS.items():
        text[key] = _lines(form.get(key), parts)
    return text


def parse_form(fields: dict[str, str]) -> dict[str, Any]:
    """The HTML form's texts as a metadata form (empty fields left out)."""
    form: dict[str, Any] = {}
    for key in (*TEXT_FIELDS, "publisher"):
        if value := fields.get(key, "").strip():
            form[key] = value
    keywords = [k.strip() for k in fields.get("keywords", "").split(",") if k.strip()]
    if keywords:
        form["keywords"] = keywords
    for key, parts in LINE_FIELDS.items():
        items = []
        for line in fields.get(key, "").splitlines():
            if not line.strip():
                continue
            values = [v.strip() for v in line.split("|")]
            item = {p: v for p, v in zip(parts, values, strict=False) if v}
            if len(values) > len(parts):
                item["_extra"] = " | ".join(values[len(parts) :])  # reported as unknown
            items.append(item)
        if items:
            form[key] = items
    return form


def dataset_publication(
    keep: Keep, links: Links, project: str, dataset: str, version: int | None
) -> dict[str, Any]:
    """What a dataset's page shows about its metadata, citation and releases."""
    address = f"{project}/{dataset}" + (f"@{version}" if version is not None else "")
    base = links.absolute(links.home()).rstrip("/")
    record = keep.get_metadata(address, base_url=base)
    landing = links.absolute(links.dataset(project, dataset, version))
    releases = keep.releases_of(f"{project}/{dataset}", limit=RELEASES_SHOWN)
    return {
        "meta": record.effective,
        "datacite": record.datacite,
        "citation": citation(record.datacite, landing),
        "releases": releases,
        "meta_url": links.page(f"/meta/p/{project}/{dataset}"),
        "datacite_url": links.page(
            f"/api/v1/datasets/{project}/{dataset}/metadata",
            version=version,
        ),
    }


def _edit_page(
    request: Request,
    keep: Keep,
    project: str,
    dataset: str | None,
    fields: dict[str, str] | None = None,
    problems: list[str] | None = None,
) -> Response:
    address = project + (f"/{dataset}" if dataset else "")
    record = keep.get_metadata(address)
    links = Links(request, keep.config.web.base_url)
    inherited: dict[str, str] = {}
    if dataset:
        inherited = form_text(keep.get_metadata(project).own)
    page = links.dataset(project, dataset) if dataset else links.project(project)
    return render(
        request,
        "metadata_edit.html",
        {
            "title": f"Metadata of {address}",
            "address": address,
            "is_dataset": bool(dataset),
            "fields": fields if fields is not None else form_text(record.own),
            "inherited": inherited,
            "problems": problems or [],
            "back": page,
            "action": links.page(f"/meta/p/{address}"),
            "crumbs": crumbs_for(links, project, dataset),
            "resource_types": RESOURCE_TYPES,
            "contributor_types": CONTRIBUTOR_TYPES,
            "relation_types": RELATION_TYPES,
            "date_types": DATE_TYPES,
            "line_fields": LINE_FIELDS,
        },
        status=422 if problems else 200,
    )


def _may_edit(keep: Keep, address: str) -> None:
    """Forbidden unless the caller may edit *address*'s metadata (the form is not shown
    to those who could not save it)."""
    from labkeep.ops.metadata import may_edit

    may_edit(keep, address)


@router.get("/meta/p/{project}")
def edit_project_metadata(request: Request, keep: Caller, project: str) -> Response:
    _may_edit(keep, project)
    return _edit_page(request, keep, project, None)


@router.get("/meta/p/{project}/{dataset}")
def edit_dataset_metadata(request: Request, keep: Caller, project: str, dataset: str) -> Response:
    _may_edit(keep, f"{project}/{dataset}")
    return _edit_page(request, keep, project, dataset)


async def _save(request: Request, keep: Keep, project: str, dataset: str | None) -> Response:
    submitted = await request.form()
    fields = {
        key: str(submitted.get(key, ""))
        for key in (*TEXT_FIELDS, "publisher", "keywords", *LINE_FIELDS)
    }
    address = project + (f"/{dataset}" if dataset else "")
    try:
        keep.set_metadata(address, parse_form(fields), replace=True)
    except MetadataInvalid as exc:
        problems = [p.replace("._extra", "").replace("_extra", "extra parts") for p in exc.problems]
        return _edit_page(request, keep, project, dataset, fields, problems)
    links = Links(request)
    target = links.dataset(project, dataset) if dataset else links.project(project)
    return redirect(target, "metadata-saved")


@router.post("/meta/p/{project}", dependencies=[WholeForm])
async def save_project_metadata(request: Request, keep: Caller, project: str) -> Response:
    return await _save(request, keep, project, None)


@router.post("/meta/p/{project}/{dataset}", dependencies=[WholeForm])
async def save_dataset_metadata(
    request: Request, keep: Caller, project: str, dataset: str
) -> Response:
    return await _save(request, keep, project, dataset)


@router.post("/p/{project}/{dataset}/release")
def release(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    name: Text = "",
    version: Text = "",
    message: Text = "",
) -> Response:
    from labkeep.ops.release import INLINE_FILES

    number = pages.version_number(version) if version.strip() else None  # (bad: 404)
    source = f"{project}/{dataset}" + (f"@{number}" if number else "")
    if keep.release_files(source) > INLINE_FILES:  # a worker makes it; the page shows it
        keep.enqueue("release", {"source": source, "name": name.strip(), "message": message})
        return redirect(Links(request).dataset(project, dataset), "job-queued")
    result = keep.release(source, name=name.strip(), message=message.strip())
    if result.status == "error":
        from labkeep.errors import IntegrityError

        raise IntegrityError(
            result.message + ": " + ", ".join(str(p.get("path")) for p in result.problems[:10])
        )
    target = result.release.split("/", 1)[1]
    return redirect(Links(request).dataset(project, target), "released")
