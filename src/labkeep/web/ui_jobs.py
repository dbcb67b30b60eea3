"""The job queue in the UI: the jobs page, one job's page, cancel and retry.

Users see their own jobs, site admins everyone's (the queue decides: ``list_jobs``,
``get_job``). A job's page refreshes itself (``<meta http-equiv=refresh>``, no script)
while the job is queued or running.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from labkeep.clock import utcnow
from labkeep.errors import NotFound
from labkeep.keep import Keep
from labkeep.ops.jobs import ACTIVE, STATES, JobInfo, load_kinds
from labkeep.web import pages
from labkeep.web.api_jobs import describe
from labkeep.web.deps import csrf_protect, resolve
from labkeep.web.pages import Links, redirect, render, templates

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
#: rows per page of the jobs list
JOBS_PAGE = 50
#: seconds between refreshes of a queued or running job's page
REFRESH_SECONDS = 2


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago: '12 s', '5 min', '3 h', '2 d'."""
    if value is None:
        return ""
    seconds = max(0, int(((now or utcnow()) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def first_line(text: str | None, most: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= most else line[: most - 1] + "…"


def target_link(links: Links, target: str | None) -> str | None:
    """The page of a job's target: a dataset's or a project's page, if it is one."""
    if not target:
        return None
    parts = target.split("/")
    if len(parts) == 2 and all(parts):
        return links.dataset(parts[0], parts[1])
    if len(parts) == 1:
        return links.project(target)
    return None


def progress_text(job: JobInfo) -> str:
    """'812 / 2,000 files (41 %)', or what the progress record holds."""
    p = job.progress
    percent = job.percent
    tail = f" ({percent:.0f} %)" if percent is not None else ""
    if p.get("total_files"):
        return f"{int(p.get('files', 0)):,} / {int(p['total_files']):,} files{tail}"
    if p.get("total_datasets"):
        return f"{int(p.get('datasets', 0)):,} / {int(p['total_datasets']):,} datasets{tail}"
    return tail.strip(" ()")


templates.env.filters["age"] = age
templates.env.filters["first_line"] = first_line
templates.env.globals["job_progress_text"] = progress_text


def _number(text: str) -> int:
    number = pages.whole_number(text)
    if number is None:
        raise NotFound(f"no job {text!r}")
    return number


@router.get("/jobs", name="jobs_page")
def jobs_page(
    request: Request,
    keep: Caller,
    state: str = "",
    kind: str = "",
    before: str = "",
) -> Response:
    """Jobs newest first, a page at a time, with counts per state."""
    older = _number(before) if before else None
    jobs = keep.list_jobs(state=state or None, kind=kind or None, limit=JOBS_PAGE, before=older)
    links = Links(request, keep.config.web.base_url)

    return render(
        request,
        "jobs.html",
        {
            "title": "Jobs",
            "jobs": jobs,
            "rows": [_row(keep, links, job) for job in jobs],
            "counts": keep.job_counts(),
            "states": STATES,
            "kinds": sorted(load_kinds(keep.config.jobs.plugins)),
            "state": state,
            "kind": kind,
            "before": older,
            "next_before": jobs[-1].id if len(jobs) == JOBS_PAGE else None,
            "summary": keep.queue_summary(),
            "crumbs": [("Home", links.home()), ("Jobs", links.page("/jobs"))],
        },
    )


def _row(keep: Keep, links: Links, job: JobInfo) -> dict[str, Any]:
    return {
        "job": job,
        "description": describe(keep, job),
        "target_url": target_link(links, job.target),
        "progress": progress_text(job),
    }


@router.get("/jobs/{job_id}", name="job_page")
def job_page(request: Request, keep: Caller, job_id: str) -> Response:
    job = keep.get_job(_number(job_id))
    links = Links(request, keep.config.web.base_url)
    active = job.state in ACTIVE
    return render(
        request,
        "job.html",
        {
            "title": f"Job {job.id}: {job.kind}",
            "job": job,
            "record": job.to_dict(),
            "description": describe(keep, job),
            "target_url": target_link(links, job.target),
            "progress": progress_text(job),
            "active": active,
            "refresh": REFRESH_SECONDS if active else None,
            "workers": keep.queue_summary()["workers"] if active else None,
            "crumbs": [
                ("Home", links.home()),
                ("Jobs", links.page("/jobs")),
                (f"Job {job.id}", links.page(f"/jobs/{job.id}")),
            ],
        },
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, keep: Caller, job_id: str) -> Response:
    job = keep.cancel_job(_number(job_id))
    return redirect(Links(request).page(f"/jobs/{job.id}"), "job-cancelled")


@router.post("/jobs/{job_id}/retry")
def retry_job(request: Request, keep: Caller, job_id: str) -> Response:
    job = keep.retry_job(_number(job_id))
    return redirect(Links(request).page(f"/jobs/{job.id}"), "job-retried")
