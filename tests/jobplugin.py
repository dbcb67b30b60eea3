"""A job kind for the queue tests, loaded by workers through ``[jobs] plugins``.

``count`` records its effect in the table ``test_effects`` in the same transaction as the
job's completion, so a test can count how often each job took effect. With
``fail_first`` its first attempt raises; with ``sleep`` it works that long first.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from labkeep.ops.jobs import JobContext, handler

EFFECTS = (
    "CREATE TABLE IF NOT EXISTS test_effects "
    "(job_id BIGINT NOT NULL, attempt INTEGER NOT NULL, worker VARCHAR(255) NOT NULL)"
)


@handler("count")
def count(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.args.get("fail_first") and ctx.claim.attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    if ctx.args.get("sleep"):
        end = time.monotonic() + float(ctx.args["sleep"])
        while time.monotonic() < end:
            ctx.progress(left=end - time.monotonic())
            time.sleep(0.05)
    with ctx.keep.catalog.write() as session:
        session.execute(
            text("INSERT INTO test_effects (job_id, attempt, worker) VALUES (:j, :a, :w)"),
            {"j": ctx.claim.id, "a": ctx.claim.attempt, "w": ctx.claim.owner},
        )
        ctx.finish(session, {"counted": ctx.claim.id})
    return None
