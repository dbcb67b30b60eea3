"""JSON API of what labkeep read from files, and file previews, under /api/v1.

Both answer exactly like the file itself: a caller who may not read the file gets 404
(never 403, never 304), whatever the cache headers of an earlier answer were.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from labkeep.keep import Keep
from labkeep.names import address_text
from labkeep.web.api import VersionQuery, _content, _errors, _json
from labkeep.web.deps import csrf_protect, resolve

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 404, 422),
)
Caller = Annotated[Keep, Depends(resolve)]
#: how long a browser may reuse a thumbnail without asking (it is keyed by content)
MAX_AGE = 3600


@router.get("/metadata/{project}/{dataset}/{path:path}", tags=["files"])
def file_metadata(
    keep: Caller, project: str, dataset: str, path: str, version: VersionQuery = None
) -> dict[str, Any]:
    """What labkeep read from the file: typed fields (sizes, pixel type, physical sizes,
    channels, objective, instrument, date; or type, size, encoding), flat ``search``
    fields, ``status`` ok / error / pending (not read yet), and ``preview``."""
    return _json(keep.file_metadata(address_text(project, dataset, path, version)).to_dict())


@router.get(
    "/previews/{project}/{dataset}/{path:path}",
    tags=["files"],
    response_class=Response,
    responses=_content("image/png", "The thumbnail (304: not changed)", 200, 304),
)
def preview(
    keep: Caller,
    request: Request,
    project: str,
    dataset: str,
    path: str,
    version: VersionQuery = None,
) -> Response:
    """A thumbnail of an image file (PNG, longest side 256 px). ETag: the content's
    SHA-256; Cache-Control private unless the dataset is public."""
    found = keep.preview(address_text(project, dataset, path, version))
    scope = "public" if found.public else "private"
    headers = {"ETag": found.etag, "Cache-Control": f"{scope}, max-age={MAX_AGE}"}
    tags = [t.strip() for t in request.headers.get("if-none-match", "").split(",")]
    if found.etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    return FileResponse(found.path, media_type="image/png", headers=headers)
