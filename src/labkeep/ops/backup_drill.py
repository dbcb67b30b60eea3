"""``backup drill``: restore the newest backup into a scratch catalog and check it.

The scratch catalog is a temp SQLite file, or a temp database ``labkeep_drill_*`` on the
same PostgreSQL server (dropped afterwards). Checks: the dump's SHA-256; that it
restores; the restored schema is the backup's and this labkeep's; the restored audit
chain recomputes, ends at the head the backup recorded and agrees with the live
catalog; each dataset's current entries equal the lines of its ``MANIFEST.sha256`` in
the tree (datasets changed since the backup are listed, not failed); a sample of files
re-hashed against the restored catalog. The result is a ``backup-drill`` event.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from labkeep.errors import LabkeepError, NotFound
from labkeep.ops.backup import BackupInfo, _fetch, _load, _scratch, list_backups, open_store

if TYPE_CHECKING:
    from labkeep.keep import Keep


@dataclass
class DrillReport:
    backup: str
    ok: bool
    scratch: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: datasets whose tree changed since the backup (not a failure; see docs/operations.md)
    changed_since: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "backup-drill",
            "status": "ok" if self.ok else "error",
            "backup": self.backup,
            "scratch": self.scratch,
            "checks": self.checks,
            "changed_since": self.changed_since,
        }


@contextlib.contextmanager
def _scratch_catalog(keep: Keep, folder: Path) -> Iterator[str]:
    """An empty scratch catalog of the keep's kind: a temp SQLite file, or a temp
    database on the same PostgreSQL server (dropped afterwards)."""
    if keep.catalog.dialect == "sqlite":
        yield "sqlite:///" + str(folder / "drill.db")
        return
    name = f"labkeep_drill_{uuid.uuid4().hex[:12]}"
    engine = keep.catalog.engine.execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    url = make_url(keep.config.catalog_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drill(keep: Keep, *, store: str | None = None, sample: int | None = None) -> DrillReport:
    """Restore the newest backup into a scratch catalog and check it; record an event.

    Checks: the restored schema is the backup's and this labkeep's; the event chain of
    the restored catalog is intact, ends at the head the backup recorded, and agrees
    with the live catalog's events; each dataset's entries equal the lines of its
    ``MANIFEST.sha256`` in the tree (datasets changed since the backup are listed, not
    failed); *sample* files re-hashed against the restored catalog.
    """
    from labkeep.access import check
    from labkeep.catalog import Catalog, safe_url
    from labkeep.ops.audit import append_event

    check(keep.principal, "keep.admin")
    backups = list_backups(keep, store=store)
    if not backups:
        raise NotFound("no backup to drill", hint="take one with 'labkeep backup'")
    info = backups[0]
    backend_store = open_store(keep, keep.config, store)
    report = DrillReport(info.id, False, "")
    try:
        with _scratch(keep.root) as folder, _scratch_catalog(keep, folder) as url:
            report.scratch = safe_url(url)
            dump = folder / "catalog.dump"
            try:
                _fetch(backend_store, info, dump)
                report.checks.append(_ok("sha256", f"{info.size} bytes, SHA-256 matches"))
                _load(dump, info, url)
                report.checks.append(_ok("restore", f"restored into {safe_url(url)}"))
            except LabkeepError as exc:
                report.checks.append(_bad("restore", exc.message))
            else:
                restored = Catalog(url)
                try:
                    _drill_checks(
                        keep,
                        restored,
                        info,
                        report,
                        keep.config.backup.drill_sample if sample is None else sample,
                    )
                finally:
                    restored.close()
    finally:
        backend_store.close()
    report.ok = all(c["status"] == "ok" for c in report.checks)
    with keep.catalog.write() as session:
        append_event(
            session,
            keep.actor,
            "backup-drill",
            info.id,
            {
                "ok": report.ok,
                "checks": {c["check"]: c["status"] for c in report.checks},
                "changed_since": len(report.changed_since),
            },
        )
    return report


def _ok(name: str, message: str) -> dict[str, Any]:
    return {"check": name, "status": "ok", "message": message}


def _bad(name: str, message: str) -> dict[str, Any]:
    return {"check": name, "status": "error", "message": message}


def _drill_checks(
    keep: Keep, restored: Any, info: BackupInfo, report: DrillReport, sample: int
) -> None:
    from labkeep.catalog._db import SCHEMA_HEAD

    schema = restored.schema_revision()
    if schema == info.schema == SCHEMA_HEAD:
        report.checks.append(_ok("schema", f"schema {schema}"))
    else:
        report.checks.append(
            _bad(
                "schema",
                f"restored schema {schema}, backup says {info.schema}, "
                f"this labkeep expects {SCHEMA_HEAD}",
            )
        )
    report.checks.append(_chain_check(keep, restored, info))
    manifests, counted = _manifest_check(keep, restored, report)
    report.checks.append(manifests)
    report.checks.append(_sample_check(keep, restored, sample, counted))


def _chain_check(keep: Keep, restored: Any, info: BackupInfo) -> dict[str, Any]:
    from labkeep.catalog import Event, KeepState
    from labkeep.ops.audit import GENESIS, HEAD_KEY, event_hash

    prev, last, checked = GENESIS, 0, 0
    with restored.read() as session:
        while True:
            rows = session.execute(
                select(Event.id, Event.at, Event.actor, Event.action, Event.target,
                       Event.details, Event.prev_hash, Event.hash)
                .where(Event.id > last).order_by(Event.id).limit(5000)
            ).all()  # fmt: skip
            if not rows:
                break
            for row in rows:
                expected = event_hash(prev, row.at, row.actor, row.action, row.target, row.details)
                if row.prev_hash != prev or row.hash != expected:
                    return _bad("events", f"event {row.id} does not match the chain")
                prev, last, checked = row.hash, row.id, checked + 1
        head = session.execute(
            select(KeepState.value).where(KeepState.key == HEAD_KEY)
        ).scalar_one_or_none()
    if not checked:
        return _bad("events", "the restored event log is empty")
    if head != prev:
        return _bad("events", "the restored chain head does not match its newest event")
    if info.head_event_id is not None and (last, prev) != (info.head_event_id, info.head_hash):
        return _bad("events", f"the backup recorded event {info.head_event_id} as its head")
    with keep.catalog.read() as session:
        live = session.execute(select(Event.hash).where(Event.id == last)).scalar_one_or_none()
    if live != prev:
        return _bad(
            "events",
            f"event {last} of the backup is not the live catalog's event {last}: one of the "
            "two histories was rewritten ('labkeep events --check' checks the live one)",
        )
    return _ok("events", f"{checked} events, chain intact, agrees with the live catalog")


def _manifest_check(
    keep: Keep, restored: Any, report: DrillReport
) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """Entries per dataset (restored catalog) against the tree's manifests. Returns the
    check and the datasets that matched (for the sample)."""
    from labkeep.catalog import Dataset, Entry, Project, Version

    matched: list[tuple[str, str, int]] = []
    bad: list[str] = []
    live_heads = _live_heads(keep)
    query = (
        select(Project.name, Dataset.name, Dataset.id, Dataset.head_version,
               Version.manifest_sha256)
        .join(Dataset, Dataset.project_id == Project.id)
        .outerjoin(Version, (Version.dataset_id == Dataset.id)
                   & (Version.number == Dataset.head_version))
        .where(Dataset.head_version > 0, Dataset.tree_state == "present")
        .order_by(Project.name, Dataset.name)
    )  # fmt: skip
    checked = 0
    with restored.read() as session:
        for project, name, dataset_id, head, manifest_sha in session.execute(query).all():
            address = f"{project}/{name}"
            live = live_heads.get(address)
            if live is not None and live != head:
                report.changed_since.append(
                    {"dataset": address, "backup_version": head, "live_version": live}
                )
                continue
            entries = session.execute(
                select(func.count(Entry.id)).where(
                    Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
                )
            ).scalar_one()
            lines = _manifest_lines(keep.tree.manifest_path(project, name))
            checked += 1
            if lines is None:
                bad.append(f"{address}: no MANIFEST.sha256 in the tree")
            elif lines != entries:
                bad.append(f"{address}: {entries} entries, MANIFEST.sha256 has {lines} lines")
            else:
                matched.append((project, name, dataset_id))
            del manifest_sha
    if bad:
        return _bad("manifests", "; ".join(bad[:20])), matched
    return _ok("manifests", f"{checked} datasets: entries equal their manifests"), matched


def _live_heads(keep: Keep) -> dict[str, int]:
    from labkeep.catalog import Dataset, Project

    with keep.catalog.read() as session:
        return {
            f"{p}/{d}": h
            for p, d, h in session.execute(
                select(Project.name, Dataset.name, Dataset.head_version).join(
                    Dataset, Dataset.project_id == Project.id
                )
            )
        }


def _manifest_lines(path: Path) -> int | None:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return None


def _sample_check(
    keep: Keep, restored: Any, sample: int, datasets: list[tuple[str, str, int]]
) -> dict[str, Any]:
    from labkeep.catalog import Entry
    from labkeep.integrity.hashing import hash_file

    if sample <= 0 or not datasets:
        return _ok("sample", "no files sampled")
    rng = random.Random()  # noqa: S311 (a sample, not a secret)
    picked: list[tuple[str, str, str, bytes]] = []
    with restored.read() as session:
        for _ in range(sample):
            project, name, dataset_id = rng.choice(datasets)
            count = session.execute(
                select(func.count(Entry.id)).where(
                    Entry.dataset_id == dataset_id, Entry.valid_to.is_(None)
                )
            ).scalar_one()
            if not count:
                continue
            row = session.execute(
                select(Entry.path, Entry.sha256)
                .where(Entry.dataset_id == dataset_id, Entry.valid_to.is_(None))
                .order_by(Entry.id)
                .offset(rng.randrange(count))
                .limit(1)
            ).one()
            picked.append((project, name, row.path, row.sha256))
    bad: list[str] = []
    for project, name, path, sha in picked:
        try:
            actual = hash_file(str(keep.tree.file_path(project, name, path))).sha256
        except (OSError, LabkeepError) as exc:
            bad.append(f"{project}/{name}/{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if actual != sha:
            bad.append(f"{project}/{name}/{path}: SHA-256 differs from the backup's")
    if bad:
        return _bad("sample", "; ".join(bad[:20]))
    return _ok("sample", f"{len(picked)} files re-hashed, all match")
