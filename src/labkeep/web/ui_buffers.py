"""Watched buffers in the UI: browse the folders of a buffer shown to you and import one
into a dataset ("import this folder"). The import is a job; its page shows its progress.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import UsageError
from labkeep.keep import Keep
from labkeep.names import address_text
from labkeep.web.deps import csrf_protect, resolve
from labkeep.web.pages import Links, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form(max_length=4096)]


def _signed_in(keep: Keep) -> None:
    from labkeep.errors import AuthenticationFailed

    if not keep.principal.authenticated:
        raise AuthenticationFailed("sign in to see the instrument buffers")


@router.get("/buffers")
def buffers(request: Request, keep: Caller) -> Response:
    _signed_in(keep)
    links = Links(request)
    return render(
        request,
        "buffers.html",
        {
            "title": "Instrument buffers",
            "buffers": keep.visible_buffers(),
            "crumbs": [("Buffers", links.page("/buffers"))],
        },
    )


@router.get("/buffers/{name}")
def buffer_page(
    request: Request, keep: Caller, name: str, folder: str = "", after: str | None = None
) -> Response:
    _signed_in(keep)
    listing = keep.browse_buffer(name, folder.strip("/"), after=after)
    links = Links(request)
    crumbs = [("Buffers", links.page("/buffers")), (name, links.page(f"/buffers/{name}"))]
    parts = [p for p in listing["folder"].split("/") if p]
    for i, part in enumerate(parts):
        crumbs.append((part, links.page(f"/buffers/{name}", folder="/".join(parts[: i + 1]))))
    projects = [p for p in keep.list_projects()]
    return render(
        request,
        "buffer.html",
        {
            "title": f"Buffer {name}",
            "listing": listing,
            "name": name,
            "projects": projects,
            "crumbs": crumbs,
            "shown": address_text,
        },
    )


@router.post("/buffers/{name}/import")
def import_folder(
    request: Request,
    keep: Caller,
    name: str,
    folder: Text,
    project: Annotated[str, Form(max_length=64)],
    dataset: Annotated[str, Form(max_length=64)] = "",
    seal: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    _signed_in(keep)
    if not project:
        raise UsageError("pick the project to import into")
    target = f"{project}/{dataset.strip()}" if dataset.strip() else project
    job = keep.import_folder(name, folder, target, seal=bool(seal) or None)
    return redirect(Links(request).page(f"/jobs/{job.id}"), "import-queued")
