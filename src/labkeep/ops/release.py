"""Releases: an immutable, sealed dataset made from one version of another.

``release P/D@N --name NAME`` makes ``P/NAME``, kind ``release``: the version's files,
each checked against its SHA-256, sealed (read-only, ``chattr +i``), with its own
manifest, landing page and DataCite metadata (the source's, as it was, editable apart
from the content). A release keeps its files under ``raw/``, the part of every dataset
that labkeep keeps write-once, at their paths in the source version: the source's
``masks/a.png`` is the release's ``raw/masks/a.png`` (packages and deposits name it
``masks/a.png`` again).

How it is made, on the existing write paths so that every guarantee of theirs holds:

1. the release dataset row is created first, pointing to its source and version;
2. the version's files are exported (:mod:`labkeep.ops.export`: from the tree, or from a
   store for an old version, each checked against its SHA-256) into a staging folder on
   the keep's disk, next to the runs' staging;
3. that folder is ingested into the release with hard links (nothing copied twice, every
   file hashed again on the way in) and sealed; the staging folder is emptied by the
   ingest (``delete_source``) as each file is safe in the tree.

Content is shared, not copied, where the stores allow: replicas are kept by SHA-256, so a
release's content that a store already holds for its source is already there (the
copy-on-seal jobs find nothing to copy). The tree holds its own copy, because a working
tree's files change in place and a sealed session's files are immutable inodes that can
take no new hard link. A release cut short (killed, full disk) is finished by running the
same command again: the export skips files already staged, the ingest resumes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.catalog import Dataset, Version
from labkeep.errors import AlreadyExists, UsageError
from labkeep.names import (
    MAX_MESSAGE,
    address_text,
    check_relpath,
    check_slug,
    check_text,
    parse_address,
)
from labkeep.ops._access import find_dataset
from labkeep.ops._parallel import ordered_map
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.jobs import JobContext, JobProblems, handler
from labkeep.ops.projects import ensure_dataset
from labkeep.results import Result

if TYPE_CHECKING:
    from collections.abc import Callable

    from labkeep.keep import Keep
    from labkeep.ops.projects import DatasetInfo

RELEASE_PREFIX = "raw/"
#: releases of up to this many files are made within a web or API request; larger ones
#: are queued as a "release" job for a worker (a request is bounded in time)
INLINE_FILES = 2000


@dataclass
class ReleaseResult:
    """What ``release`` made (or found already made)."""

    release: str
    source: str
    version: int
    status: str  # ok | notneeded
    files: int = 0
    bytes: int = 0
    manifest_sha256: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "release",
            "status": self.status,
            "release": self.release,
            "source": self.source,
            "version": self.version,
            "files": self.files,
            "bytes": self.bytes,
            "manifest_sha256": self.manifest_sha256,
            "problems": self.problems,
            "message": self.message,
        }


def source_path(path: str) -> str:
    """A release file's path in its source version (``raw/masks/a.png`` -> ``masks/a.png``)."""
    return path[len(RELEASE_PREFIX) :] if path.startswith(RELEASE_PREFIX) else path


def release(
    keep: Keep,
    address: str,
    *,
    name: str,
    message: str = "",
    title: str = "",
    on_result: Callable[[Result], None] | None = None,
) -> ReleaseResult:
    """Make the immutable release ``PROJECT/NAME`` from ``PROJECT/DATASET[@N]`` (the head if
    no version is given). Running it again finishes a release that was cut short."""
    check_text(message, "the message", MAX_MESSAGE)
    check_slug(name, "release name")
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path:
        raise UsageError(
            f"a release is made of a whole dataset version, not {address!r}",
            hint="use PROJECT/DATASET@N",
        )
    project = addr.project
    target = f"{project}/{name}"
    with keep.catalog.write() as session:
        _, source = find_dataset(keep, session, project, addr.dataset, "dataset.download")
        number = addr.version if addr.version is not None else source.head_version
        committed = session.execute(
            select(Version.n_files, Version.n_bytes).where(
                Version.dataset_id == source.id,
                Version.number == number,
                Version.state == "committed",
            )
        ).first()
        if committed is None or number < 1:
            raise UsageError(
                f"{addr.dataset_address} has no version {number}"
                if number >= 1
                else f"{addr.dataset_address} has no saved version yet",
                hint=f"see its versions with 'labkeep log {addr.dataset_address}'",
            )
        if source.kind == "release":
            raise UsageError(
                f"{addr.dataset_address} is already a release",
                hint="make a release from the dataset it was released from",
            )
        source_text = address_text(project, addr.dataset, version=number)
        _, rel, created = ensure_dataset(
            keep, session, project, name, "release", title, action="dataset.seal"
        )
        if not created and (rel.release_of_id, rel.release_version) != (source.id, number):
            raise AlreadyExists(
                f"{target} already exists"
                + (" and is not a release of " + source_text if rel.kind == "release" else ""),
                hint="choose another release name",
            )
        if created:
            rel.release_of_id, rel.release_version = source.id, number
            rel.title = title or source.title
            rel.description = source.description
            rel.meta = source.meta
            append_event(session, keep.actor, "release-start", target, {"source": source_text})
        rel_id, sealed = rel.id, rel.sealed
    if sealed:
        info = keep.get_dataset(target)
        return ReleaseResult(
            target,
            source_text,
            number,
            "notneeded",
            info.files,
            info.bytes,
            message=f"{target} was already released from {source_text}",
        )
    staging = keep.config.runs_path / f"release-{rel_id}"
    problems = _stage(keep, source_text, staging, on_result)
    if problems:
        return ReleaseResult(
            target,
            source_text,
            number,
            "error",
            problems=problems,
            message=f"{len(problems)} files of {source_text} could not be read: nothing "
            "was released; repair them ('labkeep verify --repair') and run it again",
        )
    same_disk = _same_disk(staging, keep.tree.dataset_dir(project, name).parent)
    report = keep.ingest(
        staging,
        target,
        kind="release",
        link=same_disk,
        seal=True,
        delete_source=True,
        message=message or f"release of {source_text}",
        keep_results=False,
    )
    failed = [r.to_dict() for r in report.results if r.status in ("error", "impossible")]
    if failed or report.failed:
        return ReleaseResult(
            target,
            source_text,
            number,
            "error",
            problems=failed,
            message=f"{target} is not finished: run the same release command again",
        )
    _remove_staging(staging)
    with keep.catalog.write() as session:
        rel = session.get_one(Dataset, rel_id)
        head = session.execute(
            select(Version).where(Version.dataset_id == rel_id, Version.number == rel.head_version)
        ).scalar_one()
        event = append_event(
            session,
            keep.actor,
            "release",
            target,
            {
                "source": source_text,
                "version": head.number,
                "files": head.n_files,
                "manifest_sha256": head.manifest_sha256,
            },
        )
        files, size, manifest = head.n_files, head.n_bytes, head.manifest_sha256
    checkpoint(keep, event)
    return ReleaseResult(target, source_text, number, "ok", files, size, manifest)


def releases_of(keep: Keep, address: str, *, limit: int = 100) -> list[DatasetInfo]:
    """The releases made from ``PROJECT/DATASET`` that the principal may see, newest
    first."""
    from labkeep.ops._access import dataset_readable, project_resource
    from labkeep.ops.projects import _dataset_info

    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    found: list[DatasetInfo] = []
    with keep.catalog.read() as session:
        project, source = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        grants = project_resource(session, project).grants
        rows = session.execute(
            select(Dataset)
            .where(Dataset.release_of_id == source.id)
            .order_by(Dataset.id.desc())
            .limit(limit * 4)
        ).scalars()
        for row in rows:
            if dataset_readable(session, keep.principal, project, row, grants):
                found.append(_dataset_info(session, project, row))
            if len(found) == limit:
                break
    return found


def _stage(
    keep: Keep, source: str, staging: Path, on_result: Callable[[Result], None] | None
) -> list[dict[str, Any]]:
    """Copy the version's files into *staging*, each checked, several at a time; files
    already staged with the right content are kept (a second run resumes)."""
    from labkeep.ops.export import already_there
    from labkeep.ops.files import download_stream, entry_info, export_entry

    staging.mkdir(parents=True, exist_ok=True)
    problems: list[dict[str, Any]] = []
    stream, sealed = download_stream(keep, source)
    dataset = parse_address(source, need_dataset=True).dataset_address
    version = stream.version or 0

    def one(entry: dict[str, Any]) -> Result:
        path = str(entry["path"])
        result = Result("release", "ok", path=path, dataset=source, size=entry["size"])
        result.sha256 = entry["sha256"]
        try:
            target = staging / check_relpath(path)
            if already_there(target, entry):
                result.status = "notneeded"
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                export_entry(keep, entry_info(keep, dataset, version, sealed, entry), target)
        except Exception as exc:  # noqa: BLE001 (each file's problem is reported)
            result.status = "error"
            result.message = getattr(exc, "message", None) or str(exc)
        return result

    jobs = keep.config.ingest_jobs or min(8, (os.cpu_count() or 1) * 2)
    for result in ordered_map(one, stream.entries, jobs, name="labkeep-release"):
        if result.status == "error":
            problems.append(result.to_dict())
        if on_result is not None:
            on_result(result)
    return problems


def _same_disk(a: Path, b: Path) -> bool:
    b.mkdir(parents=True, exist_ok=True)
    return os.stat(a).st_dev == os.stat(b).st_dev


def _remove_staging(staging: Path) -> None:
    """The staging folder holds only empty folders once the ingest deleted its sources."""
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)


def version_files(keep: Keep, address: str) -> int:
    """The number of files of ``PROJECT/DATASET[@N]`` (the head without N)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, source = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        number = addr.version if addr.version is not None else source.head_version
        files = session.execute(
            select(Version.n_files).where(Version.dataset_id == source.id, Version.number == number)
        ).scalar_one_or_none()
    return int(files or 0)


def _authorize_release(keep: Keep, args: dict[str, Any]) -> str:
    """A release job may be queued by who may download the source and add datasets to
    its project; its target is the release to be."""
    from labkeep.access.policy import check
    from labkeep.ops._access import project_resource

    addr = parse_address(str(args.get("source", "")), need_dataset=True)
    assert addr.dataset is not None
    name = check_slug(str(args.get("name", "")), "release name")
    with keep.catalog.read() as session:
        project, _ = find_dataset(keep, session, addr.project, addr.dataset, "dataset.download")
        check(keep.principal, "dataset.create", project_resource(session, project))
    return f"{addr.project}/{name}"


@handler(
    "release",
    authorize=_authorize_release,
    describe=lambda a: f"{a.get('source')} -> {a.get('name')}",
)
def release_job(ctx: JobContext) -> dict[str, Any]:
    a = ctx.args
    result = release(
        ctx.keep,
        str(a["source"]),
        name=str(a["name"]),
        message=str(a.get("message", "")),
        title=str(a.get("title", "")),
    )
    if result.status == "error":
        raise JobProblems(result.message, result.to_dict())
    return result.to_dict()
