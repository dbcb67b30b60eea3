"""JSON API of runs (recorded commands and the versions they made), under /api/v1.

A run is shown to whoever may read its output dataset (``get_run`` / ``list_runs``
answer "not found" otherwise); cancelling one needs the right to save to that dataset
(``cancel_run``). A run's outputs come a page at a time: a run may write 10^5 files.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from labkeep.keep import Keep
from labkeep.web.api import MAX_INT, _errors, _json
from labkeep.web.deps import csrf_protect, resolve

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(csrf_protect)],
    responses=_errors(400, 401, 403, 404, 409, 422),
)
Caller = Annotated[Keep, Depends(resolve)]
RunId = Annotated[int, Path(ge=1, le=MAX_INT)]
STATE_PATTERN = "^(queued|running|saving|done|failed|cancelled)$"
#: outputs per page of a run's record, by default and at most
OUTPUTS_PAGE = 1000
MAX_OUTPUTS_PAGE = 5000


@router.get("/runs", tags=["runs"])
def list_runs(
    keep: Caller,
    dataset: Annotated[str | None, Query(max_length=200, description="P/D: runs into it")] = None,
    state: Annotated[str | None, Query(pattern=STATE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> dict[str, Any]:
    """Runs newest first, those whose output dataset the caller may read (records without
    their outputs). For the next page pass ``next_before`` as ``before``."""
    runs = keep.list_runs(dataset or None, limit=limit, state=state, before=before)
    return _json({"items": runs, "next_before": runs[-1]["id"] if len(runs) == limit else None})


@router.get("/runs/{run_id}", tags=["runs"])
def get_run(
    keep: Caller,
    run_id: RunId,
    outputs_after: Annotated[str | None, Query(max_length=4096)] = None,
    outputs_limit: Annotated[int, Query(ge=1, le=MAX_OUTPUTS_PAGE)] = OUTPUTS_PAGE,
) -> dict[str, Any]:
    """A run's record with one page of its outputs in path order (``outputs_total`` of
    them in all); for the next page pass ``outputs_next_after`` as ``outputs_after``.
    A rerun also lists the outputs that differ from the original's (the first 100)."""
    record = keep.get_run(run_id, outputs=False)
    page = keep.run_outputs(run_id, after=outputs_after, limit=outputs_limit)
    record["outputs"] = page["items"]
    record["outputs_total"] = page["total"]
    record["outputs_next_after"] = page["next_after"]
    if record["rerun_of"] is not None:
        record["differing"] = keep.differing_outputs(run_id)
    return _json(record)


@router.post("/runs/{run_id}/cancel", tags=["runs"])
def cancel_run(keep: Caller, run_id: RunId) -> dict[str, Any]:
    """Cancel a queued or running run (its SLURM job or its queued job); a finished run
    is refused (400)."""
    return _json(keep.cancel_run(run_id))


@router.get("/datasets/{project}/{dataset}/runs", tags=["runs"])
def dataset_runs(
    keep: Caller,
    project: str,
    dataset: str,
    state: Annotated[str | None, Query(pattern=STATE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> list[dict[str, Any]]:
    """The runs into the dataset (that made or tried to make its versions), newest first."""
    return _json(keep.list_runs(f"{project}/{dataset}", limit=limit, state=state, before=before))


@router.get("/datasets/{project}/{dataset}/derived", tags=["runs"])
def derived(
    keep: Caller,
    project: str,
    dataset: str,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> list[dict[str, Any]]:
    """The runs that read the dataset (at *version*, or any), newest first (at most 200):
    what was made from it, among the runs the caller may see."""
    return _json(keep.runs_from(f"{project}/{dataset}", version=version))
