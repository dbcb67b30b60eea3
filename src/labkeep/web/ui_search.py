"""Pages of search, key-values and samples: the results page behind the search box of
every page, a sample's page with its datasets, and the key-value forms of project and
dataset pages (the use cases decide access; these routes only parse and render)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import LabkeepError, NotFound, UsageError
from labkeep.keep import Keep
from labkeep.web.deps import csrf_protect, resolve
from labkeep.web.pages import Links, if_allowed, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form()]
FILTER_KINDS = ("", "dataset", "file", "project", "sample", "session", "analysis", "release")


def hit_url(links: Links, hit: dict[str, Any]) -> str:
    if hit["kind"] == "project":
        return links.project(hit["project"])
    if hit["kind"] == "dataset":
        return links.dataset(hit["project"], hit["dataset"])
    if hit["kind"] == "file":
        return links.file(hit["project"], hit["dataset"], hit["path"])
    return sample_url(links, hit["sample"])


def sample_url(links: Links, name: str) -> str:
    return links.page(f"/samples/{name}")


@router.get("/search", name="search_page")
def search_page(
    request: Request,
    keep: Caller,
    q: str = "",
    project: str = "",
    kind: str = "",
    instrument: str = "",
    date: str = "",
    sealed: str = "",
    offset: int = 0,
) -> Response:
    links = Links(request, keep.config.web.base_url)
    result = None
    problem = None
    asked = any((q.strip(), project, instrument, date))
    if asked:
        try:
            result = keep.search(
                q[:500],
                project=project or None,
                kind=kind or None,
                instrument=instrument or None,
                date=date or None,
                sealed={"yes": True, "no": False}.get(sealed),
                offset=max(0, offset),
            ).to_dict()
            for hit in result["items"]:
                hit["url"] = hit_url(links, hit)
        except UsageError as exc:
            problem = exc.message
    return render(
        request,
        "search.html",
        {
            "title": f"Search: {q}" if q else "Search",
            "q": q,
            "filters": {
                "project": project,
                "kind": kind,
                "instrument": instrument,
                "date": date,
                "sealed": sealed,
            },
            "kinds": FILTER_KINDS,
            "result": result,
            "problem": problem,
            "asked": asked,
        },
    )


@router.get("/samples/{name}", name="sample_page")
def sample_page(request: Request, keep: Caller, name: str) -> Response:
    info = keep.get_sample(name)
    links = Links(request, keep.config.web.base_url)
    return render(
        request,
        "sample.html",
        {
            "title": f"Sample {info.name}",
            "sample": info,
            "datasets": [(d, links.dataset(*_split(d))) for d in info.datasets],
            "eln_links": sample_links(keep, info.name, info.type, info.attrs),
        },
    )


def sample_links(keep: Keep, name: str, type_: str, attrs: dict[str, str]) -> list[tuple[str, str]]:
    """The configured ``[[web.links]]`` with ``on = "sample"`` (an ELN or LIMS entry)."""
    from urllib.parse import quote

    found = []
    for link in keep.config.web.links:
        if link.on != "sample":
            continue
        url = link.url.replace("{sample}", quote(name, safe="")).replace(
            "{type}", quote(type_, safe="")
        )
        for key, value in attrs.items():
            url = url.replace("{attr." + key + "}", quote(value, safe=""))
        if url.startswith(("https://", "http://", "/")) and "{" not in url:
            found.append((link.name, url))
    return found


def keyvalues_context(keep: Keep, address: str) -> dict[str, Any]:
    """What project and dataset pages show of key-values and samples (nothing if the
    caller may not read them)."""
    record = if_allowed(keep.get_values, address)
    return {"keyvalues": record.to_dict() if record is not None else None}


def _pairs(text: str) -> tuple[dict[str, str], list[str]]:
    """The form's lines: "key=value" sets, "key=" (empty value) removes."""
    values: dict[str, str] = {}
    unset: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UsageError(f"{line.strip()!r} is not key=value", hint="one key=value a line")
        if value.strip():
            values[key.strip()] = value.strip()
        else:
            unset.append(key.strip())
    return values, unset


def _save_values(keep: Keep, address: str, text: str) -> None:
    values, unset = _pairs(text)
    current = keep.get_values(address).values
    keep.set_values(address, values, unset=[k for k in unset if k in current])


@router.post("/p/{project}/kv")
def edit_project_values(request: Request, keep: Caller, project: str, pairs: Text = "") -> Response:
    _save_values(keep, project, pairs)
    return redirect(Links(request).project(project) + "#keyvalues", "edited")


@router.post("/p/{project}/{dataset}/kv")
def edit_dataset_values(
    request: Request, keep: Caller, project: str, dataset: str, pairs: Text = ""
) -> Response:
    _save_values(keep, f"{project}/{dataset}", pairs)
    return redirect(Links(request).dataset(project, dataset) + "#keyvalues", "edited")


@router.post("/p/{project}/{dataset}/samples")
def link_sample(
    request: Request, keep: Caller, project: str, dataset: str, sample: Text = ""
) -> Response:
    if not sample.strip():
        raise UsageError("give the sample's id")
    try:
        keep.link_sample(f"{project}/{dataset}", sample.strip())
    except NotFound as exc:
        if "sample" not in exc.message:
            raise
        raise NotFound(exc.message, hint="register it first: labkeep sample add") from None
    return redirect(Links(request).dataset(project, dataset) + "#keyvalues", "edited")


__all__ = ["LabkeepError", "keyvalues_context", "router"]


def _split(address: str) -> tuple[str, str]:
    project, _, dataset = address.partition("/")
    return project, dataset
