"""Accounts in the UI: users (site admins), groups (group admins) and my own account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from labkeep.errors import NotFound, UsageError
from labkeep.keep import Keep
from labkeep.web import pages
from labkeep.web.deps import SESSION_COOKIE, csrf_protect, resolve
from labkeep.web.pages import Links, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Form()]


def _crumbs(request: Request, title: str) -> list[tuple[str, str]]:
    return [("Home", Links(request).home()), (title, request.url.path)]


def _number(text: str, what: str) -> int:
    number = pages.whole_number(text)
    if number is None:
        raise NotFound(f"no {what} {text!r}")
    return number


# -- users --------------------------------------------------------------------------------
@router.get("/admin/users", name="admin_users")
def users_page(request: Request, keep: Caller) -> Response:
    return render(
        request,
        "admin_users.html",
        {"title": "Users", "users": keep.list_users(), "crumbs": _crumbs(request, "Users")},
    )


@router.post("/admin/users")
def add_user(
    request: Request,
    keep: Caller,
    name: Text = "",
    password: Text = "",
    display_name: Text = "",
    email: Text = "",
    site_admin: Text = "",
) -> Response:
    keep.add_user(
        name.strip(),
        password=password or None,
        display_name=display_name.strip(),
        email=email.strip(),
        site_admin=bool(site_admin),
    )
    return redirect(Links(request).page("/admin/users"), "user-added")


@router.post("/admin/users/{name}/disable")
def disable_user(request: Request, keep: Caller, name: str) -> Response:
    keep.set_user_disabled(name, True)
    return redirect(Links(request).page("/admin/users"), "user-disabled")


@router.post("/admin/users/{name}/enable")
def enable_user(request: Request, keep: Caller, name: str) -> Response:
    keep.set_user_disabled(name, False)
    return redirect(Links(request).page("/admin/users"), "user-enabled")


# -- groups -------------------------------------------------------------------------------
@router.get("/admin/groups", name="admin_groups")
def groups_page(request: Request, keep: Caller) -> Response:
    groups = keep.list_groups()
    return render(
        request,
        "admin_groups.html",
        {
            "title": "Groups",
            "groups": groups,
            # which groups' member forms to show (the Keep checks again on submit)
            "my_roles": keep.whoami().get("groups", {}),
            "crumbs": _crumbs(request, "Groups"),
        },
    )


@router.post("/admin/groups")
def create_group(request: Request, keep: Caller, name: Text = "", title: Text = "") -> Response:
    keep.create_group(name.strip(), title=title.strip())
    return redirect(Links(request).page("/admin/groups"), "group-created")


@router.post("/admin/groups/{group}/members")
def add_member(
    request: Request, keep: Caller, group: str, user: Text = "", role: Text = "member"
) -> Response:
    keep.set_member(group, user.strip(), role)
    return redirect(Links(request).page("/admin/groups") + f"#group-{group}", "member-added")


@router.post("/admin/groups/{group}/members/{user}/remove")
def remove_member(request: Request, keep: Caller, group: str, user: str) -> Response:
    keep.set_member(group, user, None)
    return redirect(Links(request).page("/admin/groups") + f"#group-{group}", "member-removed")


# -- my account ---------------------------------------------------------------------------
@router.get("/me", name="my_account")
def me_page(request: Request, keep: Caller) -> Response:
    tokens = keep.list_tokens()
    return render(
        request,
        "me.html",
        {
            "title": "My account",
            "who": keep.whoami(),
            # a site admin's list holds everyone's tokens: this page is about mine
            "tokens": [t for t in tokens if t.user == keep.actor],
            "shares": keep.list_shares(),
            "crumbs": _crumbs(request, "My account"),
        },
    )


@router.post("/me/password")
def change_password(
    request: Request,
    keep: Caller,
    current: Text = "",
    password: Text = "",
    confirm: Text = "",
) -> Response:
    """Change my password; every session of mine ends, this one too."""
    if password != confirm:
        raise UsageError(
            "the new password and its confirmation differ", hint="go back and type both again"
        )
    keep.set_password(keep.actor, password, current=current or None)
    links = Links(request)
    response = redirect(links.login(), "password-changed")
    response.delete_cookie(SESSION_COOKIE, path=links.root + "/", httponly=True, samesite="lax")
    return response


@router.post("/me/tokens")
def create_token(
    request: Request,
    keep: Caller,
    name: Text = "",
    expires: Text = "90d",
    read_only: Text = "",
) -> Response:
    secret, info = keep.create_token(name.strip(), expires=expires, read_only=bool(read_only))
    return render(
        request,
        "token_created.html",
        {"title": "API token created", "secret": secret, "token": info},
        status=201,
    )


@router.post("/me/tokens/{token_id}/revoke")
def revoke_token(request: Request, keep: Caller, token_id: str) -> Response:
    keep.revoke_token(_number(token_id, "token"))
    return redirect(Links(request).page("/me") + "#tokens", "token-revoked")
