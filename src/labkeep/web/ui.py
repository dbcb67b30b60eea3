"""HTML pages for people (server-rendered, no JavaScript needed for reading)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labkeep.web import downloads
from labkeep.web.deps import share_keep

router = APIRouter(include_in_schema=False)


@router.get("/s/{token}", name="share_entry")
def share_entry(request: Request, token: str) -> Response:
    """Where a share link lands (the page is built by the UI module)."""
    keep = share_keep(request, token)
    from labkeep.web.pages import share_page

    return share_page(request, keep, token)


__all__ = ["downloads"]
