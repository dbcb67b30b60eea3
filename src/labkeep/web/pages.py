"""Rendering HTML: the Jinja2 environment and the page helpers the UI routes use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from labkeep.errors import LabkeepError

if TYPE_CHECKING:
    from labkeep.keep import Keep

from labkeep.web.app import HERE

templates = Jinja2Templates(directory=HERE / "templates")


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    keep = getattr(request.state, "keep", None)
    base = {
        "me": keep.principal if keep is not None else None,
        "csrf": getattr(request.state, "csrf", None),
    }
    return templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=headers
    )


def error_page(request: Request, exc: LabkeepError, headers: dict[str, str]) -> Response:
    return render(request, "error.html", {"error": exc}, status=exc.http_status, headers=headers)


def share_page(request: Request, keep: Keep, token: str) -> Response:
    scope = keep.principal.share
    return render(request, "error.html", {"error": LabkeepError(f"share {scope}")})
