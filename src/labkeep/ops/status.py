"""``status``: what is in the keep and what needs attention.

What it costs, so that it stays usable on a keep of 10^5 datasets and 10^8 files:

- by default it reads the catalog only, a row per dataset and never one per file:
  keep-wide counts (files and bytes from each dataset's head version), and the newest
  ``verify`` event of each dataset (one index lookup per dataset:
  ``ix_events_target_action``), whose details say how many files that verify checked
  and found MODIFIED, MISSING or EXTRA and whether the manifest matched. So the files
  never verified (a head version's files less those its newest verify checked, as a
  landing page counts them), and the damage, EXTRA files and manifest drift that a
  verify saw, are named per dataset until a later verify finds the dataset clean;
- ``deep=True`` also looks at the tree, one dataset at a time: it re-hashes each
  dataset's ``MANIFEST.sha256`` against the SHA-256 the catalog recorded for its head
  version (``Version.manifest_sha256``), and looks for a seal or unseal that was
  interrupted. That reads every manifest, so its cost grows with the number of files
  (about 100 bytes per file), which is why it is not the default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased

from labkeep.access import check
from labkeep.catalog import Dataset, Event, Project, Version, safe_url
from labkeep.clock import isoformat
from labkeep.errors import LabkeepError
from labkeep.integrity.hashing import hash_file

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

#: datasets listed by name in each problem list (all of them are counted)
MAX_LISTED = 100


def status(keep: Keep, *, deep: bool = False) -> dict[str, Any]:
    """Keep-wide counts and what needs attention (site admins); see the module doc."""
    check(keep.principal, "keep.admin")
    with keep.catalog.read() as session:
        projects = session.execute(select(func.count(Project.id))).scalar_one()
        datasets, sealed = session.execute(
            select(func.count(Dataset.id), func.count(Dataset.id).filter(Dataset.sealed))
        ).one()
        # the head versions' recorded counts (a row per dataset), not a scan of the entries
        files, size = session.execute(
            select(
                func.coalesce(func.sum(Version.n_files), 0),
                func.coalesce(func.sum(Version.n_bytes), 0),
            )
            .select_from(Dataset)
            .join(
                Version,
                (Version.dataset_id == Dataset.id) & (Version.number == Dataset.head_version),
            )
            .where(Version.state == "committed")
        ).one()
        last_verify = session.execute(
            select(func.max(Event.at)).where(Event.action == "verify")
        ).scalar_one()
        unfinished = [
            f"{p}/{d}"
            for p, d in session.execute(
                select(Project.name, Dataset.name)
                .join(Dataset, Dataset.project_id == Project.id)
                .join(Version, Version.dataset_id == Dataset.id)
                .where(Version.state == "open")
            )
        ]
        events = session.execute(select(func.count(Event.id))).scalar_one()
        found = _verify_problems(session)
        verify_problems, n_verify_problems = found.listed, found.count
        n_extra, n_drift, never, problems = found.extra, found.drift, found.never, found.failed
        from labkeep.ops.whereis import below_policy

        short, n_short = below_policy(session, MAX_LISTED)
        from labkeep.ops.backup import drill_attention, last_drill

        stale_drill = drill_attention(keep, session)
        drilled = last_drill(session)
    attention: list[str] = []
    if stale_drill:
        attention.append(stale_drill)
    for item in short:
        attention.append(
            f"{item['dataset']}: below its copy policy ({', '.join(item['below'])}; copies: "
            f"{', '.join(item['copies']) or 'none'}): {item['fix']}"
        )
    if n_short > len(short):
        attention.append(f"... and {n_short - len(short)} more datasets below their copy policy")
    if problems:
        attention.append(f"{problems} files failed their last verification: run 'labkeep verify'")
    for item in verify_problems:
        attention.append(f"{item['dataset']}: its last verify ({item['at']}) found {_found(item)}")
    if n_verify_problems > len(verify_problems):
        more = n_verify_problems - len(verify_problems)
        attention.append(f"... and {more} more datasets whose last verify found problems")
    if unfinished:
        attention.append(
            "unfinished ingests (run the same ingest again to finish): " + ", ".join(unfinished)
        )
    if never:
        attention.append(f"{never} files were never verified: run 'labkeep verify'")
    from labkeep.ops.jobs import queue_summary

    jobs = queue_summary(keep)
    if (jobs["queued"] or jobs["running"]) and not jobs["workers"]:
        attention.append(
            f"{jobs['queued']} jobs are queued and no worker is running: start one with "
            "'labkeep worker' (or 'labkeep serve', which runs one)"
        )
    if jobs["failed_last_day"]:
        attention.append(
            f"{jobs['failed_last_day']} jobs failed in the last day: "
            "'labkeep jobs --state failed' says why"
        )
    info: dict[str, Any] = {
        "root": str(keep.root),
        "catalog": safe_url(keep.config.catalog_url),
        "tree": str(keep.tree.base),
        "schema": keep.catalog.schema_revision(),
        "projects": projects,
        "datasets": datasets,
        "sealed_datasets": sealed,
        "files": files,
        "bytes": int(size),
        "never_verified": never,
        "failed_verification": problems,
        "datasets_with_verify_problems": n_verify_problems,
        "extra_files": n_extra,
        "manifests_not_matching": n_drift,
        "verify_problems": verify_problems,
        "unfinished_ingests": unfinished,
        "below_policy": short,
        "datasets_below_policy": n_short,
        "last_verify": isoformat(last_verify),
        "last_good_drill": isoformat(drilled),
        "events": events,
        "jobs": jobs,
        "deep": deep,
        "attention": attention,
    }
    if deep:
        drift, interrupted = _look_at_the_tree(keep)
        info["manifest_drift"] = drift
        info["interrupted_seals"] = interrupted
        for item in drift:
            attention.append(
                f"{item['dataset']}: MANIFEST.sha256 is {item['state']}: it is not the manifest "
                f"of version {item['version']}; run 'labkeep verify {item['dataset']}', then "
                f"'labkeep manifest {item['dataset']}'"
            )
        for item in interrupted:
            verb = item["operation"]
            attention.append(
                f"{item['dataset']}: a '{verb}' was interrupted; run 'labkeep seal "
                f"{item['dataset']}' or 'labkeep unseal --force {item['dataset']}' to finish"
            )
    return info


def _found(item: dict[str, Any]) -> str:
    parts = [f"{s.upper()} {item[s]}" for s in ("modified", "missing", "extra") if item[s]]
    if item["manifest"] != "ok":
        parts.append(f"manifest {item['manifest']}")
    return ", ".join(parts) + f"; fix it, then run 'labkeep verify {item['dataset']}'"


@dataclass
class _Verified:
    listed: list[dict[str, Any]] = field(default_factory=list)
    #: datasets whose newest verify found problems
    count: int = 0
    extra: int = 0
    drift: int = 0
    #: files of the head versions that no verify has checked yet (datasets in the tree)
    never: int = 0
    #: files the newest verify of their dataset found MODIFIED or MISSING
    failed: int = 0


def _verify_problems(session: Session) -> _Verified:
    """Per dataset (one row each, one index lookup for its newest verify): what its
    newest verify found, the first MAX_LISTED datasets with problems, and keep-wide
    totals. Files never verified are counted as a dataset's landing page counts them
    (``verification_of``): its head version's files less those its newest verify
    checked; no entry is read, so this costs the same at 10^4 and 10^8 files."""
    address = (Project.name + "/" + Dataset.name).label("address")
    earlier = aliased(Event)
    newest = (
        select(func.max(earlier.id))
        .where(earlier.target == Project.name + "/" + Dataset.name, earlier.action == "verify")
        .correlate(Project, Dataset)
        .scalar_subquery()
    )
    rows = session.execute(
        select(address, Dataset.tree_state, Version.n_files, Event.at, Event.details)
        .select_from(Dataset)
        .join(Project, Project.id == Dataset.project_id)
        .outerjoin(
            Version,
            (Version.dataset_id == Dataset.id)
            & (Version.number == Dataset.head_version)
            & (Version.state == "committed"),
        )
        .outerjoin(Event, Event.id == newest)
        .order_by(Project.name, Dataset.name)
        .execution_options(yield_per=1000)
    )
    out = _Verified()
    for target, tree_state, n_files, at, text in rows:
        # (outer joins: a dataset with no committed version or no verify has NULLs here)
        verified = cast("str | None", text) is not None
        details = json.loads(text) if verified else {}
        if tree_state == "present":
            checked = sum(int(details.get(s, 0)) for s in ("ok", "modified", "missing", "unsaved"))
            out.never += max(0, int(n_files or 0) - checked)
            out.failed += int(details.get("modified", 0)) + int(details.get("missing", 0))
        if not verified:
            continue
        item: dict[str, Any] = {
            "dataset": target,
            "at": isoformat(at),
            **{s: int(details.get(s, 0)) for s in ("modified", "missing", "extra")},
            "manifest": str(details.get("manifest", "ok")),
        }
        out.extra += item["extra"]
        out.drift += item["manifest"] != "ok"
        if item["modified"] or item["missing"] or item["extra"] or item["manifest"] != "ok":
            out.count += 1
            if len(out.listed) < MAX_LISTED:
                out.listed.append(item)
    return out


def _look_at_the_tree(keep: Keep) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifests that are not their head version's, and interrupted seals/unseals."""
    other = aliased(Version)
    unfinished = (
        exists().where(other.dataset_id == Dataset.id, other.state == "open").correlate(Dataset)
    )
    query = (
        select(
            Project.name, Dataset.name, Dataset.head_version, Version.manifest_sha256, unfinished
        )
        .select_from(Dataset)
        .join(Project, Project.id == Dataset.project_id)
        .outerjoin(
            Version,
            (Version.dataset_id == Dataset.id) & (Version.number == Dataset.head_version),
        )
        .order_by(Project.name, Dataset.name)
    )
    drift: list[dict[str, Any]] = []
    interrupted: list[dict[str, Any]] = []
    with keep.catalog.read() as session:
        for project, name, head, recorded, is_open in session.execute(
            query.execution_options(yield_per=1000)
        ):
            target = f"{project}/{name}"
            operation = keep.tree.seal_intent(project, name)
            if operation is not None:
                interrupted.append({"dataset": target, "operation": operation})
            if not head or recorded is None or is_open:
                continue  # nothing committed yet, or an ingest to finish (listed above)
            path = keep.tree.manifest_path(project, name)
            try:
                actual: str | None = hash_file(str(path)).sha256.hex()
            except FileNotFoundError:
                actual = None
            except (OSError, LabkeepError):
                actual = ""
            if actual != recorded:
                state = "missing" if actual is None else "unreadable" if not actual else "modified"
                drift.append({"dataset": target, "version": head, "state": state})
    return drift, interrupted
