"""Share links in the UI: creating and revoking them, and what their holders see.

Pages and downloads under ``/s/TOKEN`` act as the link's holder (no account needed):
each route opens the link with :func:`labkeep.web.deps.share_keep`, and the Keep allows
exactly what the link opens. URLs below a link name the project and dataset:
``/s/TOKEN/browse/PROJECT/DATASET[/PATH]``, ``/s/TOKEN/file/PROJECT/DATASET/PATH``,
``/s/TOKEN/zip/PROJECT/DATASET[?path=FOLDER]``, ``/s/TOKEN/manifest/PROJECT/DATASET``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import NotFound, UsageError
from labkeep.keep import Keep
from labkeep.names import address_text
from labkeep.ops.shares import ShareInfo
from labkeep.web import downloads, pages
from labkeep.web.deps import csrf_protect, resolve, share_keep
from labkeep.web.pages import PAGE_SIZE, Links, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form()]


def _max_downloads(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    number = pages.whole_number(text, 2**31)
    if number is None:
        raise UsageError(
            "the download limit must be a whole number from 1 to 2147483647 (or empty for no limit)"
        )
    return number


def _created(request: Request, keep: Keep, token: str, info: ShareInfo, back: str) -> Response:
    """The new link, shown this once (only its hash is stored)."""
    links = Links(request, keep.config.web.base_url)
    return render(
        request,
        "share_created.html",
        {
            "title": "Share link created",
            "url": links.absolute(links.share(token)),
            "share": info,
            "back": back,
        },
        status=201,
    )


# -- creating and revoking ----------------------------------------------------------------
@router.post("/p/{project}/share")
def share_project(
    request: Request,
    keep: Caller,
    project: str,
    expires: Text = "7d",
    max_downloads: Text = "",
    label: Text = "",
) -> Response:
    token, info = keep.create_share(
        project, expires=expires, max_downloads=_max_downloads(max_downloads), label=label.strip()
    )
    return _created(request, keep, token, info, Links(request).project(project))


@router.post("/p/{project}/{dataset}/share")
def share_dataset(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    expires: Text = "7d",
    max_downloads: Text = "",
    label: Text = "",
    path: Text = "",
    version: Text = "",
) -> Response:
    """A link to the dataset, or to one version, folder or file of it."""
    pinned = pages.version_number(version) if version else None
    token, info = keep.create_share(
        address_text(project, dataset, path.strip("/") or None, pinned),
        expires=expires,
        max_downloads=_max_downloads(max_downloads),
        label=label.strip(),
    )
    links = Links(request)
    back = (
        links.file(project, dataset, path.strip("/"), pinned)
        if path.strip("/")
        else links.dataset(project, dataset, pinned)
    )
    return _created(request, keep, token, info, back)


@router.post("/shares/{link_id}/revoke")
def revoke_share(request: Request, keep: Caller, link_id: str, next: Text = "") -> Response:
    number = pages.whole_number(link_id)
    if number is None:
        raise NotFound(f"no share link {link_id!r}")
    keep.revoke_share(number)
    return redirect(pages.local_path(next) or Links(request).page("/me"), "share-revoked")


# -- what a link's holder sees ------------------------------------------------------------
def _scope_crumbs(
    links: Links, token: str, project: str, dataset: str | None, path: str | None, base: str | None
) -> list[tuple[str, str]]:
    """Breadcrumbs inside a link: from what it opens down to *path*."""
    crumbs = [("Shared with you", links.share(token))]
    if dataset is None:
        return crumbs
    if base is None:  # the link opens a whole dataset (or project)
        crumbs.append((dataset, links.share(token, "browse", project, dataset)))
    parts = path.split("/") if path else []
    for i in range(len(base.split("/")) if base else 0, len(parts)):
        sub = "/".join(parts[: i + 1])
        crumbs.append((parts[i], links.share(token, "browse", project, dataset, sub)))
    return crumbs


def share_view(
    request: Request,
    keep: Keep,
    token: str,
    project: str | None,
    dataset: str | None,
    path: str | None,
    after: str | None = None,
) -> Response:
    """What a share link opens: a project's datasets, a dataset, a folder or a file."""
    scope = keep.principal.share
    assert scope is not None
    if project is None:
        opened = keep.list_projects()  # only the project the link opens
        if not opened:
            raise NotFound("this share link opens nothing any more")
        project = opened[0].name
    datasets = keep.list_datasets(project)
    links = Links(request, keep.config.web.base_url)
    context: dict[str, Any] = {
        "token": token,
        "project": project,
        "version": scope.version,
        "whole_dataset": scope.path is None and scope.version is None,
    }
    if dataset is None and scope.dataset_id is None:
        return render(
            request,
            "share.html",
            {
                **context,
                "mode": "project",
                "title": f"Shared project {project}",
                "project_info": keep.get_project(project),
                "datasets": datasets,
                "crumbs": _scope_crumbs(links, token, project, None, None, None),
            },
        )
    if dataset is None:
        if not datasets:
            raise NotFound("this share link opens nothing any more")
        dataset, path = datasets[0].name, scope.path
    info = next((d for d in datasets if d.name == dataset), None)
    if info is None:
        raise NotFound(f"no dataset {project}/{dataset}")
    path = path.strip("/") if path else None
    context |= {
        "dataset": info,
        "path": path,
        "crumbs": _scope_crumbs(links, token, project, dataset, path, scope.path),
    }
    address = address_text(project, dataset, path or None, scope.version)
    if path:
        try:
            file = keep.stat_file(address)
        except NotFound:
            pass
        else:
            return render(
                request,
                "share.html",
                {**context, "mode": "file", "file": file, "title": f"Shared file {file.name}"},
            )
    listing = keep.ls(address, limit=PAGE_SIZE, after=after)
    what = f"folder {path}" if path else f"dataset {project}/{dataset}"
    return render(
        request,
        "share.html",
        {
            **context,
            "mode": "folder" if path else "dataset",
            "title": f"Shared {what}",
            "items": listing.items,
            "shown_version": listing.version,
            "after": after,
            "next_after": pages.next_after(listing.items),
        },
    )


def _address(keep: Keep, project: str, dataset: str, path: str | None = None) -> str:
    """``PROJECT/DATASET[/PATH]`` at the version the link opens."""
    scope = keep.principal.share
    version = scope.version if scope is not None else None
    return address_text(project, dataset, (path or "").strip("/") or None, version)


@router.get("/s/{token}", name="share_entry")
def share_entry(request: Request, token: str, after: str | None = None) -> Response:
    """Where a share link lands: what it opens, with downloads that need no account."""
    keep = share_keep(request, token)
    return share_view(request, keep, token, None, None, None, after)


@router.get("/s/{token}/browse/{project}/{dataset}", name="share_browse")
def share_browse(
    request: Request, token: str, project: str, dataset: str, after: str | None = None
) -> Response:
    keep = share_keep(request, token)
    return share_view(request, keep, token, project, dataset, None, after)


@router.get("/s/{token}/browse/{project}/{dataset}/{path:path}", name="share_browse_path")
def share_browse_path(
    request: Request, token: str, project: str, dataset: str, path: str, after: str | None = None
) -> Response:
    keep = share_keep(request, token)
    return share_view(request, keep, token, project, dataset, path, after)


@router.get("/s/{token}/file/{project}/{dataset}/{path:path}", name="share_file")
def share_file(request: Request, token: str, project: str, dataset: str, path: str) -> Response:
    range_header = request.headers.get("range")
    keep = share_keep(request, token, resuming=downloads.resuming(range_header))
    return downloads.file_response(keep, _address(keep, project, dataset, path), range_header)


@router.get("/s/{token}/zip/{project}/{dataset}", name="share_zip")
def share_zip(
    request: Request, token: str, project: str, dataset: str, path: str | None = None
) -> Response:
    keep = share_keep(request, token)
    name = (path.strip("/").rsplit("/", 1)[-1] if path and path.strip("/") else dataset) + ".zip"
    return downloads.zip_response(keep, _address(keep, project, dataset, path), name)


@router.get("/s/{token}/manifest/{project}/{dataset}", name="share_manifest")
def share_manifest(request: Request, token: str, project: str, dataset: str) -> Response:
    keep = share_keep(request, token)
    return downloads.manifest_response(keep, f"{project}/{dataset}")
