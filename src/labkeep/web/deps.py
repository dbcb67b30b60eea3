"""Who is asking: bearer API tokens, session cookies, share links, or nobody.

Routes get a Keep already acting as the right principal and never decide access
themselves: the Keep's use cases call ``access.check``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from starlette.convertors import Convertor, register_url_convertor

from labkeep.access import ANONYMOUS
from labkeep.errors import AuthenticationFailed, Forbidden, UsageError

if TYPE_CHECKING:
    from labkeep.keep import Keep


class _AnyPath(Convertor[str]):
    """``{name:path}`` in routes: any characters but NUL, newlines included (Starlette's
    own ``.*`` stops at a newline, so a file named with one had no working link)."""

    regex = "[^\x00]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# (before any route is declared: api.py and ui.py import this module first)
register_url_convertor("path", _AnyPath())

SESSION_COOKIE = "labkeep_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def refuse_nul(request: Request) -> None:
    """No name, path, token or other text in a URL may hold NUL: PostgreSQL cannot even
    compare text with one (a 500 otherwise), and no file or account is named with it."""
    values = [*request.path_params.values(), *request.query_params.values()]
    if any("\x00" in value for value in values if isinstance(value, str)):
        raise UsageError("the address contains a NUL character")


def base_keep(request: Request) -> Keep:
    keep: Keep = request.app.state.keep
    return keep


def resolve(request: Request) -> Keep:
    """The Keep acting as the caller; remembers how they authenticated on request.state."""
    cached = getattr(request.state, "keep", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    base = base_keep(request)
    request.state.auth = "anonymous"
    request.state.csrf = None
    principal = ANONYMOUS
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationFailed("use 'Authorization: Bearer TOKEN' with an API token")
        principal = base.authenticate_token(secret.strip())
        request.state.auth = "token"
    elif cookie:
        resumed = base.resume_session(cookie)
        if resumed is None:
            request.state.drop_cookie = True
        else:
            principal, request.state.csrf = resumed
            request.state.auth = "session"
    keep = base.acting_as(principal)
    request.state.keep = keep
    return keep


def share_keep(request: Request, token: str, *, resuming: bool = False) -> Keep:
    """The Keep acting as the holder of a share link (no account needed)."""
    base = base_keep(request)
    keep = base.acting_as(base.open_share(token, resuming=resuming))
    request.state.auth = "share"
    request.state.csrf = None
    request.state.keep = keep
    return keep


async def csrf_protect(request: Request) -> None:
    """State-changing requests made with a session cookie must carry the session's CSRF
    token (header or form field). Bearer-token requests carry no ambient credential."""
    if request.method in SAFE_METHODS:
        return
    resolve(request)
    if request.state.auth != "session":
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        from labkeep.web.limits import is_upload

        if is_upload(request.scope):
            # an upload's body is read only once the Keep allowed it: its reader checks
            # the token, which the form sends as its first field
            request.state.csrf_pending = True
            return
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # small: BodyLimit caps forms at max_form_bytes
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    expected = request.state.csrf or ""
    if not sent or not hmac.compare_digest(sent, expected):
        raise Forbidden(
            "missing or wrong CSRF token", hint="reload the page and submit the form again"
        )


async def whole_form(request: Request) -> None:
    """For forms whose submission replaces what is stored (titles, curated metadata): the
    body must be a form with fields; a JSON, text or broken body is refused (400) instead
    of reading as an empty form that would erase the values."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raise UsageError(
            "this address takes the page's form (application/x-www-form-urlencoded or "
            "multipart/form-data)",
            hint="use the JSON API under /api/v1 for scripts",
        )
    form = await request.form()
    if not form:  # (a broken multipart body parses as no fields at all)
        raise UsageError("the form came empty: nothing was changed")


WholeForm = Depends(whole_form)
