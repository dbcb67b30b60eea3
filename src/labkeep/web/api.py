"""JSON API under /api/v1. Every route is one call into the Keep (acting as the caller).

The job queue's routes (and the long work they queue: verify, copy) are in
:mod:`labkeep.web.api_jobs`."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from labkeep.keep import Keep
from labkeep.names import (
    MAX_DESCRIPTION,
    MAX_EMAIL,
    MAX_LABEL,
    MAX_PATH_BYTES,
    MAX_REASON,
    MAX_TITLE,
    address_text,
)
from labkeep.web import downloads
from labkeep.web.deps import csrf_protect, resolve
from labkeep.web.limits import receive_upload, upload_request_body

T = TypeVar("T")


class FieldProblem(BaseModel):
    field: str = Field(..., description="where, e.g. body.name or query.limit")
    problem: str


class ErrorOut(BaseModel):
    """What every error answers (LabkeepError.as_record)."""

    status: str = Field("error", pattern="^error$")
    error: str = Field(..., description="stable machine-readable code, e.g. not-found")
    message: str
    hint: str | None = None
    fields: list[FieldProblem] | None = Field(
        None, description="422: each field that is not valid (the values sent are not echoed)"
    )
    reference: str | None = Field(None, description="500: the id of the server's log entry")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request (bad name, address or option)",
        401: "No valid credentials (token invalid, expired or revoked; account disabled)",
        403: "Not allowed for this caller",
        404: "No such thing, or the caller may not know that it exists",
        409: "Conflicts with the current state (exists, sealed, busy)",
        413: "The request body is larger than this server accepts",
        422: "The request does not fit the route's parameters",
        429: "Too many failed sign-ins: wait Retry-After seconds",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}


def _content(media_type: str, description: str, *codes: int) -> dict[int | str, dict[str, Any]]:
    """Documents a route that answers bytes, not JSON."""
    schema = {"type": "string", "format": "binary"}
    content = {media_type: {"schema": schema}}
    return {code: {"description": description, "content": content} for code in codes}


router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
Caller = Annotated[Keep, Depends(resolve)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
#: catalog integers are 32-bit on PostgreSQL: larger ids and versions are refused (422)
MAX_INT = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_INT)]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_INT)]


class In(BaseModel):
    """A request body. JSON may carry lone surrogates (``"\\ud800"``) and NULs, which no
    catalog can store (SQLite cannot encode the one, PostgreSQL refuses the other): 422."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str):  # (deeper values: their own validators, which name
            check_storable(value)  # every problem; job arguments: check_storable)
        return value


def check_storable(value: Any, depth: int = 0) -> None:
    """Text a catalog can store (no NUL, no lone surrogate), at any depth of a JSON value
    (job arguments are stored as given)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict) and depth < 64:
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list) and depth < 64:
        for item in value:
            check_storable(item, depth + 1)


Title = Annotated[str, Field(max_length=MAX_TITLE)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Label = Annotated[str, Field(max_length=MAX_LABEL)]
Name = Annotated[str, Field(max_length=MAX_LABEL)]


class ProjectIn(In):
    name: Slug
    title: Title = ""
    description: Description = ""
    group: Name | None = None
    private: bool = False


class EditIn(In):
    title: Title | None = None
    description: Description | None = None


class DatasetIn(In):
    name: Slug
    kind: str = Field("session", pattern="^(session|analysis|release)$")
    title: Title = ""


class GrantIn(In):
    principal: str = Field(..., max_length=MAX_LABEL, description="user, user:NAME, group:NAME")
    permission: str = Field(..., pattern="^(read|write|manage)$")
    target: str = Field(..., max_length=200, description="PROJECT or PROJECT/DATASET")


class ShareIn(In):
    target: str = Field(
        ..., max_length=MAX_PATH_BYTES + 200, description="PROJECT[/DATASET[/PATH]][@VERSION]"
    )
    expires: str = Field("7d", max_length=32, description="e.g. 12h, 7d, 2w")
    max_downloads: int | None = Field(None, ge=1, le=MAX_INT)
    label: Label = ""


class TokenIn(In):
    name: Label = ""
    expires: str = Field("90d", max_length=32)
    read_only: bool = False


class UserIn(In):
    name: Slug
    password: str | None = Field(None, min_length=10, max_length=1024)
    display_name: Label = ""
    email: str = Field("", max_length=MAX_EMAIL)
    site_admin: bool = False
    ldap: bool = False


class PasswordIn(In):
    password: str = Field(..., min_length=10, max_length=1024)
    current: str | None = Field(None, max_length=1024)


class GroupIn(In):
    name: Slug
    title: Title = ""


class MemberIn(In):
    role: str = Field("member", pattern="^(admin|member)$")


class PublicIn(In):
    public: bool = True


def _json(content: T, status_code: int = 200) -> T:
    """*content* (plain JSON values already) answered as it is: FastAPI's
    ``jsonable_encoder`` walks every value of a return value again, which costs more
    than the whole request for a page of 500 files. (Typed as *content* so that the
    route's return annotation still documents the answer in the OpenAPI schema.)"""
    return cast(T, JSONResponse(content, status_code=status_code))


def _dataset(project: str, dataset: str, version: int | None = None) -> str:
    return f"{project}/{dataset}" + (f"@{version}" if version is not None else "")


class LoginIn(In):
    name: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=1024)
    token_name: Label = ""
    expires: str = Field("90d", max_length=32)


@router.post("/auth/token", tags=["users"], status_code=201, responses=_errors(429))
def login_token(body: LoginIn, request: Request) -> dict[str, Any]:
    """Exchange a user name and password for an API token (slowed down after failures)."""
    keep = resolve(request)
    client = request.client.host if request.client else ""
    secret, info = keep.login_token(
        body.name, body.password, client=client, token_name=body.token_name, expires=body.expires
    )
    return {**info.to_dict(), "token": secret}


# -- who am I ---------------------------------------------------------------------------
@router.get("/whoami", tags=["users"])
def whoami(keep: Caller) -> dict[str, Any]:
    return keep.whoami()


# -- projects and datasets --------------------------------------------------------------
@router.get("/projects", tags=["projects"])
def list_projects(keep: Caller) -> list[dict[str, Any]]:
    return _json([p.to_dict() for p in keep.list_projects()])


@router.post("/projects", tags=["projects"], status_code=201)
def create_project(keep: Caller, body: ProjectIn) -> dict[str, Any]:
    return keep.create_project(
        body.name,
        title=body.title,
        description=body.description,
        group=body.group,
        private=body.private,
    ).to_dict()


@router.get("/projects/{project}", tags=["projects"])
def get_project(keep: Caller, project: str) -> dict[str, Any]:
    return keep.get_project(project).to_dict()


@router.patch("/projects/{project}", tags=["projects"])
def edit_project(keep: Caller, project: str, body: EditIn) -> dict[str, Any]:
    return keep.update_project(project, title=body.title, description=body.description).to_dict()


@router.get("/projects/{project}/datasets", tags=["datasets"])
def list_datasets(keep: Caller, project: str) -> list[dict[str, Any]]:
    return _json([d.to_dict() for d in keep.list_datasets(project)])


@router.post("/projects/{project}/datasets", tags=["datasets"], status_code=201)
def create_dataset(keep: Caller, project: str, body: DatasetIn) -> dict[str, Any]:
    return keep.create_dataset(f"{project}/{body.name}", kind=body.kind, title=body.title).to_dict()


@router.get("/datasets/{project}/{dataset}", tags=["datasets"])
def get_dataset(keep: Caller, project: str, dataset: str) -> dict[str, Any]:
    return _json(keep.get_dataset(_dataset(project, dataset)).to_dict())


@router.patch("/datasets/{project}/{dataset}", tags=["datasets"])
def edit_dataset(keep: Caller, project: str, dataset: str, body: EditIn) -> dict[str, Any]:
    return keep.update_dataset(
        _dataset(project, dataset), title=body.title, description=body.description
    ).to_dict()


@router.get("/datasets/{project}/{dataset}/versions", tags=["datasets"])
def versions(keep: Caller, project: str, dataset: str) -> list[dict[str, Any]]:
    return _json(keep.versions(_dataset(project, dataset)))


@router.get("/datasets/{project}/{dataset}/entries", tags=["files"])
def entries(
    keep: Caller,
    project: str,
    dataset: str,
    version: VersionQuery = None,
    path: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """One page of files in path order; pass the last path as ``after`` for the next page."""
    listing = keep.ls(
        address_text(project, dataset, path or None, version), limit=limit, after=after
    )
    items = listing.items
    return _json(
        {
            "dataset": _dataset(project, dataset),
            "version": listing.version,
            "items": items,
            "next_after": items[-1]["path"] if len(items) == limit else None,
        }
    )


@router.get(
    "/files/{project}/{dataset}/{path:path}",
    tags=["files"],
    response_class=Response,
    responses=_content("application/octet-stream", "The file (206: the range asked for)", 200, 206),
)
def download(
    keep: Caller,
    request: Request,
    project: str,
    dataset: str,
    path: str,
    version: VersionQuery = None,
) -> Response:
    """The file's bytes (HTTP Range supported; ETag is its SHA-256)."""
    address = address_text(project, dataset, path, version)
    return downloads.file_response(keep, address, request.headers.get("range"))


@router.get(
    "/datasets/{project}/{dataset}/zip",
    tags=["files"],
    response_class=Response,
    responses=_content("application/zip", "The files as a zip", 200),
)
def download_zip(
    keep: Caller,
    project: str,
    dataset: str,
    path: str | None = None,
    version: VersionQuery = None,
) -> Response:
    """The dataset (or one folder of it) as a streamed zip."""
    address = address_text(project, dataset, path or None, version)
    name = (path.rstrip("/").rsplit("/", 1)[-1] if path else dataset) + ".zip"
    return downloads.zip_response(keep, address, name)


@router.get(
    "/datasets/{project}/{dataset}/manifest",
    tags=["files"],
    response_class=Response,
    responses=_content("text/plain", "MANIFEST.sha256", 200),
)
def manifest(keep: Caller, project: str, dataset: str) -> Response:
    """MANIFEST.sha256 in coreutils format."""
    return downloads.manifest_response(keep, _dataset(project, dataset))


@router.post(
    "/datasets/{project}/{dataset}/files",
    tags=["files"],
    status_code=201,
    openapi_extra=upload_request_body(),
    responses=_errors(413),
)
async def upload(request: Request, project: str, dataset: str) -> dict[str, Any]:
    """Upload files into an open dataset (multipart: ``files`` parts, optional ``paths``);
    they go through ingest. Who may upload is settled before the body is read."""
    report = await receive_upload(request, _dataset(project, dataset))
    return {**report.summary(), "results": [r.to_dict() for r in report.results]}


@router.post("/datasets/{project}/{dataset}/seal", tags=["datasets"])
def seal(keep: Caller, project: str, dataset: str) -> dict[str, Any]:
    return keep.seal(_dataset(project, dataset)).to_dict()


@router.post("/datasets/{project}/{dataset}/unseal", tags=["datasets"])
def unseal(
    keep: Caller,
    project: str,
    dataset: str,
    reason: Annotated[str, Query(max_length=MAX_REASON)] = "",
) -> dict[str, Any]:
    return keep.unseal(_dataset(project, dataset), force=True, reason=reason).to_dict()


@router.get("/datasets/{project}/{dataset}/verification", tags=["datasets"])
def verification(keep: Caller, project: str, dataset: str) -> dict[str, Any]:
    """The last verification: counts per result and when it ran."""
    return keep.verification(_dataset(project, dataset))


@router.get("/datasets/{project}/{dataset}/copies", tags=["copies"])
def copies(keep: Caller, project: str, dataset: str) -> dict[str, Any]:
    """Where the dataset's content lives, store by store, against its copy policy."""
    return keep.copies_of(_dataset(project, dataset))


@router.get("/whereis/{project}/{dataset}/{path:path}", tags=["copies"])
def whereis(
    keep: Caller, project: str, dataset: str, path: str, version: VersionQuery = None
) -> dict[str, Any]:
    """Every store holding the file, when each copy was last checked and what was found."""
    return keep.whereis(address_text(project, dataset, path, version))


@router.get("/stores", tags=["copies"])
def stores(keep: Caller, check: bool = True) -> list[dict[str, Any]]:
    """The stores (site admins): usage as recorded, reachability, lock mode."""
    return [s.to_dict() for s in keep.list_stores(check_health=check)]


class PolicyIn(In):
    min_copies: int | None = Field(None, ge=1, le=20)
    min_media: int | None = Field(None, ge=1, le=20)
    min_offsite: int | None = Field(None, ge=0, le=20)
    on_seal: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=20)
    tree_droppable: bool | None = None


@router.get("/projects/{project}/policy", tags=["copies"])
def get_policy(keep: Caller, project: str) -> dict[str, Any]:
    """The project's copy policy (or the keep's default it inherits)."""
    return keep.get_policy(project).to_dict()


@router.put("/projects/{project}/policy", tags=["copies"])
def set_policy(keep: Caller, project: str, body: PolicyIn) -> dict[str, Any]:
    """Set (part of) the project's copy policy (who manages the project)."""
    return keep.set_policy(project, **body.model_dump()).to_dict()


@router.get("/policy-check", tags=["copies"])
def policy_check(keep: Caller, project: str | None = None) -> list[dict[str, Any]]:
    """Every dataset the caller may read, its copies and whether it meets its policy."""
    return keep.policy_check(project)


@router.put("/datasets/{project}/{dataset}/public", tags=["access"])
def set_public(keep: Caller, project: str, dataset: str, body: PublicIn) -> dict[str, Any]:
    return keep.set_public(_dataset(project, dataset), body.public)


# -- access -------------------------------------------------------------------------------
@router.get("/grants", tags=["access"])
def list_grants(keep: Caller, target: str) -> list[dict[str, Any]]:
    return _json(keep.list_grants(target))


@router.post("/grants", tags=["access"], status_code=201)
def grant(keep: Caller, body: GrantIn) -> dict[str, Any]:
    return keep.grant(body.principal, body.permission, body.target)


@router.delete("/grants", tags=["access"])
def revoke(keep: Caller, principal: str, target: str) -> dict[str, Any]:
    return keep.revoke(principal, target)


@router.get("/shares", tags=["access"])
def list_shares(keep: Caller, target: str | None = None) -> list[dict[str, Any]]:
    return _json([s.to_dict() for s in keep.list_shares(target)])


@router.post("/shares", tags=["access"], status_code=201)
def create_share(keep: Caller, body: ShareIn, request: Request) -> dict[str, Any]:
    """Create a share link; its token is in the answer once and never again."""
    token, info = keep.create_share(
        body.target, expires=body.expires, max_downloads=body.max_downloads, label=body.label
    )
    url = str(request.url_for("share_entry", token=token))
    return {**info.to_dict(), "token": token, "url": url}


@router.delete("/shares/{link_id}", tags=["access"])
def revoke_share(keep: Caller, link_id: RowId) -> dict[str, Any]:
    return keep.revoke_share(link_id).to_dict()


@router.get("/tokens", tags=["access"])
def list_tokens(keep: Caller) -> list[dict[str, Any]]:
    return _json([t.to_dict() for t in keep.list_tokens()])


@router.post("/tokens", tags=["access"], status_code=201)
def create_token(keep: Caller, body: TokenIn) -> dict[str, Any]:
    """Create an API token; its secret is in the answer once and never again."""
    secret, info = keep.create_token(body.name, expires=body.expires, read_only=body.read_only)
    return {**info.to_dict(), "token": secret}


@router.delete("/tokens/{token_id}", tags=["access"])
def revoke_token(keep: Caller, token_id: RowId) -> dict[str, Any]:
    return keep.revoke_token(token_id).to_dict()


# -- users and groups -----------------------------------------------------------------------
@router.get("/users", tags=["users"])
def list_users(keep: Caller) -> list[dict[str, Any]]:
    return _json([u.to_dict() for u in keep.list_users()])


@router.post("/users", tags=["users"], status_code=201)
def add_user(keep: Caller, body: UserIn) -> dict[str, Any]:
    return keep.add_user(
        body.name,
        password=body.password,
        display_name=body.display_name,
        email=body.email,
        site_admin=body.site_admin,
        ldap=body.ldap,
    ).to_dict()


@router.post("/users/{name}/disable", tags=["users"])
def disable_user(keep: Caller, name: str) -> dict[str, Any]:
    return keep.set_user_disabled(name, True).to_dict()


@router.post("/users/{name}/enable", tags=["users"])
def enable_user(keep: Caller, name: str) -> dict[str, Any]:
    return keep.set_user_disabled(name, False).to_dict()


@router.put("/users/{name}/password", tags=["users"], status_code=204)
def set_password(keep: Caller, name: str, body: PasswordIn) -> Response:
    keep.set_password(name, body.password, current=body.current)
    return Response(status_code=204)


@router.get("/groups", tags=["users"])
def list_groups(keep: Caller) -> list[dict[str, Any]]:
    return _json(keep.list_groups())


@router.post("/groups", tags=["users"], status_code=201)
def create_group(keep: Caller, body: GroupIn) -> dict[str, Any]:
    return keep.create_group(body.name, title=body.title)


@router.put("/groups/{group}/members/{user}", tags=["users"])
def set_member(keep: Caller, group: str, user: str, body: MemberIn) -> dict[str, Any]:
    return keep.set_member(group, user, body.role)


@router.delete("/groups/{group}/members/{user}", tags=["users"])
def remove_member(keep: Caller, group: str, user: str) -> dict[str, Any]:
    return keep.set_member(group, user, None)


# -- audit ------------------------------------------------------------------------------
@router.get("/events", tags=["audit"])
def events(
    keep: Caller,
    target: str | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return _json(keep.events(target=target, action=action, limit=limit))
