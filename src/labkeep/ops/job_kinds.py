"""The built-in job kinds: ingest, verify, scrub, replicate, policy-apply, noop.

Each handler calls the same use case as the CLI, acting as the user who queued the job,
with the job's progress as its progress bar. Use cases are idempotent (a rerun of an
ingest skips what is registered, a copy skips fresh replicas), so a job that is run again
after its worker died finishes the work instead of repeating it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from labkeep.catalog import Dataset, Entry, Project, TreeCheck
from labkeep.clock import utcnow
from labkeep.errors import Forbidden, NotFound, UsageError
from labkeep.names import parse_address
from labkeep.ops.jobs import JobContext, JobProblems, handler
from labkeep.results import Report

if TYPE_CHECKING:
    from labkeep.keep import Keep


def _summary(report: Report) -> dict[str, Any]:
    summary = report.summary()
    problems = [r.to_dict() for r in report.results if r.status not in ("ok", "notneeded")]
    summary["problems"] = problems[:20]
    return summary


def _finish(report: Report, what: str) -> dict[str, Any]:
    result = _summary(report)
    if report.failed:
        first = result["problems"][0] if result["problems"] else {}
        raise JobProblems(
            f"{what}: {report.problems} problem(s); first: {first.get('path', '')} "
            f"{first.get('message', '')}".strip(),
            result,
        )
    return result


def _dataset_target(keep: Keep, address: str, action: str) -> str:
    addr = parse_address(address, need_dataset=True)
    if addr.path or addr.version is not None:
        raise UsageError(f"a job works on PROJECT/DATASET, not {address!r}")
    from labkeep.ops._access import find_dataset, find_project

    assert addr.dataset is not None
    with keep.catalog.read() as session:
        try:
            find_dataset(keep, session, addr.project, addr.dataset, action)
        except NotFound:
            if action != "dataset.ingest":
                raise
            find_project(keep, session, addr.project, "dataset.create")  # a new dataset
    return f"{addr.project}/{addr.dataset}"


# -- ingest -------------------------------------------------------------------------------
def _authorize_ingest(keep: Keep, args: dict[str, Any]) -> str:
    if not isinstance(args.get("source"), str) or not isinstance(args.get("dataset"), str):
        raise UsageError("an ingest job needs 'source' (a folder) and 'dataset' (P/D)")
    target = _dataset_target(keep, args["dataset"], "dataset.ingest")
    _check_source_allowed(keep, args["source"])
    return target


def _check_source_allowed(keep: Keep, source: str) -> None:
    """Workers read with the service account's rights, not the user's: a user may only
    have them read folders of a watched buffer shown to them (site admins: any folder)."""
    if keep.principal.site_admin:
        return
    from labkeep.ops.buffer_access import buffer_visible_to

    if not buffer_visible_to(keep, source):
        raise Forbidden(
            f"you may not import from {source}: jobs read folders with the service "
            "account's rights, so they import only from buffers shown to you",
            hint="pick a folder of a configured buffer ('labkeep watch list'), or ask a site admin",
        )


@handler(
    "ingest",
    authorize=_authorize_ingest,
    describe=lambda a: f"{a.get('source')} -> {a.get('dataset')}",
)
def ingest_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    report = ctx.keep.ingest(
        a["source"],
        a["dataset"],
        link=bool(a.get("link", False)),
        seal=bool(a.get("seal", False)),
        kind=str(a.get("kind", "session")),
        message=str(a.get("message", "")),
        jobs=a.get("jobs"),
        progress=ctx.as_progress(),
        keep_results=False,
    )
    return _finish(report, f"ingest of {a['source']} into {a['dataset']}")


# -- verify -------------------------------------------------------------------------------
def _authorize_verify(keep: Keep, args: dict[str, Any]) -> str | None:
    target = args.get("target")
    if target is None:
        if not keep.principal.site_admin:
            raise Forbidden("only site admins verify the whole keep")
        return None
    addr = parse_address(str(target))
    if addr.dataset is None:
        keep.get_project(addr.project)
        return addr.project
    action = "dataset.repair" if args.get("repair") else "dataset.verify"
    return _dataset_target(keep, str(target), action)


@handler(
    "verify",
    authorize=_authorize_verify,
    describe=lambda a: (
        f"{a.get('target') or 'the whole keep'}" + (f" in {a['store']}" if a.get("store") else "")
    ),
)
def verify_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    extra: dict[str, Any] = {}
    if a.get("store"):
        extra.update(store=a["store"], quick=bool(a.get("quick", False)))
    if a.get("repair"):
        extra["repair"] = True
    report = ctx.keep.verify(
        a.get("target"),
        progress=ctx.as_progress(rate_limit=_rate(a.get("bandwidth"))),
        keep_results=False,
        **extra,
    )
    return _finish(report, f"verify of {a.get('target') or 'the keep'}")


def _rate(value: Any) -> float | None:
    """Bytes per second from 200000000, "200MB" or "1.5GB" (per second)."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().upper().removesuffix("/S").removesuffix("B")
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1:], 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        return float(number) * scale
    except ValueError:
        raise UsageError(f"bandwidth {value!r}: give bytes per second, like 200MB") from None


# -- scrub: periodic re-verification -------------------------------------------------------
#: stands for "never verified" (sorts before every real check)
NEVER = datetime(1970, 1, 1)


def scrub_candidates(keep: Keep, max_age_days: float, limit: int) -> list[tuple[str, Any]]:
    """Sealed datasets whose tree copy was last fully verified more than *max_age_days*
    ago (or never), oldest first: (P/D, oldest check or None)."""
    cutoff = utcnow() - timedelta(days=max_age_days)
    oldest = (
        select(
            Entry.dataset_id.label("dataset_id"),
            func.min(
                func.coalesce(TreeCheck.checked_at, utcnow() - timedelta(days=365 * 100))
            ).label("oldest"),
        )
        .select_from(Entry)
        .outerjoin(TreeCheck, TreeCheck.entry_id == Entry.id)
        .where(Entry.valid_to.is_(None))
        .group_by(Entry.dataset_id)
        .subquery()
    )
    query = (
        select(Project.name, Dataset.name, oldest.c.oldest)
        .join(Dataset, Dataset.project_id == Project.id)
        .join(oldest, oldest.c.dataset_id == Dataset.id)
        .where(
            Dataset.sealed.is_(True),
            Dataset.tree_state == "present",
            oldest.c.oldest < cutoff,
        )
        .order_by(oldest.c.oldest, Dataset.id)
        .limit(limit)
    )
    with keep.catalog.read() as session:
        return [(f"{p}/{d}", when) for p, d, when in session.execute(query).all()]


@handler(
    "scrub",
    admin_only=True,
    describe=lambda a: f"datasets not verified for {a.get('max_age_days', 90)} days",
)
def scrub_job(ctx: JobContext) -> dict[str, Any]:
    """Re-verify sealed datasets not verified for ``max_age_days`` (default 90), oldest
    first, at most ``bandwidth`` bytes/s and for at most ``max_hours`` hours (default 23,
    so a daily scrub never overlaps the next)."""
    a = ctx.args
    max_age = float(a.get("max_age_days", 90))
    deadline = time.monotonic() + float(a.get("max_hours", 23)) * 3600
    rate = _rate(a.get("bandwidth"))
    todo = scrub_candidates(ctx.keep, max_age, int(a.get("max_datasets", 10_000)))
    done: list[str] = []
    problems: list[dict[str, Any]] = []
    ctx.progress(total_datasets=len(todo), datasets=0, force=True)
    for address, _when in todo:
        if time.monotonic() > deadline:
            break
        report = ctx.keep.verify(
            address, progress=ctx.as_progress(rate_limit=rate), keep_results=False
        )
        done.append(address)
        if report.failed:
            problems.append({"dataset": address, "failed": report.problems})
        ctx.progress(datasets=len(done), dataset=address)
    result = {"verified": done, "left": len(todo) - len(done), "problems": problems}
    if problems:
        raise JobProblems(
            f"scrub found problems in {len(problems)} dataset(s): "
            + ", ".join(p["dataset"] for p in problems[:5]),
            result,
            hint="'labkeep verify P/D --repair' replaces damaged files from good copies",
        )
    return result


# -- replication ---------------------------------------------------------------------------
def _authorize_copy(keep: Keep, args: dict[str, Any]) -> str:
    if not isinstance(args.get("dataset"), str) or not isinstance(args.get("store"), str):
        raise UsageError("a replicate job needs 'dataset' (P/D) and 'store'")
    target = _dataset_target(keep, args["dataset"], "dataset.copy")
    from labkeep.catalog import Store

    with keep.catalog.read() as session:
        if session.execute(select(Store.id).where(Store.name == args["store"])).first() is None:
            raise NotFound(
                f"no store {args['store']!r}", hint="'labkeep store list' lists the stores"
            )
    return target


@handler(
    "replicate",
    authorize=_authorize_copy,
    describe=lambda a: f"{a.get('dataset')} -> {a.get('store')}",
)
def replicate_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    report = ctx.keep.copy(
        a["dataset"], to=a["store"], progress=ctx.as_progress(), keep_results=False
    )
    return _finish(report, f"copy of {a['dataset']} to {a['store']}")


@handler(
    "policy-apply",
    admin_only=True,
    describe=lambda a: f"copy-on-seal rules of {a.get('project') or 'every project'}",
)
def policy_apply_job(ctx: JobContext) -> dict[str, Any]:
    report = ctx.keep.policy_apply(
        ctx.args.get("project"), progress=ctx.as_progress(), keep_results=False
    )
    return _finish(report, "copy-on-seal rules")


def queue_replication(
    keep: Keep, session: Any, project: str, dataset: str, stores: list[str]
) -> list[int]:
    """Queue one replicate job per store named by the copy-on-seal rule, in *session*
    (the seal's transaction): the jobs exist exactly when the seal does."""
    from labkeep.ops.jobs import enqueue

    ids = []
    for store in stores:
        job = enqueue(
            keep,
            "replicate",
            {"dataset": f"{project}/{dataset}", "store": store},
            target=f"{project}/{dataset}",
            unique_key=f"replicate:{store}:{project}/{dataset}",
            session=session,
            system=True,
        )
        ids.append(job.id)
    return ids


# -- noop (benchmarks, health checks) ------------------------------------------------------
@handler("noop", admin_only=True, describe=lambda a: f"sleep {a.get('seconds', 0)} s")
def noop_job(ctx: JobContext) -> dict[str, Any]:
    seconds = float(ctx.args.get("seconds", 0))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.progress(left=round(end - time.monotonic(), 1))
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    return {"slept": seconds}


# -- publish: deposit in a repository for a DOI ----------------------------------------
def _authorize_publish(keep: Keep, args: dict[str, Any]) -> str:
    if not isinstance(args.get("dataset"), str) or not isinstance(args.get("to"), str):
        raise UsageError("a publish job needs 'dataset' (P/D[@N]) and 'to' (a target)")
    from labkeep.ops._access import find_dataset
    from labkeep.ops._deposit_plan import target_of

    target_of(keep, args["to"], sandbox=bool(args.get("sandbox", False)))
    addr = parse_address(args["dataset"], need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        find_dataset(keep, session, addr.project, addr.dataset, "dataset.publish")
    return f"{addr.project}/{addr.dataset}"


@handler(
    "publish",
    authorize=_authorize_publish,
    describe=lambda a: (
        f"{a.get('dataset')} -> {a.get('to')}" + (" (sandbox)" if a.get("sandbox") else "")
    ),
)
def publish_job(ctx: JobContext) -> dict[str, Any]:
    """Deposit and publish a dataset version (resumable: a retried job continues the same
    draft). The worker reads the token from its own environment or credentials file."""
    a = ctx.args
    result = ctx.keep.publish(
        a["dataset"],
        to=a["to"],
        sandbox=bool(a.get("sandbox", False)),
        credentials=a.get("credentials") or None,
        progress=ctx.as_progress(),
    )
    return dict(result.to_dict())
