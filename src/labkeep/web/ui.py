"""HTML pages for people (server-rendered, no JavaScript needed for reading).

Each route parses its input, calls the Keep (acting as the caller) and renders a
template; the Keep raises NotFound/Forbidden, which the app turns into error pages.
Share links are in :mod:`labkeep.web.ui_share`, accounts and groups in
:mod:`labkeep.web.ui_admin`.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import AuthenticationFailed, NotFound, TooManyAttempts
from labkeep.keep import Keep
from labkeep.names import address_text
from labkeep.web import (
    jsonld,
    pages,
    ui_admin,
    ui_buffers,
    ui_extract,
    ui_jobs,
    ui_meta,
    ui_runs,
    ui_search,
    ui_share,
)
from labkeep.web.api_jobs import queue_verify
from labkeep.web.deps import SESSION_COOKIE, WholeForm, csrf_protect, resolve
from labkeep.web.limits import receive_upload
from labkeep.web.pages import PAGE_SIZE, if_allowed, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form()]
#: double-submit token of the sign-in form (there is no session to bind it to yet)
LOGIN_COOKIE = "labkeep_login"


def _root(request: Request) -> str:
    return (request.scope.get("root_path") or "").rstrip("/")


def _secure(request: Request, keep: Keep) -> bool:
    setting = keep.config.web.secure_cookies
    return setting == "true" or (setting != "false" and request.url.scheme == "https")


# -- dashboard ----------------------------------------------------------------------------
@router.get("/", name="dashboard")
def dashboard(request: Request, keep: Caller) -> Response:
    projects = keep.list_projects()
    signed_in = keep.principal.kind == "user"
    return render(
        request,
        "dashboard.html",
        {
            "title": "Projects" if signed_in else "Welcome",
            "projects": projects,
            "datasets": pages.recent_datasets(keep, projects),
            "events": if_allowed(keep.events, limit=20),
            "status": if_allowed(keep.status),
            "queue": keep.queue_summary() if keep.principal.site_admin else None,
            "my_groups": keep.whoami().get("groups", {}) if signed_in else {},
        },
    )


@router.post("/projects")
def create_project(
    request: Request,
    keep: Caller,
    name: Text = "",
    title: Text = "",
    description: Text = "",
    group: Text = "",
    private: Text = "",
) -> Response:
    info = keep.create_project(
        name.strip(),
        title=title.strip(),
        description=description.strip(),
        group=group or None,
        private=bool(private),
    )
    return redirect(pages.Links(request).project(info.name), "project-created")


# -- signing in and out -------------------------------------------------------------------
def _login_page(
    request: Request,
    keep: Keep,
    *,
    name: str = "",
    next_url: str | None = None,
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    token = secrets.token_urlsafe(24)
    signed_in = request.state.auth == "session"
    response = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "name": name,
            "next": pages.local_path(next_url) or "",
            "error": error,
            "form_token": request.state.csrf if signed_in else token,
        },
        status=status,
        headers=headers,
    )
    if not signed_in:
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            path=_root(request) + "/login",
            secure=_secure(request, keep),
        )
    return response


@router.get("/login", name="login")
def login_form(request: Request, keep: Caller, next: str | None = None) -> Response:
    return _login_page(request, keep, next_url=next)


@router.post("/login")
def login(
    request: Request,
    keep: Caller,
    name: Text = "",
    password: Text = "",
    next: Text = "",
    csrf_token: Text = "",
) -> Response:
    """Check the password, start a new session (a new id every time), set the cookie."""

    def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        return _login_page(
            request, keep, name=name, next_url=next, error=error, status=status, headers=headers
        )

    if request.state.auth != "session":  # with a session, csrf_protect checked the form
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected, csrf_token):
            return again("The sign-in form had expired. Please sign in again.", 403)
    client = request.client.host if request.client else ""
    try:
        secret, _csrf, _principal = keep.login(name.strip(), password, client=client)
    except TooManyAttempts as exc:
        wait = exc.retry_after
        error = f"Too many failed sign-ins. Wait {wait} seconds, then try again."
        return again(error, 429, {"Retry-After": str(wait)})
    except AuthenticationFailed:
        return again("Wrong user name or password.", 401)
    old = request.cookies.get(SESSION_COOKIE)
    if old and request.state.auth == "session":
        keep.logout(old)  # signing in as someone else ends the previous session
    request.state.drop_cookie = False  # a stale cookie is replaced, not deleted
    response = redirect(pages.local_path(next) or _root(request) + "/")
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        path=_root(request) + "/",
        secure=_secure(request, keep),
    )
    response.delete_cookie(LOGIN_COOKIE, path=_root(request) + "/login")
    return response


@router.post("/logout")
def logout(request: Request, keep: Caller) -> Response:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        keep.logout(secret)
    response = redirect(_root(request) + "/", "signed-out")
    response.delete_cookie(
        SESSION_COOKIE,
        path=_root(request) + "/",
        httponly=True,
        samesite="lax",
        secure=_secure(request, keep),
    )
    return response


# -- projects -----------------------------------------------------------------------------
@router.get("/p/{project}", name="project_page")
def project_page(request: Request, keep: Caller, project: str, after: str = "") -> Response:
    info = keep.get_project(project)
    page = pages.PAGE_SIZE
    datasets = keep.list_datasets(project, limit=page, after=after[:200] or None)
    links = pages.Links(request, keep.config.web.base_url)
    return render(
        request,
        "project.html",
        {
            "title": info.title or info.name,
            "project": info,
            "datasets": datasets,
            "after": after[:200],
            "next_after": datasets[-1].name if len(datasets) == page else None,
            "grants": if_allowed(keep.list_grants, project),
            "shares": if_allowed(keep.list_shares, project),
            "crumbs": pages.crumbs_for(links, project),
            "json_ld": jsonld.project(links, info, datasets),
            "kv_action": links.project(project),
            **ui_search.keyvalues_context(keep, project),
        },
    )


@router.post("/p/{project}/edit", dependencies=[WholeForm])
def edit_project(
    request: Request, keep: Caller, project: str, title: Text = "", description: Text = ""
) -> Response:
    keep.update_project(project, title=title.strip(), description=description.strip())
    return redirect(pages.Links(request).project(project), "edited")


@router.post("/p/{project}/datasets")
def create_dataset(
    request: Request,
    keep: Caller,
    project: str,
    name: Text = "",
    kind: Text = "session",
    title: Text = "",
) -> Response:
    info = keep.create_dataset(f"{project}/{name.strip()}", kind=kind, title=title.strip())
    return redirect(pages.Links(request).dataset(project, info.name), "dataset-created")


@router.post("/p/{project}/grant")
def grant(
    request: Request,
    keep: Caller,
    project: str,
    principal: Text = "",
    permission: Text = "read",
    dataset: Text = "",
) -> Response:
    target = f"{project}/{dataset}" if dataset else project
    keep.grant(principal.strip(), permission, target)
    return redirect(pages.Links(request).project(project) + "#access", "granted")


@router.post("/p/{project}/revoke")
def revoke(
    request: Request, keep: Caller, project: str, principal: Text = "", target: Text = ""
) -> Response:
    keep.revoke(principal, target or project)
    return redirect(pages.Links(request).project(project) + "#access", "revoked")


# -- datasets -----------------------------------------------------------------------------
def _dataset_page(
    request: Request,
    keep: Keep,
    project: str,
    dataset: str,
    version: int | None,
    after: str | None,
) -> Response:
    address = f"{project}/{dataset}"
    view = keep.dataset_view(address, version=version, after=after, limit=PAGE_SIZE)
    info, shown = view.info, view.version
    modified = next((v["committed_at"] for v in view.versions if v["version"] == shown), None)
    links = pages.Links(request, keep.config.web.base_url)
    provenance = ui_runs.dataset_provenance(keep, links, address, version)
    made_by = provenance["made_by"]
    publication = ui_meta.dataset_publication(keep, links, project, dataset, version)
    return render(
        request,
        "dataset.html",
        {
            "title": info.title or info.name,
            "dataset": info,
            "pinned": version,
            "shown_version": shown,
            "items": view.items,
            "after": after,
            "next_after": pages.next_after(view.items),
            "versions": view.versions,
            "n_versions": view.n_versions,
            "verification": view.verification,
            "copies": view.copies,
            "shares": view.shares,
            "jobs": keep.dataset_jobs(project, dataset),
            "crumbs": pages.crumbs_for(links, project, dataset, version=version),
            "json_ld": jsonld.dataset(
                links,
                info,
                shown,
                modified,
                current=version is None,
                run=made_by["run"] if made_by else None,
                datacite=publication["datacite"],
            ),
            **provenance,
            **publication,
            **ui_extract.dataset_context(keep, links, project, dataset, version),
            "kv_action": links.dataset(project, dataset) if version is None else None,
            **ui_search.keyvalues_context(keep, address),
        },
    )


@router.get("/p/{project}/{dataset}", name="dataset_page")
def dataset_page(
    request: Request, keep: Caller, project: str, dataset: str, after: str | None = None
) -> Response:
    return _dataset_page(request, keep, project, dataset, None, after)


@router.get("/p/{project}/{dataset}/@{version}", name="dataset_version_page")
def dataset_version_page(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    version: str,
    after: str | None = None,
) -> Response:
    return _dataset_page(request, keep, project, dataset, pages.version_number(version), after)


@router.post("/p/{project}/{dataset}/edit", dependencies=[WholeForm])
def edit_dataset(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    title: Text = "",
    description: Text = "",
) -> Response:
    keep.update_dataset(
        f"{project}/{dataset}", title=title.strip(), description=description.strip()
    )
    return redirect(pages.Links(request).dataset(project, dataset), "edited")


@router.post("/p/{project}/{dataset}/seal")
def seal(request: Request, keep: Caller, project: str, dataset: str) -> Response:
    keep.seal(f"{project}/{dataset}")
    return redirect(pages.Links(request).dataset(project, dataset), "sealed")


@router.post("/p/{project}/{dataset}/verify")
def verify(request: Request, keep: Caller, project: str, dataset: str) -> Response:
    """Queue a verification (a worker re-hashes the files) and show its job."""
    job = queue_verify(keep, f"{project}/{dataset}")
    return redirect(pages.Links(request).page(f"/jobs/{job.id}"), "job-queued")


@router.post("/p/{project}/{dataset}/upload")
async def upload(request: Request, project: str, dataset: str) -> Response:
    """Browser upload into raw/ (the same ingest as the CLI); shows the records."""
    report = await receive_upload(request, f"{project}/{dataset}")
    links = pages.Links(request)
    return render(
        request,
        "upload_result.html",
        {
            "title": f"Upload to {project}/{dataset}",
            "project": project,
            "dataset": dataset,
            "report": report,
            "crumbs": pages.crumbs_for(links, project, dataset),
        },
    )


# -- files and folders --------------------------------------------------------------------
def _file_page(
    request: Request,
    keep: Keep,
    project: str,
    dataset: str,
    path: str,
    version: int | None,
    after: str | None,
) -> Response:
    path = path.rstrip("/")
    address = address_text(project, dataset, path, version)
    links = pages.Links(request, keep.config.web.base_url)
    crumbs = pages.crumbs_for(links, project, dataset, path, version)
    common = {"project": project, "dataset": dataset, "path": path, "pinned": version}
    try:
        info = keep.stat_file(address)
    except NotFound as missing:
        listing = keep.ls(address, limit=PAGE_SIZE, after=after)  # NotFound when empty
        if listing.items and listing.items[0]["path"] == path:
            raise missing from None  # a file of an old version that left the tree
        return render(
            request,
            "folder.html",
            {
                **common,
                "title": f"{path}/ in {project}/{dataset}",
                "items": listing.items,
                "shown_version": listing.version,
                "after": after,
                "next_after": pages.next_after(listing.items),
                "crumbs": crumbs,
            },
        )
    entry = keep.ls(address, limit=1).items[0]
    return render(
        request,
        "file.html",
        {
            **common,
            "title": f"{info.name} in {project}/{dataset}",
            "file": info,
            "entry": entry,
            "copies": keep.whereis(address) if keep.principal.kind == "user" else None,
            "link_outs": pages.link_outs(keep, links, project, dataset, path, version),
            "crumbs": crumbs,
            "json_ld": jsonld.file(links, project, dataset, info, version),
            **ui_extract.file_context(keep, links, project, dataset, path, version),
        },
    )


@router.get("/p/{project}/{dataset}/-/{path:path}", name="file_page")
def file_page(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    path: str,
    after: str | None = None,
) -> Response:
    return _file_page(request, keep, project, dataset, path, None, after)


@router.get("/p/{project}/{dataset}/@{version}/-/{path:path}", name="file_version_page")
def file_version_page(
    request: Request,
    keep: Caller,
    project: str,
    dataset: str,
    version: str,
    path: str,
    after: str | None = None,
) -> Response:
    return _file_page(request, keep, project, dataset, path, pages.version_number(version), after)


router.include_router(ui_share.router)
router.include_router(ui_admin.router)
router.include_router(ui_buffers.router)
router.include_router(ui_jobs.router)
router.include_router(ui_runs.router)
router.include_router(ui_meta.router)
router.include_router(ui_search.router)
