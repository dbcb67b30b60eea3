"""JSON API of DataCite metadata and releases, under /api/v1.

Reading metadata needs read access to the project or dataset; writing it, the right to
edit it (``dataset.edit``, ``project.edit``). The body of a PUT is labkeep's metadata
form (see :mod:`labkeep.ops.metadata`); a form whose values do not pass is answered 400
``metadata-invalid`` with every problem listed, and nothing is stored. A release needs
the right to download the source and to create datasets in its project.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from labkeep.keep import Keep
from labkeep.ops.metadata import citation
from labkeep.web.api import MAX_INT, In, Slug, _dataset, _errors
from labkeep.web.deps import csrf_protect, resolve

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
Caller = Annotated[Keep, Depends(resolve)]


class MetadataIn(In):
    """labkeep's metadata form (see docs/publishing.md): DataCite 4.5 under plain names.
    Each field is checked by the Keep; a value that does not pass is answered 400
    ``metadata-invalid`` with every problem listed."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)
    creators: list[Any] | None = Field(None, description="{name, orcid, affiliation, ror}")
    contributors: list[Any] | None = Field(
        None, description="{name, type, orcid, affiliation, ror}"
    )
    license: str | None = Field(None, max_length=200, description="an SPDX id")
    keywords: list[Any] | None = None
    subjects: list[Any] | None = Field(None, description="text or {subject, scheme, uri}")
    funding: list[Any] | None = Field(None, description="{funder, funder_id, award, award_title}")
    related: list[Any] | None = Field(None, description="{identifier, relation, type}")
    dates: list[Any] | None = Field(None, description="{date, type}")
    resource_type: str | None = Field(None, max_length=100)
    language: str | None = Field(None, max_length=100)
    version: str | None = Field(None, max_length=1000)
    publisher: str | None = Field(None, max_length=1000)


def _form(body: MetadataIn) -> dict[str, Any]:
    return body.model_dump(exclude_none=True)


class ReleaseIn(In):
    name: Slug
    version: int | None = Field(None, ge=1, le=MAX_INT, description="default: the head")
    message: str = Field("", max_length=10_000)
    title: str = Field("", max_length=1000)


def _answer(record: Any) -> dict[str, Any]:
    return {**record.to_dict(), "citation": citation(record.datacite)}


@router.get("/projects/{project}/metadata", tags=["metadata"])
def project_metadata(keep: Caller, project: str) -> dict[str, Any]:
    """A project's metadata form, and its DataCite 4.5 JSON."""
    return _answer(keep.get_metadata(project))


@router.put("/projects/{project}/metadata", tags=["metadata"])
def set_project_metadata(keep: Caller, project: str, body: MetadataIn) -> dict[str, Any]:
    """Replace a project's metadata form (the defaults of its datasets)."""
    return _answer(keep.set_metadata(project, _form(body), replace=True))


@router.get("/datasets/{project}/{dataset}/metadata", tags=["metadata"])
def dataset_metadata(
    keep: Caller,
    project: str,
    dataset: str,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> dict[str, Any]:
    """A dataset's own metadata form, the effective one (over the project's), and its
    DataCite 4.5 JSON (at a version: that version's number is the record's version)."""
    return _answer(keep.get_metadata(_dataset(project, dataset, version)))


@router.put("/datasets/{project}/{dataset}/metadata", tags=["metadata"])
def set_dataset_metadata(
    keep: Caller, project: str, dataset: str, body: MetadataIn
) -> dict[str, Any]:
    """Replace a dataset's metadata form: 400 lists every problem, nothing is stored."""
    return _answer(keep.set_metadata(_dataset(project, dataset), _form(body), replace=True))


@router.post("/datasets/{project}/{dataset}/release", tags=["metadata"], status_code=201)
def release(keep: Caller, project: str, dataset: str, body: ReleaseIn) -> dict[str, Any]:
    """Make the sealed release ``PROJECT/NAME`` of a version (the head by default); again
    with the same name and version: finishes a cut-short release, or answers
    ``notneeded``. 409 with the files' problems when some could not be read. A version
    of more than 2,000 files is released by a worker: 202 with the queued job."""
    from labkeep.ops.release import INLINE_FILES

    source = _dataset(project, dataset, body.version)
    if keep.release_files(source) > INLINE_FILES:
        job = keep.enqueue(
            "release",
            {"source": source, "name": body.name, "message": body.message, "title": body.title},
        )
        return JSONResponse(  # type: ignore[return-value]
            {"status": "queued", "job": job.to_dict()}, status_code=202
        )
    result = keep.release(source, name=body.name, message=body.message, title=body.title)
    if result.status == "error":  # files that could not be read: nothing was released
        return JSONResponse(result.to_dict(), status_code=409)  # type: ignore[return-value]
    return result.to_dict()
