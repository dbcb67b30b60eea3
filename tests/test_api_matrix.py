"""The authorization matrix (tests/authz_matrix.yaml) walked over HTTP, through the JSON API.

Every route under /api/v1 is called by every kind of principal of the matrix on the own
and the foreign resource of the matrix's world, against a real uvicorn server; the HTTP
status must match the expected outcome: ok -> 2xx, denied -> 403, hidden -> 404.
A route of the app that is missing from ``CASES`` fails the test.

How the principals call the API:
- anonymous: no credentials.
- share_link: the API does not take share links (they open the UI's /s/TOKEN pages), so
  a holder calling the API is anonymous; as a bearer token the link gets 401 everywhere.
- external, member, other_admin, group_admin, site_admin: an API token of their account.
- disabled: a token created while the account was enabled; every call gets 401.

SQLite only: the matrix itself runs on both catalogs in tests/test_access.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.test_access import MATRIX, PASSWORD, World
from tests.webserver import LiveServer

API = "/api/v1"
KINDS = list(MATRIX["principals"])
#: the users of the matrix's world behind each principal kind that has an account
ACCOUNTS = {
    "external": "ext",
    "member": "alice",
    "other_admin": "badmin",
    "group_admin": "gadmin",
    "disabled": "dis",
}

#: outcomes of routes that have no operation in the matrix: [own, foreign] per principal.
#: "own" is the caller's own account/token/links, "foreign" someone else's.
OWN_EXPECTED: dict[str, dict[str, list[str]]] = {
    "login": {  # one's own name and password; an unknown name
        "anonymous": ["ok", "unauthenticated"],
        "external": ["ok", "unauthenticated"],
        "member": ["ok", "unauthenticated"],
        "other_admin": ["ok", "unauthenticated"],
        "group_admin": ["ok", "unauthenticated"],
        "site_admin": ["ok", "unauthenticated"],
    },
    "whoami": {  # anyone may ask who they are
        "anonymous": ["ok", "ok"],
        "external": ["ok", "ok"],
        "member": ["ok", "ok"],
        "other_admin": ["ok", "ok"],
        "group_admin": ["ok", "ok"],
        "site_admin": ["ok", "ok"],
    },
    "own_shares": {  # the share links one created
        "anonymous": ["denied", "denied"],
        "external": ["ok", "ok"],
        "member": ["ok", "ok"],
        "other_admin": ["ok", "ok"],
        "group_admin": ["ok", "ok"],
        "site_admin": ["ok", "ok"],
    },
    "revoke_token": {  # one's own token; zed's token
        "anonymous": ["denied", "denied"],
        "external": ["ok", "hidden"],
        "member": ["ok", "hidden"],
        "other_admin": ["ok", "hidden"],
        "group_admin": ["ok", "hidden"],
        "site_admin": ["ok", "ok"],
    },
    "own_jobs": {  # the jobs one queued (site admins: all)
        "anonymous": ["denied", "denied"],
        "external": ["ok", "ok"],
        "member": ["ok", "ok"],
        "other_admin": ["ok", "ok"],
        "group_admin": ["ok", "ok"],
        "site_admin": ["ok", "ok"],
    },
    "read_job": {  # a job one queued; zed's (others' jobs are "not found")
        "anonymous": ["hidden", "hidden"],
        "external": ["ok", "hidden"],
        "member": ["ok", "hidden"],
        "other_admin": ["ok", "hidden"],
        "group_admin": ["ok", "hidden"],
        "site_admin": ["ok", "ok"],
    },
    "set_password": {  # one's own (giving the current one); zed's
        "anonymous": ["denied", "denied"],
        "external": ["ok", "denied"],
        "member": ["ok", "denied"],
        "other_admin": ["ok", "denied"],
        "group_admin": ["ok", "denied"],
        "site_admin": ["ok", "ok"],
    },
}


@dataclass
class Walk:
    """The matrix's world served over HTTP, with an API token per principal kind."""

    world: World
    server: LiveServer
    client: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)
    #: per kind, the id of a spare token of the caller's own (for DELETE /tokens/{id})
    own_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def admin(self) -> Keep:
        return self.world.admin

    def dataset(self, own: bool) -> str:
        return self.world.own if own else self.world.foreign

    def user_keep(self, kind: str) -> Keep:
        if kind == "site_admin":
            return self.admin
        return self.admin.acting_as(self.admin.principal_for(ACCOUNTS[kind]))


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any] | None = None
    json: Any = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None


@dataclass(frozen=True)
class Case:
    """One way of calling a route, checked against the row *operation* of the matrix (or
    of OWN_EXPECTED)."""

    route: str  # "METHOD /api/v1/path/{template}" as the app declares it
    operation: str
    call: Callable[[Walk, str, bool], Call]
    #: False where own and foreign are the same cell (not about a project or dataset)
    resource: bool = True
    #: undoes what the call changed that later cells would see (sealed, public, ...)
    after: Callable[[Walk, bool, httpx.Response], None] | None = None
    #: for list routes: (key, value) of the item an "ok" cell must list, a "hidden" not
    listed: Callable[[Walk, bool], tuple[str, str]] | None = None
    #: checks an "ok" answer's content; returns what is wrong with it ("" if nothing)
    content: Callable[[Call, httpx.Response], str] | None = None


def _p(own: bool) -> str:
    return "a_proj" if own else "axproj"


def _g(own: bool) -> str:
    return "lab-a" if own else "lab-b"


def _dataset_url(w: Walk, own: bool, tail: str = "") -> str:
    return f"{API}/datasets/{w.dataset(own)}{tail}"


def _unseal(w: Walk, kind: str, own: bool) -> Call:
    w.admin.seal(w.dataset(own))
    return Call("POST", _dataset_url(w, own, "/unseal"), params={"reason": "matrix"})


def _revoke_grant(w: Walk, kind: str, own: bool) -> Call:
    w.admin.grant("zed", "read", w.dataset(own))
    return Call("DELETE", f"{API}/grants", params={"principal": "zed", "target": w.dataset(own)})


def _revoke_share(w: Walk, kind: str, own: bool) -> Call:
    _, info = w.admin.create_share(w.dataset(own))
    return Call("DELETE", f"{API}/shares/{info.id}")


def _revoke_token(w: Walk, kind: str, own: bool) -> Call:
    if own and kind in w.own_tokens:
        token_id = w.own_tokens.pop(kind)
    else:  # anonymous has no tokens: someone else's, as for "foreign"
        _, info = w.admin.acting_as(w.admin.principal_for("zed")).create_token("spare")
        token_id = info.id
    return Call("DELETE", f"{API}/tokens/{token_id}")


def _own_name(w: Walk, kind: str) -> str:
    """The caller's account (alice's for those without one)."""
    return w.admin.actor if kind == "site_admin" else ACCOUNTS.get(kind, "alice")


def _set_password(w: Walk, kind: str, own: bool) -> Call:
    user = _own_name(w, kind) if own else "zed"
    return Call(
        "PUT", f"{API}/users/{user}/password", json={"password": PASSWORD, "current": PASSWORD}
    )


def _member(method: str) -> Callable[[Walk, str, bool], Call]:
    def call(w: Walk, kind: str, own: bool) -> Call:
        if method == "DELETE":
            w.admin.set_member(_g(own), "zed", "member")
        body = {"role": "member"} if method == "PUT" else None
        return Call(method, f"{API}/groups/{_g(own)}/members/zed", json=body)

    return call


def _name(prefix: str) -> Callable[[Walk, str, bool], str]:
    return lambda w, kind, own: w.world.name(prefix)


def _only_below(call: Call, response: httpx.Response) -> str:
    """Every event listed is on the asked target or below it."""
    assert call.params is not None
    target = call.params["target"]
    outside = [
        e["target"]
        for e in response.json()
        if e["target"] != target and not e["target"].startswith(target + "/")
    ]
    return f"events of {target!r} include {outside[:3]}" if outside else ""


def _job_call(w: Walk, kind: str, own: bool, tail: str, *, cancelled: bool = False) -> Call:
    """A fresh queued (or cancelled) job of the caller's own (someone else's: zed's)."""
    from sqlalchemy import update

    from labkeep.catalog import Job

    job = w.admin.enqueue("verify", {"target": w.world.own}, system=True)
    if cancelled:
        w.admin.cancel_job(job.id)
    if own and kind == "site_admin":
        owner = w.admin.actor
    else:
        owner = ACCOUNTS[kind] if own and kind in ACCOUNTS else "zed"
    with w.admin.catalog.write() as session:
        session.execute(update(Job).where(Job.id == job.id).values(created_by=owner))
    return Call("POST" if tail else "GET", f"{API}/jobs/{job.id}{tail}")


def _run_call(w: Walk, own: bool, tail: str) -> Call:
    """A fresh run into the own (foreign) dataset, queued for a worker by the site admin:
    readers of the dataset see it, those who may save to it may cancel it."""
    from tests.test_access import queued_run

    run_id = queued_run(w.admin, w.dataset(own))
    return Call("POST" if tail else "GET", f"{API}/runs/{run_id}{tail}")


def _preview_call(w: Walk, kind: str, own: bool) -> Call:
    """The thumbnail of the dataset's file: one is put in the keep's cache first (as the
    extraction job would), so the cell tests access, not whether a preview exists."""
    from labkeep.ops.extract import preview_path

    address = f"{w.dataset(own)}/raw/f.txt"
    path = preview_path(w.admin, w.admin.stat_file(address).sha256)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return Call("GET", f"{API}/previews/{address}")


def _login(w: Walk, kind: str, own: bool) -> Call:
    name = _own_name(w, kind) if own else w.world.name("nobody")
    password = PASSWORD if own else "not the password"
    return Call("POST", f"{API}/auth/token", json={"name": name, "password": password})


CASES: list[Case] = [
    Case("POST /api/v1/auth/token", "login", _login),
    Case("GET /api/v1/whoami", "whoami", lambda w, k, o: Call("GET", f"{API}/whoami"), False),
    Case(
        "GET /api/v1/projects",
        "list_projects",
        lambda w, k, o: Call("GET", f"{API}/projects"),
        listed=lambda w, own: ("project", _p(own)),
    ),
    Case(
        "POST /api/v1/projects",
        "create_project",
        lambda w, k, o: Call(
            "POST", f"{API}/projects", json={"name": w.world.name("p"), "group": _g(o)}
        ),
    ),
    Case(
        "POST /api/v1/projects",
        "create_existing_project",
        lambda w, k, o: Call("POST", f"{API}/projects", json={"name": _p(o), "group": _g(o)}),
    ),
    Case(
        "POST /api/v1/projects",
        "create_taken_project",
        lambda w, k, o: Call("POST", f"{API}/projects", json={"name": _p(not o), "group": _g(o)}),
    ),
    Case(
        "GET /api/v1/projects/{project}",
        "read_project",
        lambda w, k, o: Call("GET", f"{API}/projects/{_p(o)}"),
    ),
    Case(
        "PATCH /api/v1/projects/{project}",
        "edit_project",
        lambda w, k, o: Call("PATCH", f"{API}/projects/{_p(o)}", json={"title": "New title"}),
    ),
    Case(
        "GET /api/v1/projects/{project}/datasets",
        "read_project",
        lambda w, k, o: Call("GET", f"{API}/projects/{_p(o)}/datasets"),
        # a project's readers see its datasets that they may read, and no others
        listed=lambda w, own: ("dataset", w.dataset(own)),
    ),
    Case(
        "POST /api/v1/projects/{project}/datasets",
        "create_dataset",
        lambda w, k, o: Call(
            "POST", f"{API}/projects/{_p(o)}/datasets", json={"name": w.world.name("new")}
        ),
    ),
    Case(
        "POST /api/v1/projects/{project}/datasets",
        "create_existing_dataset",
        lambda w, k, o: Call(
            "POST",
            f"{API}/projects/{_p(o)}/datasets",
            json={"name": w.dataset(o).split("/")[1]},
        ),
    ),
    Case(
        "GET /api/v1/search",
        "search",
        lambda w, k, o: Call(
            "GET",
            f"{API}/search",
            params={"q": w.dataset(o).split("/")[1], "project": _p(o), "kind": "dataset"},
        ),
        listed=lambda w, own: ("address", w.dataset(own)),
    ),
    Case(
        "GET /api/v1/keyvalues/{path:path}",
        "read_values",
        lambda w, k, o: Call("GET", f"{API}/keyvalues/{w.dataset(o)}"),
    ),
    Case(
        "PUT /api/v1/keyvalues/{path:path}",
        "set_values",
        lambda w, k, o: Call(
            "PUT", f"{API}/keyvalues/{w.dataset(o)}", json={"set": {"stain": "DAPI"}}
        ),
    ),
    Case(
        "POST /api/v1/samples",
        "create_sample",
        lambda w, k, o: Call("POST", f"{API}/samples", json={"name": w.world.name("mouse-")}),
        resource=False,
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o)),
    ),
    Case(
        "PATCH /api/v1/datasets/{project}/{dataset}",
        "write_manifest",  # dataset.edit, as writing the manifest
        lambda w, k, o: Call("PATCH", _dataset_url(w, o), json={"title": "New title"}),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/versions",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/versions")),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/entries",
        "list_files",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/entries"), params={"limit": 10}),
    ),
    Case(
        "GET /api/v1/files/{project}/{dataset}/{path:path}",
        "download",
        lambda w, k, o: Call("GET", f"{API}/files/{w.dataset(o)}/raw/f.txt"),
    ),
    Case(
        "GET /api/v1/metadata/{project}/{dataset}/{path:path}",
        "read_metadata",
        lambda w, k, o: Call("GET", f"{API}/metadata/{w.dataset(o)}/raw/f.txt"),
    ),
    Case("GET /api/v1/previews/{project}/{dataset}/{path:path}", "download", _preview_call),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/zip",
        "download",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/zip")),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/manifest",
        "download",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/manifest")),
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/files",
        "ingest",
        lambda w, k, o: Call(
            "POST", _dataset_url(w, o, "/files"), files=[("files", ("up.txt", b"uploaded"))]
        ),
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/seal",
        "seal",
        lambda w, k, o: Call("POST", _dataset_url(w, o, "/seal")),
        after=lambda w, o, r: w.world.fresh() if r.is_success else None,
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/unseal",
        "unseal",
        _unseal,
        after=lambda w, o, r: None if r.is_success else w.world.fresh(),
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/verify",
        "queue_verify",
        lambda w, k, o: Call("POST", _dataset_url(w, o, "/verify")),
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/copy",
        "queue_copy",
        lambda w, k, o: Call("POST", _dataset_url(w, o, "/copy"), json={"to": "backup"}),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/jobs",
        "dataset_jobs",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/jobs")),
    ),
    Case(
        "POST /api/v1/jobs",
        "queue_verify",
        lambda w, k, o: Call(
            "POST", f"{API}/jobs", json={"kind": "verify", "args": {"target": w.dataset(o)}}
        ),
    ),
    Case(
        "POST /api/v1/jobs",
        "queue_scrub",
        lambda w, k, o: Call("POST", f"{API}/jobs", json={"kind": "scrub", "args": {}}),
        resource=False,
    ),
    Case("GET /api/v1/jobs", "own_jobs", lambda w, k, o: Call("GET", f"{API}/jobs"), False),
    Case("GET /api/v1/jobs/{job_id}", "read_job", lambda w, k, o: _job_call(w, k, o, "")),
    Case(
        "POST /api/v1/jobs/{job_id}/cancel",
        "read_job",
        lambda w, k, o: _job_call(w, k, o, "/cancel"),
    ),
    Case(
        "POST /api/v1/jobs/{job_id}/retry",
        "read_job",
        lambda w, k, o: _job_call(w, k, o, "/retry", cancelled=True),
    ),
    Case("GET /api/v1/workers", "list_workers", lambda w, k, o: Call("GET", f"{API}/workers")),
    Case(
        "GET /api/v1/runs",
        "read_metadata",
        lambda w, k, o: Call("GET", f"{API}/runs", params={"dataset": w.dataset(o)}),
    ),
    Case("GET /api/v1/runs/{run_id}", "read_metadata", lambda w, k, o: _run_call(w, o, "")),
    Case(
        "POST /api/v1/runs/{run_id}/cancel",
        "cancel_run",
        lambda w, k, o: _run_call(w, o, "/cancel"),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/runs",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/runs")),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/derived",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/derived")),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/metadata",
        "read_datacite",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/metadata")),
    ),
    Case(
        "PUT /api/v1/datasets/{project}/{dataset}/metadata",
        "edit_datacite",
        lambda w, k, o: Call("PUT", _dataset_url(w, o, "/metadata"), json={"keywords": ["x"]}),
    ),
    Case(
        "GET /api/v1/projects/{project}/metadata",
        "read_project",
        lambda w, k, o: Call("GET", f"{API}/projects/{_p(o)}/metadata"),
    ),
    Case(
        "PUT /api/v1/projects/{project}/metadata",
        "edit_project",
        lambda w, k, o: Call("PUT", f"{API}/projects/{_p(o)}/metadata", json={"license": "MIT"}),
    ),
    Case(
        "POST /api/v1/datasets/{project}/{dataset}/release",
        "release",
        lambda w, k, o: Call(
            "POST", _dataset_url(w, o, "/release"), json={"name": w.world.name("rel")}
        ),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/verification",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/verification")),
    ),
    Case(
        "GET /api/v1/datasets/{project}/{dataset}/copies",
        "read_metadata",
        lambda w, k, o: Call("GET", _dataset_url(w, o, "/copies")),
    ),
    Case(
        "GET /api/v1/whereis/{project}/{dataset}/{path:path}",
        "whereis",
        lambda w, k, o: Call("GET", f"{API}/whereis/{w.dataset(o)}/raw/f.txt"),
    ),
    Case("GET /api/v1/stores", "status", lambda w, k, o: Call("GET", f"{API}/stores")),
    Case(
        "GET /api/v1/projects/{project}/policy",
        "read_project",
        lambda w, k, o: Call("GET", f"{API}/projects/{_p(o)}/policy"),
    ),
    Case(
        "PUT /api/v1/projects/{project}/policy",
        "set_policy",
        lambda w, k, o: Call("PUT", f"{API}/projects/{_p(o)}/policy", json={"min_copies": 1}),
    ),
    Case(
        "GET /api/v1/policy-check",
        "read_project",
        lambda w, k, o: Call("GET", f"{API}/policy-check", params={"project": _p(o)}),
    ),
    Case(
        "PUT /api/v1/datasets/{project}/{dataset}/public",
        "make_public",
        lambda w, k, o: Call("PUT", _dataset_url(w, o, "/public"), json={"public": True}),
        # a public dataset makes its project visible to all: private again
        after=lambda w, o, r: w.admin.set_public(w.dataset(o), False) if r.is_success else None,
    ),
    Case(
        "GET /api/v1/grants",
        "list_grants",
        lambda w, k, o: Call("GET", f"{API}/grants", params={"target": _p(o)}),
    ),
    Case(
        "POST /api/v1/grants",
        "grant",
        lambda w, k, o: Call(
            "POST",
            f"{API}/grants",
            json={"principal": "zed", "permission": "read", "target": w.dataset(o)},
        ),
    ),
    Case("DELETE /api/v1/grants", "grant", _revoke_grant),
    Case(
        "GET /api/v1/shares",
        "list_shares",
        lambda w, k, o: Call("GET", f"{API}/shares", params={"target": _p(o)}),
    ),
    Case("GET /api/v1/shares", "own_shares", lambda w, k, o: Call("GET", f"{API}/shares"), False),
    Case(
        "POST /api/v1/shares",
        "share",
        lambda w, k, o: Call("POST", f"{API}/shares", json={"target": w.dataset(o)}),
    ),
    Case("DELETE /api/v1/shares/{link_id}", "list_shares", _revoke_share),  # share.manage
    Case(
        "GET /api/v1/tokens", "whoami_tokens", lambda w, k, o: Call("GET", f"{API}/tokens"), False
    ),
    Case(
        "POST /api/v1/tokens",
        "create_token",
        lambda w, k, o: Call("POST", f"{API}/tokens", json={"name": "x", "expires": "1h"}),
        resource=False,
    ),
    Case("DELETE /api/v1/tokens/{token_id}", "revoke_token", _revoke_token),
    Case("GET /api/v1/users", "list_users", lambda w, k, o: Call("GET", f"{API}/users"), False),
    Case(
        "POST /api/v1/users",
        "add_user",
        lambda w, k, o: Call("POST", f"{API}/users", json={"name": w.world.name("u")}),
        resource=False,
    ),
    Case(
        "POST /api/v1/users/{name}/disable",
        "disable_user",
        lambda w, k, o: Call("POST", f"{API}/users/zed/disable"),
        resource=False,
        after=lambda w, o, r: w.admin.set_user_disabled("zed", False) if r.is_success else None,
    ),
    Case(
        "POST /api/v1/users/{name}/enable",
        "disable_user",  # user.manage, as disabling
        lambda w, k, o: Call("POST", f"{API}/users/zed/enable"),
        resource=False,
    ),
    Case("PUT /api/v1/users/{name}/password", "set_password", _set_password),
    Case("GET /api/v1/groups", "list_groups", lambda w, k, o: Call("GET", f"{API}/groups"), False),
    Case(
        "POST /api/v1/groups",
        "create_group",
        lambda w, k, o: Call("POST", f"{API}/groups", json={"name": w.world.name("g")}),
        resource=False,
    ),
    Case("PUT /api/v1/groups/{group}/members/{user}", "manage_members", _member("PUT")),
    Case("DELETE /api/v1/groups/{group}/members/{user}", "manage_members", _member("DELETE")),
    Case(
        "GET /api/v1/events",
        "read_events",
        lambda w, k, o: Call("GET", f"{API}/events", params={"target": w.dataset(o)}),
        content=_only_below,
    ),
    Case(
        "GET /api/v1/events",
        "read_project_events",
        lambda w, k, o: Call("GET", f"{API}/events", params={"target": _p(o)}),
        content=_only_below,
    ),
    Case("GET /api/v1/events", "all_events", lambda w, k, o: Call("GET", f"{API}/events"), False),
]


def _walk_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI >= 0.16x keeps included routers as one route
            yield from _walk_routes(included.routes, prefix + route.include_context.prefix)
        else:
            yield prefix + getattr(route, "path", ""), route


def api_routes(app: Any) -> set[str]:
    """``METHOD /path`` of every route the app serves under /api/v1 (its schema and docs
    pages aside)."""
    from fastapi.routing import APIRoute

    skip = {app.openapi_url, app.docs_url, f"{app.docs_url}/oauth2-redirect"}
    found = set()
    for path, route in _walk_routes(app.routes):
        if not path.startswith(API + "/") or path in skip:
            continue
        assert isinstance(route, APIRoute), f"{path} is not an API route"
        found |= {f"{method} {path}" for method in route.methods}
    return found


def expected_row(operation: str, kind: str) -> list[str]:
    """[own, foreign] outcomes of *operation* for *kind* as the API sees them."""
    if kind == "share_link":
        kind = "anonymous"  # the API knows no share links: their holders are anonymous
    if kind == "disabled" and operation in OWN_EXPECTED:
        return ["unauthenticated", "unauthenticated"]
    table = MATRIX["expected"] if operation in MATRIX["expected"] else OWN_EXPECTED
    row: list[str] = table[operation][kind]
    return row


def statuses(outcome: str, kind: str) -> set[int]:
    if kind == "disabled":
        return {401}
    if outcome == "denied":
        # anonymous callers are told to sign in with 403 ("may not", hint: sign in)
        return {401, 403} if kind in ("anonymous", "share_link") else {403}
    if outcome == "hidden":
        return {404}
    if outcome == "unauthenticated":
        return {401}
    if outcome in ("exists", "unavailable"):
        return {409}
    return {200, 201, 202, 204}


#: the error code of each outcome that has one of its own
ERROR_CODES = {"exists": "exists", "unavailable": "name-unavailable"}


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """The matrix's world (tests/test_access.py) on one keep and one live server for the
    whole module: building it (Argon2 hashes, a server) is the slow part."""
    from argon2 import PasswordHasher

    from labkeep.access import secrets

    tmp = tmp_path_factory.mktemp("api-matrix")
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LABKEEP_")]:
            mp.delenv(name)
        # small settings: the walk hashes passwords some 40 times
        mp.setattr(secrets, "_hasher", lambda: cheap)
        keep = Keep.init(tmp / "keep")
        try:
            yield from _serve_world(keep, tmp)
        finally:
            keep.close()
            unseal_tree(tmp)


def _serve_world(keep: Keep, tmp: Path) -> Iterator[Walk]:
    """The world of tests/test_access.py, a live server, and a token per principal."""
    keep.config.batch_files = 7
    keep.create_group("lab-a")
    keep.create_group("lab-b")
    for name in ("alice", "gadmin", "badmin", "ext", "dis", "zed"):
        keep.add_user(name, password=PASSWORD)
    keep.set_member("lab-a", "alice", "member")
    keep.set_member("lab-a", "dis", "member")
    keep.set_member("lab-a", "gadmin", "admin")
    keep.set_member("lab-b", "badmin", "admin")
    keep.create_project("a_proj", group="lab-a")
    keep.create_project("axproj", group="lab-b")
    keep.add_store("backup", kind="objects", path=str(tmp / "backup"))
    keep.set_password(keep.actor, PASSWORD)
    world = World(keep, tmp)
    world.fresh()
    with LiveServer(keep) as server, server.client(timeout=60) as client:
        w = Walk(world, server, client)
        for kind in ("site_admin", *ACCOUNTS):
            user = w.user_keep(kind)
            w.tokens[kind], _ = user.create_token("matrix", expires="1d")
            _, spare = user.create_token("spare", expires="1d")
            w.own_tokens[kind] = spare.id
        # the disabled user's token worked until the account was disabled
        dis = {"Authorization": f"Bearer {w.tokens['disabled']}"}
        assert client.get(f"{API}/whoami", headers=dis).json()["name"] == "dis"
        keep.set_user_disabled("dis")
        yield w


def headers_for(w: Walk, kind: str) -> dict[str, str]:
    token = w.tokens.get(kind)
    return {"Authorization": f"Bearer {token}"} if token else {}


def send(w: Walk, call: Call, headers: dict[str, str]) -> httpx.Response:
    return w.client.request(
        call.method,
        call.url,
        params=call.params,
        json=call.json,
        files=call.files,
        headers=headers,
    )


# -- tests ------------------------------------------------------------------------------
def test_every_api_route_is_in_the_matrix(walk: Walk) -> None:
    served = api_routes(walk.server.app)
    walked = {case.route for case in CASES}
    assert served - walked == set(), "API routes missing from tests/test_api_matrix.py CASES"
    assert walked - served == set(), "CASES name routes the app does not serve"
    for case in CASES:
        assert case.operation in MATRIX["expected"] or case.operation in OWN_EXPECTED
    assert {k for row in OWN_EXPECTED.values() for k in row} | {"share_link", "disabled"} == set(
        KINDS
    )


def _check_cell(w: Walk, case: Case, kind: str, own: bool, headers: dict[str, str]) -> str:
    """Call the route; return a failure message, or "" if the status is as expected."""
    expected = expected_row(case.operation, kind)[0 if own else 1]
    call = case.call(w, kind, own)
    response = send(w, call, headers)
    where = "own" if own else "foreign"
    if case.after is not None:
        case.after(w, own, response)
    if kind == "disabled":
        if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
            return f"{case.route} by {kind} on {where}: expected 401 with WWW-Authenticate"
        return ""
    # a list route answers 200 to anyone who may list at all; "hidden" means not listed
    if case.listed is not None and expected in ("ok", "hidden") and response.is_success:
        key, name = case.listed(w, own)
        body = response.json()
        items = body["items"] if isinstance(body, dict) else body
        names = {item[key] for item in items}
        hidden = isinstance(body, dict) and expected == "hidden" and name not in names
        if hidden and (body["total"] or items):
            return f"{case.route} by {kind} on {where}: {body} counts what is hidden"
        if (name in names) != (expected == "ok"):
            return (
                f"{case.route} by {kind} on {where}: {name!r} "
                f"{'missing from' if expected == 'ok' else 'shown in'} the list"
            )
        return ""
    if response.status_code not in statuses(expected, kind):
        return (
            f"{case.route} ({case.operation}) by {kind} on {where}: expected {expected}, "
            f"got {response.status_code} {response.text[:200]}"
        )
    if not response.is_success:
        assert response.headers["content-type"] == "application/json"
        assert response.json()["status"] == "error"
        code = ERROR_CODES.get(expected)
        if code is not None and response.json()["error"] != code:
            return f"{case.route} ({case.operation}) by {kind} on {where}: {response.text}"
    elif case.content is not None and (wrong := case.content(call, response)):
        return f"{case.route} ({case.operation}) by {kind} on {where}: {wrong}"
    return ""


@pytest.mark.parametrize("kind", KINDS)
def test_authorization_matrix_over_http(walk: Walk, kind: str) -> None:
    headers = headers_for(walk, kind)
    failures = [
        message
        for case in CASES
        for own in ((True, False) if case.resource else (True,))
        if (message := _check_cell(walk, case, kind, own, headers))
    ]
    assert not failures, "\n".join(failures)


def test_share_link_holders_get_nothing_private_from_the_api(walk: Walk) -> None:
    """A share link is no API credential, and anonymous callers see no private data."""
    w = walk
    w.world.fresh()
    link = {"Authorization": f"Bearer {w.world.share_token}"}
    info = w.admin.stat_file(w.world.own + "/raw/f.txt")
    private = [info.sha256, info.local_path.read_text(), "lab-a", "alice", "gadmin", "f.txt"]
    for case in CASES:
        if case.after is not None:
            continue  # their setup changes the dataset; the matrix walk covers them
        for own in (True, False) if case.resource else (True,):
            call = case.call(w, "share_link", own)
            response = send(w, call, link)
            assert response.status_code == 401, (case.route, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            if call.method != "GET":
                continue
            anonymous = send(w, call, {})
            leaked = [p for p in private if p in anonymous.text and p not in call.url]
            assert not leaked, (case.route, own, anonymous.text)
    # the link itself still works where it belongs: the UI's /s/TOKEN pages
    assert w.client.get(f"/s/{w.world.share_token}").status_code != 401


@pytest.mark.parametrize("kind", ["anonymous", "external", "member", "group_admin"])
def test_hidden_datasets_look_like_missing_ones(walk: Walk, kind: str) -> None:
    """Where the matrix says "hidden", the answer is the very one for a dataset that does
    not exist: nobody learns of private datasets by guessing names."""
    w = walk
    headers = headers_for(w, kind)
    project, name = w.world.foreign.split("/")
    for tail in ("", "/versions", "/entries", "/manifest", "/zip", "/verification"):
        hidden = w.client.get(f"{API}/datasets/{project}/{name}{tail}", headers=headers)
        missing = w.client.get(f"{API}/datasets/{project}/no-such{tail}", headers=headers)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == json.loads(missing.text.replace("no-such", name)), tail
    hidden = w.client.get(f"{API}/files/{w.world.foreign}/raw/f.txt", headers=headers)
    missing = w.client.get(f"{API}/files/{project}/no-such/raw/f.txt", headers=headers)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == json.loads(missing.text.replace("no-such", name))


@pytest.mark.parametrize("kind", ["member", "group_admin"])
def test_hidden_project_names_look_like_reserved_ones(walk: Walk, kind: str) -> None:
    """Creating a project named like one the caller may not see is answered exactly as a
    reserved name is: nobody learns of hidden projects by trying names."""
    w = walk
    headers = headers_for(w, kind)
    taken = w.client.post(
        f"{API}/projects", json={"name": "axproj", "group": "lab-a"}, headers=headers
    )
    reserved = w.client.post(
        f"{API}/projects", json={"name": "con", "group": "lab-a"}, headers=headers
    )
    assert taken.status_code == reserved.status_code == 409
    assert taken.json() == json.loads(reserved.text.replace("'con'", "'axproj'"))
    assert "already exists" not in taken.text


def test_tokens_of_disabled_accounts_stay_dead_after_enabling(walk: Walk) -> None:
    """Disabling revoked the token: enabling the account again does not revive it."""
    w = walk
    w.admin.set_user_disabled("dis", False)
    try:
        response = w.client.get(f"{API}/whoami", headers=headers_for(w, "disabled"))
        assert response.status_code == 401
    finally:
        w.admin.set_user_disabled("dis")


def test_malformed_credentials(walk: Walk) -> None:
    for header in ("Bearer", "Bearer  x", "Basic YWxpY2U6cHc=", "Token abc", "Bearer lkt_nope"):
        response = walk.client.get(f"{API}/whoami", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"


def test_read_only_tokens_read_but_never_write(walk: Walk) -> None:
    w = walk
    w.world.fresh()
    secret, _ = w.user_keep("member").create_token("ro", expires="1h", read_only=True)
    headers = {"Authorization": f"Bearer {secret}"}
    assert send(w, Call("GET", _dataset_url(w, True, "/entries")), headers).status_code == 200
    for call in (
        Call("POST", _dataset_url(w, True, "/seal")),
        Call("PATCH", _dataset_url(w, True), json={"title": "x"}),
        Call("POST", _dataset_url(w, True, "/files"), files=[("files", ("x.txt", b"x"))]),
        Call("POST", f"{API}/tokens", json={"name": "escalate"}),
        Call("POST", f"{API}/shares", json={"target": w.dataset(True)}),
    ):
        assert send(w, call, headers).status_code == 403, call


def test_unknown_api_paths_are_404(walk: Walk) -> None:
    for kind in ("anonymous", "site_admin"):
        response = walk.client.get(f"{API}/nothing-here", headers=headers_for(walk, kind))
        assert response.status_code == 404
