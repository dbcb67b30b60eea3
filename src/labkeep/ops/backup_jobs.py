"""Job kinds ``backup`` and ``backup-drill``, so workers run them on a schedule::

    [[jobs.schedule]]
    kind = "backup"
    every = "1d"
    [[jobs.schedule]]
    kind = "backup-drill"
    every = "7d"

Both are site-admin jobs; a drill that fails (or a backup that cannot be written) fails
its job with the reason, which ``labkeep jobs --state failed`` and the dashboard show.
"""

from __future__ import annotations

from typing import Any

from labkeep.ops.jobs import JobContext, JobProblems, handler


@handler("backup", admin_only=True, describe=lambda a: f"catalog to {a.get('store') or 'backup'}")
def backup_job(ctx: JobContext) -> dict[str, Any]:
    """``labkeep backup [--to STORE]`` (args: store, rotate)."""
    result: dict[str, Any] = ctx.keep.backup(
        to=ctx.args.get("store") or None, rotate=bool(ctx.args.get("rotate", True))
    )
    return result


@handler("backup-drill", admin_only=True, describe=lambda a: "restore the newest backup, check")
def drill_job(ctx: JobContext) -> dict[str, Any]:
    """``labkeep backup drill`` (args: store, sample)."""
    sample = ctx.args.get("sample")
    report = ctx.keep.drill_backup(
        store=ctx.args.get("store") or None, sample=None if sample is None else int(sample)
    )
    result = report.to_dict()
    if not report.ok:
        failed = [c["check"] for c in report.checks if c["status"] != "ok"]
        raise JobProblems(
            f"the drill of backup {report.backup} failed: {', '.join(failed)}",
            result,
            hint="'labkeep backup drill' shows each check; take a new backup and drill it",
        )
    return result
