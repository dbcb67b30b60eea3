"""JSON API of the job queue, under /api/v1 as :mod:`labkeep.web.api`.

Long work (verify, copy to another store, ingest) is queued here and answered 202 with
the job; a worker runs it (``labkeep worker``) and the job's record shows its progress
and result. Who may queue what is decided by the queue (``enqueue`` and each kind's
``authorize``); who may see a job by ``get_job`` / ``list_jobs``: site admins all of
them, everyone else their own (others' job ids are "not found").
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from labkeep.errors import UsageError
from labkeep.keep import Keep
from labkeep.ops.jobs import JobInfo, kind_of
from labkeep.web.api import MAX_INT, In, _errors, _json, check_storable
from labkeep.web.deps import csrf_protect, resolve

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
Caller = Annotated[Keep, Depends(resolve)]
JobId = Annotated[int, Path(ge=1, le=MAX_INT)]
KindName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
StoreName = Annotated[str, Field(min_length=1, max_length=64)]


def job_record(keep: Keep, info: JobInfo) -> dict[str, Any]:
    """A job as the API shows it: its record, the percent done and a one-line summary."""
    record = info.to_dict()
    record["percent"] = None if info.percent is None else round(info.percent, 1)
    record["description"] = describe(keep, info)
    return record


def describe(keep: Keep, info: JobInfo) -> str:
    try:
        spec = kind_of(keep, info.kind)
    except UsageError:  # a kind unknown here (a plugin on the workers' hosts only)
        return ""
    if spec.describe is None:
        return ""
    try:
        return str(spec.describe(info.args))[:500]
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


def _queued(keep: Keep, info: JobInfo) -> dict[str, Any]:
    """202 Accepted with the job (and how many workers are alive to run it)."""
    record = job_record(keep, info)
    record["workers"] = keep.queue_summary()["workers"]
    return cast(dict[str, Any], JSONResponse(record, status_code=202))


class VerifyIn(In):
    store: StoreName | None = Field(
        default=None, description="check this store's copy, not the tree"
    )
    quick: bool = Field(default=False, description="with store: check presence and size only")
    repair: bool = Field(default=False, description="replace damaged files from a good copy")


class CopyIn(In):
    to: StoreName = Field(..., description="the store to copy the dataset to")


class JobIn(In):
    kind: KindName = Field(..., description="ingest, verify, replicate, ... (docs/jobs.md)")
    args: dict[str, Any] = Field(default_factory=dict, description="the kind's arguments")

    @field_validator("args")
    @classmethod
    def _storable_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_storable(value)  # stored as given: no lone surrogate or NUL at any depth
        return value


STATE_PATTERN = "^(queued|running|done|failed|cancelled|active)$"


@router.get("/jobs", tags=["jobs"])
def list_jobs(
    keep: Caller,
    state: Annotated[str | None, Query(pattern=STATE_PATTERN)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> dict[str, Any]:
    """Jobs newest first (site admins: everyone's; others: their own). For the next page
    pass ``next_before`` as ``before``; ``state=active`` is queued and running."""
    jobs = keep.list_jobs(state=state, kind=kind, target=target, limit=limit, before=before)
    return _json(
        {
            "items": [job_record(keep, j) for j in jobs],
            "next_before": jobs[-1].id if len(jobs) == limit else None,
            "counts": keep.job_counts(),
        }
    )


@router.post("/jobs", tags=["jobs"], status_code=202)
def queue_job(keep: Caller, body: JobIn) -> dict[str, Any]:
    """Queue a job of any kind the caller may queue (each kind checks its arguments and
    the caller's rights; some kinds are for site admins only)."""
    info = keep.enqueue(body.kind, body.args)
    return _queued(keep, info)


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(keep: Caller, job_id: JobId) -> dict[str, Any]:
    return job_record(keep, keep.get_job(job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(keep: Caller, job_id: JobId) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    return job_record(keep, keep.cancel_job(job_id))


@router.post("/jobs/{job_id}/retry", tags=["jobs"])
def retry_job(keep: Caller, job_id: JobId) -> dict[str, Any]:
    """Queue a failed or cancelled job again."""
    return job_record(keep, keep.retry_job(job_id))


@router.get("/workers", tags=["jobs"])
def workers(keep: Caller) -> list[dict[str, Any]]:
    """The workers seen in the last two minutes, with what they run (site admins)."""
    return keep.workers()


@router.get("/datasets/{project}/{dataset}/jobs", tags=["jobs"])
def dataset_jobs(keep: Caller, project: str, dataset: str) -> list[dict[str, Any]]:
    """Queued and running jobs on the dataset, with their progress (its readers)."""
    return [active_record(keep, j) for j in keep.dataset_jobs(project, dataset)]


def active_record(keep: Keep, info: JobInfo) -> dict[str, Any]:
    """What a dataset's readers see of a job on it (not its arguments: another user's)."""
    return {
        "id": info.id,
        "kind": info.kind,
        "state": info.state,
        "created_by": info.created_by,
        "created_at": info.to_dict()["created_at"],
        "progress": info.progress,
        "percent": None if info.percent is None else round(info.percent, 1),
    }


@router.post("/datasets/{project}/{dataset}/verify", tags=["jobs"], status_code=202)
def verify(
    keep: Caller,
    project: str,
    dataset: str,
    body: Annotated[VerifyIn | None, Body()] = None,
) -> dict[str, Any]:
    """Queue a verification of the dataset (re-hash its files); 202 with the job."""
    options = body or VerifyIn()
    info = queue_verify(
        keep,
        f"{project}/{dataset}",
        store=options.store,
        quick=options.quick,
        repair=options.repair,
    )
    return _queued(keep, info)


@router.post("/datasets/{project}/{dataset}/copy", tags=["jobs"], status_code=202)
def copy(keep: Caller, project: str, dataset: str, body: CopyIn) -> dict[str, Any]:
    """Queue a copy of the dataset to another store (a replicate job); 202 with the job."""
    info = queue_copy(keep, f"{project}/{dataset}", body.to)
    return _queued(keep, info)


# -- shared with the UI ---------------------------------------------------------------------
def queue_verify(
    keep: Keep,
    address: str,
    *,
    store: str | None = None,
    quick: bool = False,
    repair: bool = False,
) -> JobInfo:
    """Queue a verify job; asking again while the caller's same job is queued or running
    answers that job (a double click queues one)."""
    args: dict[str, Any] = {"target": address}
    if store:
        args.update(store=store, quick=quick)
    if repair:
        args["repair"] = True
    key = f"verify:{keep.actor}:{address}:{store or ''}:{int(quick)}:{int(repair)}"
    return keep.enqueue("verify", args, unique_key=key)


def queue_copy(keep: Keep, address: str, store: str) -> JobInfo:
    key = f"replicate:{keep.actor}:{store}:{address}"
    return keep.enqueue("replicate", {"dataset": address, "store": store}, unique_key=key)
