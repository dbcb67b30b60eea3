"""``status``: what is in the keep and what needs attention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from labkeep.access import check
from labkeep.catalog import Dataset, Entry, Event, Project, Version, safe_url
from labkeep.clock import isoformat

if TYPE_CHECKING:
    from labkeep.keep import Keep


def status(keep: Keep) -> dict[str, Any]:
    """Keep-wide counts and what needs attention (site admins)."""
    check(keep.principal, "keep.admin")
    with keep.catalog.read() as session:
        projects = session.execute(select(func.count(Project.id))).scalar_one()
        datasets, sealed = session.execute(
            select(func.count(Dataset.id), func.count(Dataset.id).filter(Dataset.sealed))
        ).one()
        files, size = session.execute(
            select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
                Entry.valid_to.is_(None)
            )
        ).one()
        never, problems = session.execute(
            select(
                func.count(Entry.id).filter(Entry.verified_at.is_(None)),
                func.count(Entry.id).filter(Entry.verify_status.in_(("modified", "missing"))),
            ).where(Entry.valid_to.is_(None))
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
    attention: list[str] = []
    if problems:
        attention.append(f"{problems} files failed their last verification: run 'labkeep verify'")
    if unfinished:
        attention.append(
            "unfinished ingests (run the same ingest again to finish): " + ", ".join(unfinished)
        )
    if never:
        attention.append(f"{never} files were never verified: run 'labkeep verify'")
    return {
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
        "unfinished_ingests": unfinished,
        "last_verify": isoformat(last_verify),
        "events": events,
        "attention": attention,
    }
