"""Seal and unseal: make a session's ``raw/`` write-once, or (loudly) undo that."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from labkeep.catalog import Dataset, Entry, Version
from labkeep.clock import utcnow
from labkeep.errors import UsageError
from labkeep.integrity.immutable import set_immutable
from labkeep.names import MAX_MESSAGE, check_text, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.audit import append_event
from labkeep.ops.manifests import store_manifest

if TYPE_CHECKING:
    from pathlib import Path

    from labkeep.keep import Keep

_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass
class SealResult:
    dataset: str
    action: str
    status: str
    version: int | None = None
    manifest_sha256: str | None = None
    immutable: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "status": self.status,
            "dataset": self.dataset,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "immutable": self.immutable,
            "warnings": self.warnings,
        }


def _walk(raw: Path) -> tuple[list[str], list[str]]:
    """Files and folders below *raw* (folders deepest first, *raw* itself last)."""
    files: list[str] = []
    dirs: list[str] = []
    for folder, subdirs, names in os.walk(raw, topdown=False):
        files.extend(os.path.join(folder, n) for n in names)
        dirs.extend(os.path.join(folder, d) for d in subdirs)
    dirs.append(str(raw))
    return files, dirs


def _protect(raw: Path, on: bool) -> tuple[bool, list[str]]:
    """Set (or clear) read-only bits and the immutable flag on everything below *raw*.

    Returns whether the immutable flag could be used and the warnings for the user.
    Sealing marks files before folders (an immutable folder accepts no new names);
    unsealing clears folders before files.
    """
    if not raw.is_dir():
        raw.mkdir(parents=True)
    files, dirs = _walk(raw)
    warnings: list[str] = []
    immutable = True
    order = files + dirs if on else list(reversed(dirs)) + files
    for path in order:
        if not on:
            with contextlib.suppress(OSError):
                set_immutable(path, False)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        new_mode = mode & ~_WRITE_BITS if on else mode | stat.S_IWUSR
        if new_mode != mode:
            os.chmod(path, new_mode)
        if on and immutable:
            try:
                set_immutable(path, True)
            except OSError as exc:
                immutable = False
                warnings.append(
                    f"could not set the immutable flag (chattr +i): {exc.strerror}; raw/ is "
                    "read-only by permissions only (run labkeep as root or with "
                    "CAP_LINUX_IMMUTABLE on ext4/xfs/btrfs for write-once at inode level)"
                )
    return immutable, warnings


def seal(keep: Keep, address: str, *, message: str = "") -> SealResult:
    """Seal a dataset: raw/ read-only and immutable, a version and an event."""
    check_text(message, "the message", MAX_MESSAGE)
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    target = addr.dataset_address
    with keep.tree.lock(addr.project, addr.dataset, what="seal"):
        with keep.catalog.read() as session:
            _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.seal")
            if dataset.sealed:
                return SealResult(target, "seal", "notneeded", dataset.head_version)
            if session.execute(
                select(Version.id).where(Version.dataset_id == dataset.id, Version.state == "open")
            ).first():
                raise UsageError(
                    f"{target} has an unfinished ingest",
                    hint="run the same 'labkeep ingest' again to finish it, then seal",
                )
        raw = keep.tree.dataset_dir(addr.project, addr.dataset) / "raw"
        immutable, warnings = _protect(raw, True)
        with keep.catalog.write() as session:
            _, dataset = find_dataset(
                keep, session, addr.project, addr.dataset, "dataset.seal", for_update=True
            )
            manifest_sha = store_manifest(keep, session, addr.project, addr.dataset, dataset.id)
            number = _new_version(
                session, dataset, "seal", keep.actor, message or "sealed", manifest_sha
            )
            dataset.sealed = True
            dataset.sealed_at = utcnow()
            append_event(
                session,
                keep.actor,
                "seal",
                target,
                {"version": number, "manifest_sha256": manifest_sha, "immutable": immutable},
            )
    return SealResult(target, "seal", "ok", number, manifest_sha, immutable, warnings)


def unseal(keep: Keep, address: str, *, force: bool = False, reason: str = "") -> SealResult:
    """Make raw/ writable again. Needs ``force``; recorded as a version and an event."""
    check_text(reason, "the reason", MAX_MESSAGE)
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    target = addr.dataset_address
    if not force:
        raise UsageError(
            f"unsealing {target} makes its raw data writable again",
            hint="if this is truly needed, repeat with --force (it is recorded in the audit log)",
        )
    with keep.tree.lock(addr.project, addr.dataset, what="unseal"):
        with keep.catalog.read() as session:
            _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.unseal")
            if not dataset.sealed:
                return SealResult(target, "unseal", "notneeded", dataset.head_version)
        raw = keep.tree.dataset_dir(addr.project, addr.dataset) / "raw"
        _protect(raw, False)
        with keep.catalog.write() as session:
            _, dataset = find_dataset(
                keep, session, addr.project, addr.dataset, "dataset.unseal", for_update=True
            )
            manifest_sha = store_manifest(keep, session, addr.project, addr.dataset, dataset.id)
            number = _new_version(
                session, dataset, "unseal", keep.actor, reason or "unsealed (forced)", manifest_sha
            )
            dataset.sealed = False
            dataset.sealed_at = None
            append_event(
                session,
                keep.actor,
                "unseal",
                target,
                {"version": number, "reason": reason, "manifest_sha256": manifest_sha},
            )
    return SealResult(target, "unseal", "ok", number, manifest_sha)


def _new_version(
    session: Any, dataset: Dataset, kind: str, author: str, message: str, manifest_sha: str
) -> int:
    files, size = session.execute(
        select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
            Entry.dataset_id == dataset.id, Entry.valid_to.is_(None)
        )
    ).one()
    highest = session.execute(
        select(func.max(Version.number)).where(Version.dataset_id == dataset.id)
    ).scalar_one()
    number = int(highest or 0) + 1
    now = utcnow()
    session.add(
        Version(
            dataset_id=dataset.id,
            number=number,
            state="committed",
            kind=kind,
            author=author,
            message=message,
            created_at=now,
            committed_at=now,
            n_files=int(files),
            n_bytes=int(size),
            manifest_sha256=manifest_sha,
        )
    )
    dataset.head_version = number
    return number
