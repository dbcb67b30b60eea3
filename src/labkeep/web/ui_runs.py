"""Runs in the UI: the runs page, one run's page, cancel; and the provenance parts of a
dataset's pages (how a version was made, what was made from a dataset).

A run is shown to whoever may read its output dataset; the Keep decides (``get_run``,
``list_runs`` answer "not found" otherwise) and refuses a cancel to those who may not
save to that dataset. Every list here is bounded: a page of runs, the first outputs of
a run with their count, the first differing outputs of a rerun.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from labkeep.errors import NotFound
from labkeep.keep import Keep
from labkeep.web import pages
from labkeep.web.deps import csrf_protect, resolve
from labkeep.web.pages import Links, redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
Caller = Annotated[Keep, Depends(resolve)]
#: rows per page of the runs list
RUNS_PAGE = 50
#: outputs shown on a run's or a version's page (then a count, and pages on the run's)
OUTPUTS_SHOWN = 100
#: runs listed under "made from this dataset"
DERIVED_SHOWN = 20
#: differing outputs of a rerun shown on its page
DIFFERING_SHOWN = 100
STATES = ("queued", "running", "saving", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")


def _number(text: str) -> int:
    number = pages.whole_number(text)
    if number is None:
        raise NotFound(f"no run {text!r}")
    return number


def command_text(argv: list[str] | None) -> str:
    """A command as a shell would read it."""
    return shlex.join(str(a) for a in argv or [])


def environment_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What a run ran on, as (label, value) rows: Python, OS, host, CPU, GPU, container."""
    env = record.get("environment") or {}
    rows: list[tuple[str, str]] = []

    def text(value: Any, *keys: str) -> str:
        if isinstance(value, dict):
            parts = [str(value[k]) for k in keys if value.get(k) not in (None, "", [])]
            return " ".join(parts)
        return "" if value in (None, "", []) else str(value)

    python = text(env.get("python"), "implementation", "version")
    if python:
        rows.append(("Python", python))
    system = text(env.get("os"), "distribution", "platform", "kernel", "release", "machine")
    if system:
        rows.append(("Operating system", system))
    host = text(env.get("host"), "hostname")
    if host:
        rows.append(("Host", host))
    cpu = env.get("cpu")
    cpu_text = text(cpu, "model", "name", "brand")
    if isinstance(cpu, dict) and cpu.get("count"):
        cpu_text = f"{cpu_text} ({cpu['count']} cores)".strip()
    if cpu_text:
        rows.append(("CPU", cpu_text))
    gpus = env.get("gpu") or []
    if isinstance(gpus, list) and gpus:
        names = [text(g, "name", "driver") if isinstance(g, dict) else str(g) for g in gpus]
        rows.append(("GPU", "; ".join(n for n in names if n)))
    container = record.get("container") or {}
    if isinstance(container, dict) and container.get("image"):
        image = str(container["image"])
        if container.get("digest"):
            image += f" (digest {container['digest']})"
        if container.get("engine"):
            image += f", {container['engine']}"
        rows.append(("Container", image))
    return rows


def _derived_rows(links: Links, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        project, name = str(r["output_dataset"]).split("/", 1)
        rows.append(
            {
                "run": r,
                "run_url": links.page(f"/runs/{r['id']}"),
                "output_url": links.dataset(project, name, r["version"]),
                "command": command_text(r["command"]),
            }
        )
    return rows


def run_context(keep: Keep, links: Links, record: dict[str, Any]) -> dict[str, Any]:
    """What the run parts of pages show about one run (its first outputs, not all)."""
    outputs = keep.run_outputs(record["id"], limit=OUTPUTS_SHOWN)
    project, name = str(record["output_dataset"]).split("/", 1)
    inputs = []
    for i in record["inputs"]:
        p, d = str(i["dataset"]).split("/", 1)
        inputs.append(
            {
                **i,
                "page": links.dataset(p, d, i["version"]),
                "file_page": links.file(p, d, i["path"], i["version"]) if i["path"] else None,
            }
        )
    return {
        "run": record,
        "run_url": links.page(f"/runs/{record['id']}"),
        "output_url": links.dataset(project, name),
        "version_url": (
            links.dataset(project, name, record["version"]) if record["version"] else None
        ),
        "command": command_text(record["command"]),
        "argv": command_text(record["argv"]),
        "inputs": inputs,
        "environment": environment_rows(record),
        "outputs": outputs["items"],
        "outputs_total": outputs["total"],
        "job_url": links.page(f"/jobs/{record['job_id']}") if record["job_id"] else None,
    }


def dataset_provenance(
    keep: Keep, links: Links, address: str, version: int | None
) -> dict[str, Any]:
    """For a dataset's page: the run that made the version shown (on a version's page)
    and the runs that read the dataset (at that version, on a version's page)."""
    made_by = None
    if version is not None:
        record = keep.run_of_version(f"{address}@{version}")
        if record is not None:
            made_by = run_context(keep, links, record)
    derived = keep.runs_from(address, version=version, limit=DERIVED_SHOWN + 1)
    return {
        "made_by": made_by,
        "derived": _derived_rows(links, derived[:DERIVED_SHOWN]),
        "derived_more": len(derived) > DERIVED_SHOWN,
    }


@router.get("/runs", name="runs_page")
def runs_page(
    request: Request,
    keep: Caller,
    dataset: str = "",
    state: str = "",
    before: str = "",
) -> Response:
    """Runs newest first, a page at a time, by output dataset and state."""
    older = _number(before) if before else None
    runs = keep.list_runs(
        dataset.strip() or None, limit=RUNS_PAGE, state=state or None, before=older
    )
    links = Links(request, keep.config.web.base_url)
    return render(
        request,
        "runs.html",
        {
            "title": "Runs",
            "rows": _derived_rows(links, runs),
            "states": STATES,
            "state": state,
            "dataset": dataset.strip(),
            "before": older,
            "next_before": runs[-1]["id"] if len(runs) == RUNS_PAGE else None,
            "crumbs": [("Home", links.home()), ("Runs", links.page("/runs"))],
        },
    )


@router.get("/runs/{run_id}", name="run_page")
def run_page(request: Request, keep: Caller, run_id: str, after: str | None = None) -> Response:
    record = keep.get_run(_number(run_id), outputs=False)
    links = Links(request, keep.config.web.base_url)
    context = run_context(keep, links, record)
    if after is not None:
        page = keep.run_outputs(record["id"], after=after, limit=OUTPUTS_SHOWN)
        context["outputs"] = page["items"]
    comparison = (record.get("settings") or {}).get("comparison")
    return render(
        request,
        "run.html",
        {
            **context,
            "ctx": context,
            "title": f"Run {record['id']}",
            "after": after,
            "next_after": (
                context["outputs"][-1]["path"] if len(context["outputs"]) == OUTPUTS_SHOWN else None
            ),
            "active": record["state"] in ACTIVE,
            "comparison": comparison if isinstance(comparison, dict) else None,
            "differing": (
                keep.differing_outputs(record["id"], limit=DIFFERING_SHOWN)
                if record["rerun_of"] is not None
                else []
            ),
            "original_url": (
                links.page(f"/runs/{record['rerun_of']}") if record["rerun_of"] else None
            ),
            "crumbs": [
                ("Home", links.home()),
                ("Runs", links.page("/runs")),
                (f"Run {record['id']}", links.page(f"/runs/{record['id']}")),
            ],
        },
    )


@router.post("/runs/{run_id}/cancel")
def cancel_run(request: Request, keep: Caller, run_id: str) -> Response:
    record = keep.cancel_run(_number(run_id))
    return redirect(Links(request).page(f"/runs/{record['id']}"), "run-cancelled")
