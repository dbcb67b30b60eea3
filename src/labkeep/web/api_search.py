"""JSON API of search, key-values and samples, under /api/v1.

Search answers only with what the caller may see, counted the same way (the query
itself applies the access rules: ``ops/search.py``); key-values follow read and write
access to their project, dataset or file; samples are registered by signed-in users.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from labkeep.keep import Keep
from labkeep.web.api import In, _errors, _json
from labkeep.web.deps import csrf_protect, resolve

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
Caller = Annotated[Keep, Depends(resolve)]
Text = Annotated[str, Field(max_length=2000)]
Key = Annotated[str, Field(max_length=64)]


@router.get("/search", tags=["search"])
def search(
    keep: Caller,
    q: Annotated[str, Query(max_length=500, description="words and key:value filters")] = "",
    project: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    instrument: Annotated[str | None, Query(max_length=200)] = None,
    date: Annotated[str | None, Query(max_length=30)] = None,
    sealed: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1000)] = 0,
) -> dict[str, Any]:
    """Projects, datasets, files and samples the caller may see, best first: ``total``
    counts them up to 1000 (``more``: there are more); pass ``next_offset`` as
    ``offset`` for the next page."""
    result = keep.search(
        q,
        project=project or None,
        kind=kind or None,
        instrument=instrument or None,
        date=date or None,
        sealed=sealed,
        limit=limit,
        offset=offset,
    )
    return _json(result.to_dict())


class KeyValuesIn(In):
    set: dict[Key, Text] = Field(default_factory=dict)
    unset: list[Key] = Field(default_factory=list)


@router.get("/keyvalues/{path:path}", tags=["metadata"])
def get_values(keep: Caller, path: str) -> dict[str, Any]:
    """The key-values of a project, dataset (and its samples) or file (*path*: its
    address, PROJECT[/DATASET[/PATH]])."""
    return _json(keep.get_values(path).to_dict())


@router.put("/keyvalues/{path:path}", tags=["metadata"])
def set_values(keep: Caller, path: str, body: KeyValuesIn) -> dict[str, Any]:
    """Set and unset key-values, all or none (the project's schema is checked: 422 lists
    every problem)."""
    return _json(keep.set_values(path, body.set, unset=body.unset).to_dict())


class SampleIn(In):
    name: Annotated[str, Field(max_length=64)]
    type: Annotated[str, Field(max_length=64)] = ""
    description: Annotated[str, Field(max_length=10_000)] = ""
    attrs: dict[Key, Text] = Field(default_factory=dict)
    group: Annotated[str | None, Field(max_length=64)] = None


@router.post("/samples", tags=["samples"], status_code=201)
def add_sample(keep: Caller, body: SampleIn) -> dict[str, Any]:
    """Register a sample (signed-in users)."""
    return _json(
        keep.add_sample(
            body.name,
            type=body.type,
            attrs=body.attrs,
            description=body.description,
            group=body.group,
        ).to_dict(),
        status_code=201,
    )
